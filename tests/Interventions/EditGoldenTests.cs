using System.Text.Json;
using System.Text.RegularExpressions;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Interventions;

/// <summary>
/// Every edited forward pass HF recorded in <c>interventions.safetensors</c> (steering at attn_out / mlp_out / resid_post,
/// one-position steering, neuron scaling at resid_post and mlp.hook_post, the token-embedding edit, the prompt prefix),
/// reproduced at 1e-4 through <c>polyengine run --edits FILE.json</c> and through the library (<see cref="EditSpec"/>).
/// </summary>
public class EditGoldenTests
{
    /// <summary>The edit file that reproduces golden tensor <paramref name="name"/>, or null for the unedited ones.</summary>
    static object[]? EditsFor(string name, float[] v)
    {
        if (Regex.Match(name, @"^steer\.(hook_attn_out|hook_mlp_out|hook_resid_post)\.L(\d+)\.s(-?[\d.]+)\.logits$") is { Success: true } s)
            return [new { hook = $"blocks.{s.Groups[2].Value}.{s.Groups[1].Value}", add = v, scale = float.Parse(s.Groups[3].Value) }];
        if (name == "steer_mask.resid_post.L0.logits")
            return [new { hook = "blocks.0.hook_resid_post", add = v, scale = 3f, rows = new[] { 0 }, positions = new[] { 15 } }];
        if (Regex.Match(name, @"^neuron\.(resid_post|mlp_post)\.L(\d+)\.n(\d+)\.f([\d.]+)\.logits$") is { Success: true } n)
            return [new
            {
                hook = n.Groups[1].Value == "resid_post" ? $"blocks.{n.Groups[2].Value}.hook_resid_post" : $"blocks.{n.Groups[2].Value}.mlp.hook_post",
                coordinate = int.Parse(n.Groups[3].Value), factor = float.Parse(n.Groups[4].Value),
            }];
        if (name == "embed_add.p8.logits")
            return [new { hook = "hook_embed", add = v, scale = 2f, rows = new[] { 0 }, positions = new[] { 8 } }];
        if (name is "clean.logits" or "prefix.logits") return [];
        return null;
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void EveryEditedGoldenPassIsReproducedByTheCliAndTheLibrary(string model)
    {
        string folder = Fixtures.Golden(model);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        using var edited = SafeTensorsFile.Open(Path.Combine(folder, "interventions.safetensors"));
        int[][] Rows(SafeTensorsFile f, string name)
        {
            var ids = f.ReadInt64(name);
            var shape = f.Info(name).Shape;
            return Enumerable.Range(0, (int)shape[0]).Select(r => ids.Skip(r * (int)shape[1]).Take((int)shape[1]).Select(i => (int)i).ToArray()).ToArray();
        }
        var input = Rows(golden, "input_ids");
        var prefix = Rows(edited, "prefix.ids");
        var v = edited.ReadFloat32("steer.v");
        using var m = Model.Load(folder);
        using var dir = new Fixtures.TempDir();
        int compared = 0;
        foreach (var t in edited.Tensors.Where(t => t.Name.EndsWith(".logits")))
        {
            var edits = EditsFor(t.Name, v);
            Assert.True(edits is not null, $"{t.Name}: a golden tensor this test does not know; add how to reproduce it");
            var rows = t.Name.StartsWith("prefix.") ? prefix : input;
            var expected = edited.ReadFloat32(t.Name);

            // The CLI: ids and edits as files, logits from --out.
            File.WriteAllText(dir.File("ids.json"), JsonSerializer.Serialize(rows));
            File.WriteAllText(dir.File("edits.json"), JsonSerializer.Serialize(edits));
            string outFile = dir.File("out.safetensors");
            var (code, stdout, stderr) = Run("run", "--model", folder, "--ids-file", dir.File("ids.json"), "--edits", dir.File("edits.json"),
                "--out", outFile, "--top", "0");
            Assert.True(code == 0, $"{t.Name}: {stderr}");
            if (edits.Length > 0) Assert.Contains("edits: 1 from", stdout);
            using (var written = SafeTensorsFile.Open(outFile))
                Compare.Close(expected, written.ReadFloat32("logits"), 1e-4, $"{model} {t.Name} (cli)");

            // The library: the same file's edits resolved against the model and the batch.
            var specs = EditSpec.Load(dir.File("edits.json"));
            var result = m.Run(rows, new RunOptions { Edits = specs.Select(e => e.Resolve(m.Spec, rows.Length, rows[0].Length)).ToArray() });
            Compare.Close(expected, result.Logits!.Data, 1e-4, $"{model} {t.Name} (library)");
            compared++;
        }
        Assert.True(compared >= 16, $"only {compared} edited passes compared");
    }
}

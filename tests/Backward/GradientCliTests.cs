using PolyEngine.Backward;
using PolyEngine.Formats;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Backward;

/// <summary><c>polyengine gradient</c> writes what the library computes, for each kind of objective; bad requests are one line.</summary>
public class GradientCliTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");
    static readonly int[][] Rows = [[5, 17, 300, 2], [9, 12, 3, 4, 5, 6, 7]];

    static (float[] Gradient, float Objective, long[] Ids) Read(string path)
    {
        using var f = SafeTensorsFile.Open(path);
        return (f.ReadFloat32("gradient"), f.ReadFloat32("objective")[0], f.ReadInt64("input_ids"));
    }

    [Fact]
    public void EachObjectiveWritesTheLibrarysGradientAndTheObjectivesValue()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("rows.json"), "[[5, 17, 300, 2], [9, 12, 3, 4, 5, 6, 7]]");
        using var m = Model.Load(Gpt2);
        int d = m.Spec.DModel;
        var hook = HookName.Parse("blocks.1.hook_resid_pre");
        var act = m.Run([Rows[1]], new RunOptions { Hooks = [hook], Logits = LogitsMode.None }).Cache[hook].Data.AsSpan(6 * d, d).ToArray();

        // sum, at the last position of row 1
        var (code, stdout, stderr) = Run("gradient", "--model", Gpt2, "--ids-file", dir.File("rows.json"), "--row", "1", "--hook", hook.ToString(),
            "--position", "-1", "--out", dir.File("sum.safetensors"));
        Assert.True(code == 0, stderr);
        Assert.Contains("position 6", stdout);
        var sum = Read(dir.File("sum.safetensors"));
        Assert.Equal(Gradient.ToEmbeddings(m, Rows[1], hook, 6), sum.Gradient);
        Assert.Equal((float)act.Sum(x => (double)x), sum.Objective, 4);
        Assert.Equal(Rows[1].Select(i => (long)i), sum.Ids);
        Assert.Equal(0, Run("gradient", "--model", Gpt2, "--ids-file", dir.File("rows.json"), "--hook", hook.ToString(), "--position", "1",
            "--bos", "on", "--out", dir.File("bos.safetensors")).Code);
        Assert.Equal([m.BosTokenId, .. Rows[0].Select(i => (long)i)], Read(dir.File("bos.safetensors")).Ids);   // --bos on puts BOS first

        // a vector from a file
        var v = Enumerable.Range(0, d).Select(i => (float)Math.Sin(i)).ToArray();
        new SafeTensorsWriter().Add("v", v, d).Save(dir.File("v.safetensors"));
        Assert.Equal(0, Run("gradient", "--model", Gpt2, "--ids-file", dir.File("rows.json"), "--row", "1", "--hook", hook.ToString(),
            "--position", "6", "--objective", dir.File("v.safetensors"), "--out", dir.File("v-grad.safetensors")).Code);
        var along = Read(dir.File("v-grad.safetensors"));
        Assert.Equal(Gradient.ToEmbeddings(m, Rows[1], hook, 6, v), along.Gradient);
        Assert.Equal((float)act.Select((x, i) => (double)x * v[i]).Sum(), along.Objective, 4);

        // an SAE feature's pre-activation: its direction is the encoder column (standard SAE, no input norm)
        string sae = Path.Combine(Gpt2, "sae", "standard");
        Assert.Equal(0, Run("gradient", "--model", Gpt2, "--ids-file", dir.File("rows.json"), "--row", "1", "--hook", hook.ToString(),
            "--position", "6", "--objective", $"sae:{sae}:17", "--out", dir.File("sae-grad.safetensors")).Code);
        using var weights = SafeTensorsFile.Open(Path.Combine(sae, "sae_weights.safetensors"));
        var wEnc = weights.ReadFloat32("W_enc");   // [d_in, d_sae]
        var column = Enumerable.Range(0, d).Select(i => wEnc[i * 256 + 17]).ToArray();
        var expected = Gradient.ToEmbeddings(m, Rows[1], hook, 6, column);
        var got = Read(dir.File("sae-grad.safetensors"));
        Compare.Close(expected, got.Gradient, 1e-6 * expected.Max(Math.Abs), "SAE-feature gradient", 1e-5);
        using var s = SparseAutoencoder.Load(sae, m.Backend);
        Assert.Equal(s.Encode(act, 1).HiddenPre[17], got.Objective, 4);
    }

    public static TheoryData<string[], string> BadRequests() => new()
    {
        { ["--prompt", "a b", "--hook", "blocks.1.hook_resid_pre", "--position", "40"], "--position 40: the row has" },
        { ["--prompt", "a b", "--hook", "blocks.1.attn.hook_pattern", "--position", "0"], "not implemented" },
        { ["--prompt", "a b", "--hook", "ln_final.hook_normalized", "--position", "0"], "on the LM head side" },
        { ["--prompt", "a b", "--hook", "blocks.9.hook_resid_pre", "--position", "0"], "has no such hook" },
        { ["--hook", "blocks.1.hook_resid_pre", "--position", "0"], "give one of --prompt or --ids-file" },
        { ["--prompt", "a b", "--hook", "blocks.1.hook_resid_pre", "--position", "0", "--objective", "sae:nowhere"], "give sae:DIR:FEATURE" },
        { ["--prompt", "a b", "--hook", "blocks.0.hook_resid_pre", "--position", "0", "--objective", "sae:{sae}:3"], "the SAE reads blocks.1.hook_resid_pre" },
        { ["--prompt", "a b", "--hook", "blocks.1.hook_resid_pre", "--position", "0", "--objective", "sae:{sae}:999"], "feature 999 is outside" },
        { ["--prompt", "a b", "--hook", "blocks.1.hook_resid_pre", "--position", "0", "--objective", "missing.npy"], "file not found" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void ABadRequestIsOneLineAndWritesNothing(string[] args, string expected)
    {
        using var dir = new Fixtures.TempDir();
        string sae = Path.Combine(Gpt2, "sae", "standard");
        var (code, _, stderr) = Run(["gradient", "--model", Gpt2, .. args.Select(a => a.Replace("{sae}", sae)), "--out", dir.File("g.safetensors")]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("g.safetensors")));
    }
    [Fact]
    public void BenchGradientWritesItsWorkloadAndTheLibrarysGradients()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("bench", "gradient", "--model", Gpt2, "--rows", "3", "--positions", "2", "--seq", "10", "--hook", "blocks.1.hook_attn_out",
            "--write-workload", dir.File("w.safetensors"), "--json");
        Assert.True(code == 0, stderr);
        using var json = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.Equal(6, json.RootElement.GetProperty("vectors").GetInt32());
        Assert.True(json.RootElement.GetProperty("vectors_per_second").GetDouble() > 0);
        using var f = SafeTensorsFile.Open(dir.File("w.safetensors"));
        var ids = f.ReadInt64("input_ids").Select(i => (int)i).ToArray();
        var (rows, positions, grads) = (f.ReadInt64("seed_row"), f.ReadInt64("seed_position"), f.ReadFloat32("gradients"));
        Assert.Equal([5, 7, 5, 7, 5, 7], positions);   // two positions in each row's second half
        using var m = Model.Load(Gpt2);
        int d = m.Spec.DModel;
        for (int k = 0; k < rows.Length; k++)
        {
            var row = ids.Skip((int)rows[k] * 10).Take(10).ToArray();
            var g = Gradient.ToEmbeddings(m, row, HookName.Parse("blocks.1.hook_attn_out"), (int)positions[k]).AsSpan((int)positions[k] * d, d).ToArray();
            Compare.Close(g, grads.AsSpan(k * d, d), 1e-6 * g.Max(Math.Abs), $"vector {k}", 1e-5);
        }
        var bad = Run("bench", "gradient", "--model", Gpt2, "--positions", "9", "--seq", "10");
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("--positions 9: at most 5", bad.Err);
    }
}

using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// What a run takes and gives as a TransformerLens / SAELens user expects: BOS (prepended to text by default, to ids on
/// request), rows of different lengths (right-padded, each row exactly as if run alone), and SAEs spliced into the pass
/// (the hook replaced by the SAE's reconstruction downstream) or only read (the model's own logits).
/// </summary>
public class RunInputsTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    [Fact]
    public void BosIsPrependedToTextByDefaultAndToIdsOnRequest()
    {
        using var m = Model.Load(Gpt2);
        Assert.Equal(999, m.BosTokenId);   // the fixture's config: bos_token_id 999
        var plain = m.Encode("a,b", prependBos: false);
        Assert.Equal([64, 11, 65], plain);
        Assert.Equal([m.BosTokenId, .. plain], m.Encode("a,b"));
        var viaOption = m.Run([plain], new RunOptions { PrependBos = true, Hooks = [HookName.Parse("blocks.0.hook_resid_post")] });
        var explicitBos = m.Run([m.Encode("a,b")], new RunOptions { Hooks = [HookName.Parse("blocks.0.hook_resid_post")] });
        Assert.Equal(explicitBos.Logits!.Data, viaOption.Logits!.Data);
        Assert.Equal(explicitBos.InputIds, viaOption.InputIds);
        Assert.Equal(plain.Length + 1, viaOption.Seq);
        // The flat overload does the same.
        var flat = m.Run(plain, 1, plain.Length, new RunOptions { PrependBos = true });
        Assert.Equal(explicitBos.Logits.Data, flat.Logits!.Data);
    }

    [Fact]
    public void AModelWithoutBosTokenSaysHowToGoOn()
    {
        using var dir = new Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(Gpt2)) File.Copy(f, Path.Combine(dir.Path, Path.GetFileName(f)));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        config.Remove("bos_token_id");
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        using var m = Model.Load(dir.Path);
        var e = Assert.Throws<PolyEngineException>(() => m.Run([[1, 2]], new RunOptions { PrependBos = true }));
        Assert.Contains("has no bos_token_id", e.Message);
        Assert.Contains("--bos off", e.Message);
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void RaggedRowsRunExactlyAsEachRowAlone(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        int[][] rows = [[5, 17, 300, 2, 41, 8], [9, 12], [700, 3, 3, 61]];
        var hooks = new[] { HookName.Parse("blocks.1.hook_resid_post"), HookName.Parse("blocks.0.attn.hook_pattern"), HookName.Parse("blocks.1.mlp.hook_post") };
        var batch = m.Run(rows, new RunOptions { Hooks = hooks, TopLogits = 4 });
        Assert.Equal([6, 2, 4], batch.Lengths);
        Assert.Equal(6, batch.Seq);
        int vocab = m.Spec.DVocab;
        for (int r = 0; r < rows.Length; r++)
        {
            int n = rows[r].Length;
            var alone = m.Run([rows[r]], new RunOptions { Hooks = hooks, TopLogits = 4, Logits = LogitsMode.All });
            Compare.Close(alone.Logits!.Data, batch.Logits!.Data.AsSpan(r * 6 * vocab, n * vocab), 1e-5, $"row {r} logits");
            Assert.All(batch.Logits.Data.AsSpan((r * 6 + n) * vocab, (6 - n) * vocab).ToArray(), v => Assert.Equal(0f, v));   // padding reads zero
            for (int j = 0; j < 4; j++)
            {
                Assert.Equal(alone.Top!.At(0, j).Id, batch.Top!.At(r, j).Id);   // next token after each row's own last token
                Assert.Equal(alone.Top.At(0, j).Logit, batch.Top.At(r, j).Logit, 4);
            }
            var d = m.Spec.DModel;
            Compare.Close(alone.Cache[hooks[0]].Data, batch.Cache[hooks[0]].Data.AsSpan(r * 6 * d, n * d), 1e-5, $"row {r} resid");
            Assert.All(batch.Cache[hooks[0]].Data.AsSpan((r * 6 + n) * d, (6 - n) * d).ToArray(), v => Assert.Equal(0f, v));
            int heads = m.Spec.NHeads;
            for (int h = 0; h < heads; h++)
                for (int q = 0; q < 6; q++)
                {
                    var got = batch.Cache[hooks[1]].Data.AsSpan(((r * heads + h) * 6 + q) * 6, 6).ToArray();
                    if (q >= n) Assert.All(got, v => Assert.Equal(0f, v));
                    else
                    {
                        Compare.Close(alone.Cache[hooks[1]].Data.AsSpan(((h * n) + q) * n, n), got.AsSpan(0, n), 1e-6, $"row {r} pattern");
                        Assert.All(got[n..], v => Assert.Equal(0f, v));   // causal: nothing on the padding
                    }
                }
        }
        // The last-position logits take each row's last real token too.
        var last = m.Run(rows, new RunOptions { Logits = LogitsMode.LastPosition });
        for (int r = 0; r < rows.Length; r++)
            Compare.Close(m.Run([rows[r]]).Logits!.Data.AsSpan((rows[r].Length - 1) * vocab, vocab), last.Logits!.Data.AsSpan(r * vocab, vocab), 1e-5, $"row {r} last");
    }

    [Theory]
    [InlineData("standard")]
    [InlineData("topk")]
    [InlineData("jumprelu-v6cfg")]
    public void ASplicedSaeReplacesItsHookDownstream(string variant)
    {
        using var m = Model.Load(Gpt2);
        using var sae = SparseAutoencoder.Load(Path.Combine(Gpt2, "sae", variant), m.Backend);
        var hook = sae.Config.Hook;   // blocks.1.hook_resid_pre
        int[][] rows = [[11, 250, 37, 4, 999, 73, 8], [500, 2, 61]];
        var clean = m.Run(rows, new RunOptions { Hooks = [hook] });
        var splice = new SaeSplice(sae);
        var spliced = m.Run(rows, new RunOptions { Hooks = [hook], Replacements = [splice.Replacement] });
        // The hook as recorded is the SAE's input, as the model computed it; only what follows changes.
        Assert.Equal(clean.Cache[hook].Data, spliced.Cache[hook].Data);
        Assert.False(clean.Logits!.Data.AsSpan().SequenceEqual(spliced.Logits!.Data), "splicing must change the logits");
        // The same as patching the hook with the SAE's reconstruction, computed after a clean pass.
        var readOnly = SaeHooks.Apply([sae], clean).ToDictionary(t => t.Name, t => t.Tensor);
        var reconstruction = clean.Cache[hook].Data.Zip(readOnly[$"{hook}.hook_sae_error"].Data, (x, e) => x - e).ToArray();
        var patched = m.Run(rows, new RunOptions { Edits = [HookEdit.Patch(hook, reconstruction)] });
        Compare.Close(patched.Logits!.Data, spliced.Logits.Data, 1e-5, $"{variant}: splice vs patch");
        Compare.Close(readOnly[$"{hook}.hook_sae_output"].Data, reconstruction, 1e-5, $"{variant}: output = x − error (uncentred SAE)");
        foreach (var (name, t) in splice.Tensors(spliced))
            Compare.Close(readOnly[name].Data, t.Data, 1e-5, $"{variant}: {name} spliced vs read");
    }

    /// <summary>SAEs whose input is processed (centred per token, as a TransformerLens-processed release; layer-normed):
    /// the splice equals patching the hook with the reconstruction built here from Encode and Decode directly — the
    /// decoder output in the input's own scale, plus the per-token mean that centring removed.</summary>
    [Theory]
    [InlineData(true, "none")]
    [InlineData(false, "layer_norm")]
    [InlineData(true, "layer_norm")]
    public void ASplicedSaeWithProcessedInputPatchesItsReconstruction(bool centre, string normalisation)
    {
        using var dir = new Fixtures.TempDir();
        foreach (var f in Directory.GetFiles(Path.Combine(Gpt2, "sae", "standard"))) File.Copy(f, dir.File(Path.GetFileName(f)));
        var cfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("cfg.json")))!.AsObject();
        cfg["model_from_pretrained_kwargs"] = new System.Text.Json.Nodes.JsonObject { ["center_writing_weights"] = centre };
        cfg["normalize_activations"] = normalisation;
        File.WriteAllText(dir.File("cfg.json"), cfg.ToJsonString());
        using var m = Model.Load(Gpt2);
        using var sae = SparseAutoencoder.Load(dir.Path, m.Backend);
        Assert.Equal(centre, sae.CentresInput);
        var hook = sae.Config.Hook;
        int[][] rows = [[11, 250, 37, 4, 999, 73, 8]];
        var x = m.Run(rows, new RunOptions { Hooks = [hook] }).Cache[hook].Data;   // [7, 64]
        int n = 7, d = 64;
        var input = (float[])x.Clone();
        var mean = new float[n];
        for (int r = 0; r < n; r++)
        {
            if (centre) mean[r] = input.AsSpan(r * d, d).ToArray().Average();
            for (int i = 0; i < d; i++) input[r * d + i] -= mean[r];
        }
        var acts = sae.Encode(input, n).FeatureActs;
        var output = sae.Decode(acts, n, input);
        var reconstruction = output.Select((v, k) => v + mean[k / d]).ToArray();
        var splice = new SaeSplice(sae);
        var spliced = m.Run(rows, new RunOptions { Replacements = [splice.Replacement] });
        var patched = m.Run(rows, new RunOptions { Edits = [HookEdit.Patch(hook, reconstruction)] });
        Compare.Close(patched.Logits!.Data, spliced.Logits!.Data, 1e-4, $"centre {centre}, {normalisation}");
        var tensors = splice.Tensors(spliced).ToDictionary(t => t.Name, t => t.Tensor);
        Compare.Close(output, tensors[$"{hook}.hook_sae_output"].Data, 1e-5, "output");
        // Taken once: a second read, or a read for another pass, is an error, never stale tensors.
        Assert.Throws<InvalidOperationException>(() => splice.Tensors(spliced));
        var e = Assert.Throws<PolyEngineException>(() => m.Run(rows, new RunOptions { Replacements = [splice.Replacement], StopAtLayer = 0, Logits = LogitsMode.None }));
        Assert.Contains("lies after stop layer 0", e.Message);
    }
}

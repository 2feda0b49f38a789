using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Sae;

public class SaeTests
{
    public static TheoryData<string, string> Fixtures_() => new()
    {
        { "gpt2-tiny", "standard" }, { "gpt2-tiny", "jumprelu" }, { "gpt2-tiny", "topk" },
        { "gpt2-tiny", "standard-v6cfg" }, { "gpt2-tiny", "jumprelu-v6cfg" }, { "gpt2-tiny", "topk-v6cfg" },
        { "neox-tiny", "standard" },
    };

    /// <summary>hidden_pre, feature_acts (the same active set) and sae_out of the SAELens goldens, from the model's own hook.</summary>
    [Theory]
    [MemberData(nameof(Fixtures_))]
    public void EncodeAndDecodeMatchTheGoldens(string model, string variant)
    {
        string folder = Path.Combine(Fixtures.Golden(model), "sae", variant);
        using var m = Model.Load(Fixtures.Golden(model));
        using var sae = SparseAutoencoder.Load(folder, m.Backend);
        sae.CheckAgainst(m.Spec);
        Assert.Equal(variant.EndsWith("v6cfg") ? "saelens-v6" : "saelens", sae.Config.Format);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        using var mg = SafeTensorsFile.Open(Path.Combine(Fixtures.Golden(model), "golden.safetensors"));
        var ids = mg.ReadInt64("input_ids").Select(i => (int)i).ToArray();
        var shape = mg.Info("input_ids").Shape;
        var run = m.Run(ids, (int)shape[0], (int)shape[1], new RunOptions { Hooks = [sae.Config.Hook] });
        var x = run.Cache[sae.Config.Hook].Data;
        Compare.Close(golden.ReadFloat32("sae_in"), x, 1e-4, $"{variant} sae_in (from the model)");
        int rows = (int)(shape[0] * shape[1]);
        var enc = sae.Encode(golden.ReadFloat32("sae_in"), rows);
        Compare.Close(golden.ReadFloat32("hidden_pre"), enc.HiddenPre, 1e-4, $"{variant} hidden_pre");
        var expectedActs = golden.ReadFloat32("feature_acts");
        Compare.Close(expectedActs, enc.FeatureActs, 1e-4, $"{variant} feature_acts");
        for (int i = 0; i < expectedActs.Length; i++) Assert.True(expectedActs[i] > 0 == enc.FeatureActs[i] > 0, $"{variant}: active set differs at {i}");
        Compare.Close(golden.ReadFloat32("sae_out"), sae.Decode(enc.FeatureActs, rows), 1e-4, $"{variant} sae_out");
        if (sae.Config.Architecture == SaeArchitecture.TopK)
            for (int r = 0; r < rows; r++) Assert.Equal(8, enc.FeatureActs.AsSpan(r * 256, 256).ToArray().Count(v => v > 0));
        AssertFusedEncodeMatchesGolden(folder, model, m.Backend, variant);
    }

    /// <summary>The fused path scans use: the SAE encodes the hook's backend buffer during the pass (a device tap) and returns
    /// only the firing features; they equal the golden feature_acts (same active set, values at 1e-4).</summary>
    internal static void AssertFusedEncodeMatchesGolden(string folder, string model, IBackend backend, string what)
    {
        using var m = Model.Load(Fixtures.Golden(model), backend);
        using var sae = SparseAutoencoder.Load(folder, backend);
        using var mg = SafeTensorsFile.Open(Path.Combine(Fixtures.Golden(model), "golden.safetensors"));
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        var ids = mg.ReadInt64("input_ids").Select(i => (int)i).ToArray();
        var shape = mg.Info("input_ids").Shape;
        int rows = (int)(shape[0] * shape[1]);
        SparseRows? sparse = null;
        m.Run(ids, (int)shape[0], (int)shape[1], new RunOptions
        {
            DeviceTaps = [new(sae.Config.Hook, x => sparse = sae.EncodeSparse(x, rows))], Logits = LogitsMode.None,
        });
        Assert.NotNull(sparse);
        var expected = golden.ReadFloat32("feature_acts");
        var actual = sparse.ToDense();
        Compare.Close(expected, actual, 1e-4, $"{what} fused feature_acts");
        for (int i = 0; i < expected.Length; i++) Assert.True(expected[i] > 0 == actual[i] > 0, $"{what} fused: active set differs at {i}");
    }

    /// <summary>OpenAI v5 TopK SAEs as SAELens ships them: normalize_activations layer_norm (unbiased std, eps added to the
    /// std), undone on decode; checked against the formula written out by hand, and against constant_norm_rescale.</summary>
    [Theory]
    [InlineData("layer_norm")]
    [InlineData("constant_norm_rescale")]
    public void InputNormalisationFollowsSaeLens(string normalization)
    {
        using var dir = new Fixtures.TempDir();
        string src = Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk-v6cfg");
        File.Copy(Path.Combine(src, "sae_weights.safetensors"), dir.File("sae_weights.safetensors"));
        File.WriteAllText(dir.File("cfg.json"), File.ReadAllText(Path.Combine(src, "cfg.json")).Replace("\"normalize_activations\": \"none\"", $"\"normalize_activations\": \"{normalization}\""));
        var backend = new CpuBackend(1);
        using var sae = SparseAutoencoder.Load(dir.Path, backend);
        using var plain = SparseAutoencoder.Load(src, backend);
        Assert.Equal(normalization == "layer_norm" ? RowNormalization.LayerNorm : RowNormalization.ConstantNorm, sae.Config.Normalization);
        using var golden = SafeTensorsFile.Open(Path.Combine(src, "golden.safetensors"));
        var x = golden.ReadFloat32("sae_in").Take(3 * 64).ToArray();
        // By hand: x' per row, then the un-normalised SAE on x'.
        var xn = new float[x.Length];
        var (mus, scales) = (new double[3], new double[3]);
        for (int r = 0; r < 3; r++)
        {
            var row = x.Skip(r * 64).Take(64).Select(v => (double)v).ToArray();
            if (normalization == "layer_norm")
            {
                double mu = row.Average(), std = Math.Sqrt(row.Sum(v => (v - mu) * (v - mu)) / 63);
                (mus[r], scales[r]) = (mu, std + 1e-5);
                for (int i = 0; i < 64; i++) xn[r * 64 + i] = (float)((row[i] - mu) / (std + 1e-5));
            }
            else
            {
                double c = Math.Sqrt(64) / Math.Sqrt(row.Sum(v => v * v));
                (mus[r], scales[r]) = (0, 1 / c);
                for (int i = 0; i < 64; i++) xn[r * 64 + i] = (float)(row[i] * c);
            }
        }
        var expected = plain.Encode(xn, 3);
        var actual = sae.Encode(x, 3);
        Compare.Close(expected.HiddenPre, actual.HiddenPre, 1e-4, $"{normalization} hidden_pre");
        var recon = plain.Decode(expected.FeatureActs, 3);
        var expectedOut = recon.Select((v, i) => (float)(v * scales[i / 64] + mus[i / 64])).ToArray();
        Compare.Close(expectedOut, sae.Decode(actual.FeatureActs, 3, x), 1e-4, $"{normalization} sae_out");
    }

    /// <summary>TopK with rescale_acts_by_decoder_norm (folded into W_enc and b_enc at load): pre_j·‖W_dec[j]‖ before the
    /// top-k, f_j/‖W_dec[j]‖ before decoding — checked against the plain SAE and the formula written out by hand.</summary>
    [Fact]
    public void RescaleActsByDecoderNormFollowsSaeLens()
    {
        using var dir = new Fixtures.TempDir();
        string src = Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk-v6cfg");
        using var w = SafeTensorsFile.Open(Path.Combine(src, "sae_weights.safetensors"));
        var wDec = w.ReadFloat32("W_dec");   // [256, 64], unit rows in the fixture: scale row j by 0.5 + (j % 7)/4
        for (int j = 0; j < 256; j++) for (int i = 0; i < 64; i++) wDec[j * 64 + i] *= 0.5f + j % 7 / 4f;
        var norms = Enumerable.Range(0, 256).Select(j => Math.Sqrt(wDec.Skip(j * 64).Take(64).Sum(v => (double)v * v))).ToArray();
        string cfg = File.ReadAllText(Path.Combine(src, "cfg.json"));
        foreach (var (name, rescale) in new[] { ("plain", false), ("rescaled", true) })
        {
            Directory.CreateDirectory(dir.File(name));
            new SafeTensorsWriter().Add("W_enc", w.ReadFloat32("W_enc"), 64, 256).Add("b_enc", w.ReadFloat32("b_enc"), 256)
                .Add("W_dec", wDec, 256, 64).Add("b_dec", w.ReadFloat32("b_dec"), 64).Save(Path.Combine(dir.File(name), "sae_weights.safetensors"));
            File.WriteAllText(Path.Combine(dir.File(name), "cfg.json"),
                cfg.Replace("\"rescale_acts_by_decoder_norm\": false", $"\"rescale_acts_by_decoder_norm\": {(rescale ? "true" : "false")}"));
        }
        var backend = new CpuBackend(1);
        using var sae = SparseAutoencoder.Load(dir.File("rescaled"), backend);
        using var plain = SparseAutoencoder.Load(dir.File("plain"), backend);
        Assert.True(sae.Config.RescaleActsByDecoderNorm);
        using var golden = SafeTensorsFile.Open(Path.Combine(src, "golden.safetensors"));
        const int rows = 4;
        var x = golden.ReadFloat32("sae_in").Take(rows * 64).ToArray();
        var expectedPre = plain.Encode(x, rows).HiddenPre.Select((v, i) => (float)(v * norms[i % 256])).ToArray();
        var actual = sae.Encode(x, rows);
        Compare.Close(expectedPre, actual.HiddenPre, 1e-4, "rescaled hidden_pre", 1e-5);
        var expectedActs = SaeReference.Sparsify(expectedPre, rows, 256, SparseActivation.TopK, 8, null).ToDense();
        Assert.NotEqual(plain.Encode(x, rows).FeatureActs.Select(v => v > 0), expectedActs.Select(v => v > 0));   // the rescale changes which features win
        for (int i = 0; i < expectedActs.Length; i++) Assert.True(expectedActs[i] > 0 == actual.FeatureActs[i] > 0, $"rescaled: active set differs at {i}");
        Compare.Close(expectedActs, actual.FeatureActs, 1e-4, "rescaled feature_acts", 1e-5);
        var unscaled = actual.FeatureActs.Select((v, i) => (float)(v / norms[i % 256])).ToArray();
        Compare.Close(plain.Decode(unscaled, rows), sae.Decode(actual.FeatureActs, rows), 1e-5, "rescaled sae_out");
    }

    [Fact]
    public void FlatAndV6ConfigsDescribeTheSameSae()
    {
        var flat = SaeConfig.Load(Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk"));
        var v6 = SaeConfig.Load(Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk-v6cfg"));
        Assert.Equal((SaeArchitecture.TopK, 8, 64, 256, "blocks.1.hook_resid_pre", false, 16), (flat.Architecture, flat.K, flat.DIn, flat.DSae, flat.Hook.ToString(), flat.PrependBos, flat.ContextSize));
        Assert.Equal(flat with { Folder = "", Format = "" }, v6 with { Folder = "", Format = "" });
    }

    [Fact]
    public void SparsifyFolderEncodesLikeTheEquivalentSaeLensSae()
    {
        using var dir = new Fixtures.TempDir();
        string saeLens = Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk");
        using var w = SafeTensorsFile.Open(Path.Combine(saeLens, "sae_weights.safetensors"));
        var wEnc = w.ReadFloat32("W_enc");                       // [64, 256]
        var encT = new float[wEnc.Length];                        // sparsify encoder.weight [256, 64]
        for (int i = 0; i < 64; i++) for (int j = 0; j < 256; j++) encT[j * 64 + i] = wEnc[i * 256 + j];
        string folder = Path.Combine(dir.Path, "layers.0");
        Directory.CreateDirectory(folder);
        new SafeTensorsWriter().Add("encoder.weight", encT, 256, 64).Add("encoder.bias", w.ReadFloat32("b_enc"), 256)
            .Add("W_dec", w.ReadFloat32("W_dec"), 256, 64).Add("b_dec", w.ReadFloat32("b_dec"), 64).Save(Path.Combine(folder, "sae.safetensors"));
        File.WriteAllText(Path.Combine(folder, "cfg.json"), """{"activation": "topk", "expansion_factor": 4, "normalize_decoder": true, "num_latents": 0, "k": 8, "multi_topk": false, "skip_connection": false, "d_in": 64}""");
        var backend = new CpuBackend(1);
        using var sparsify = SparseAutoencoder.Load(folder, backend);
        using var lens = SparseAutoencoder.Load(saeLens, backend);
        Assert.Equal(("sparsify", 256, "blocks.0.hook_resid_post"), (sparsify.Config.Format, sparsify.Config.DSae, sparsify.Config.Hook.ToString()));
        using var golden = SafeTensorsFile.Open(Path.Combine(saeLens, "golden.safetensors"));
        var x = golden.ReadFloat32("sae_in");
        Compare.Close(lens.Encode(x, 32).FeatureActs, sparsify.Encode(x, 32).FeatureActs, 1e-5, "sparsify vs SAELens feature acts");
    }

    public static TheoryData<string, string, string> BadSaes() => new()
    {
        { "missing cfg", "", "no cfg.json" },
        { "unknown architecture", """{"architecture":"gated","d_in":64,"d_sae":256,"hook_name":"blocks.1.hook_resid_pre"}""", "architecture 'gated' is not supported" },
        { "missing d_in", """{"architecture":"standard","d_sae":256,"hook_name":"blocks.1.hook_resid_pre"}""", "missing field 'd_in'" },
        { "wrong type", """{"architecture":"standard","d_in":"64","d_sae":256,"hook_name":"blocks.1.hook_resid_pre"}""", "field 'd_in' must be an integer" },
        { "bad hook", """{"architecture":"standard","d_in":64,"d_sae":256,"hook_name":"blocks.1.resid"}""", "not a TransformerLens hook" },
        { "topk without k", """{"architecture":"topk","d_in":64,"d_sae":256,"hook_name":"blocks.1.hook_resid_pre"}""", "missing field 'k'" },
        { "expected average", """{"architecture":"standard","d_in":64,"d_sae":256,"hook_name":"blocks.1.hook_resid_pre","normalize_activations":"expected_average_only_in"}""", "norm_scaling_factor" },
        { "d_in mismatch", """{"architecture":"standard","d_in":32,"d_sae":256,"hook_name":"blocks.1.hook_resid_pre"}""", "has shape [64, 256], cfg.json implies [32, 256]" },
    };

    [Theory]
    [MemberData(nameof(BadSaes))]
    public void BadSaeFoldersAreRejectedClearly(string what, string cfg, string expected)
    {
        using var dir = new Fixtures.TempDir();
        File.Copy(Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "standard", "sae_weights.safetensors"), dir.File("sae_weights.safetensors"));
        if (cfg.Length > 0) File.WriteAllText(dir.File("cfg.json"), cfg);
        var e = Assert.Throws<PolyEngineException>(() => SparseAutoencoder.Load(dir.Path, new CpuBackend(1)).Dispose());
        Assert.Contains(expected, e.Message);
        _ = what;
    }

    [Fact]
    public void NaNWeightsAndModelMismatchAreNamed()
    {
        using var dir = new Fixtures.TempDir();
        string src = Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "standard");
        File.Copy(Path.Combine(src, "cfg.json"), dir.File("cfg.json"));
        using (var w = SafeTensorsFile.Open(Path.Combine(src, "sae_weights.safetensors")))
        {
            var bEnc = w.ReadFloat32("b_enc");
            bEnc[17] = float.NaN;
            new SafeTensorsWriter().Add("W_enc", w.ReadFloat32("W_enc"), 64, 256).Add("b_enc", bEnc, 256)
                .Add("W_dec", w.ReadFloat32("W_dec"), 256, 64).Add("b_dec", w.ReadFloat32("b_dec"), 64).Save(dir.File("sae_weights.safetensors"));
        }
        var e = Assert.Throws<PolyEngineException>(() => SparseAutoencoder.Load(dir.Path, new CpuBackend(1)).Dispose());
        Assert.Contains("tensor 'b_enc' holds a non-finite value (NaN) at flat index 17", e.Message);

        using var sae = SparseAutoencoder.Load(src, new CpuBackend(1));
        var bigger = ModelSpec.FromConfigFile(Path.Combine(Fixtures.Golden("gpt2-tiny"), "config.json")) with { DModel = 128, NHeads = 4 };
        Assert.Contains("d_in 64 does not equal the width 128", Assert.Throws<PolyEngineException>(() => sae.CheckAgainst(bigger)).Message);
        var shallow = bigger with { DModel = 64, NLayers = 1 };
        Assert.Contains("does not have", Assert.Throws<PolyEngineException>(() => sae.CheckAgainst(shallow)).Message);
    }
}

public class TopKTests
{
    [Fact]
    public void TopKMatchesAFullSortIncludingTies()
    {
        var rng = new System.Random(3);
        foreach (int n in new[] { 1, 2, 7, 50, 1000 })
            foreach (int k in new[] { 1, 3, 8, 50 })
            {
                var v = Enumerable.Range(0, n).Select(_ => (float)Math.Round(rng.NextDouble() * 10) - 5).ToArray();   // many ties
                var expected = Enumerable.Range(0, n).OrderByDescending(i => v[i]).ThenBy(i => i).Take(k).Order().ToArray();
                Assert.Equal(expected, SparseEncode.TopKIndices(v, k));
            }
    }
}

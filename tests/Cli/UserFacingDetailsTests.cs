using PolyEngine.Formats;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Toys;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Cli;

/// <summary>Smaller things a new user trips over: inspect's order and SAE folders, bench's JSON, tensor indexing,
/// W_E / W_U from a loaded model, and progress that stays honest after a resume.</summary>
public class UserFacingDetailsTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    [Fact]
    public void NamesSortAsPeopleReadThem()
    {
        string[] names = ["h.10.mlp", "h.2.mlp", "h.1.mlp", "h.02.x", "h.2", "wte", "h.100"];
        Assert.Equal(["h.1.mlp", "h.2", "h.2.mlp", "h.02.x", "h.10.mlp", "h.100", "wte"], names.Order(NaturalOrder.Comparer));
    }

    [Fact]
    public void InspectListsLayersInOrderAndShowsSaeFolders()
    {
        using var dir = new Fixtures.TempDir();
        string model = dir.File("m");
        ToyModels.Write(new ToyConfig { Family = ModelFamily.Gpt2, DModel = 8, NLayers = 12, NHeads = 2, DMlp = 16, DVocab = 11, NCtx = 8 }, 1, model);
        var (code, stdout, stderr) = Run("inspect", model);
        Assert.True(code == 0, stderr);
        int h2 = stdout.IndexOf("h.2.attn.c_attn.bias", StringComparison.Ordinal), h10 = stdout.IndexOf("h.10.attn.c_attn.bias", StringComparison.Ordinal);
        Assert.True(h2 > 0 && h10 > h2, "h.2 before h.10");
        (code, stdout, stderr) = Run("inspect", Path.Combine(Gpt2, "sae", "topk-v6cfg"));
        Assert.True(code == 0, stderr);
        Assert.Contains("SAE (saelens-v6)", stdout);
        Assert.Contains("architecture TopK (k 8)  d_in 64  d_sae 256  hook blocks.1.hook_resid_pre", stdout);
        Assert.Contains("prepend_bos false", stdout);
        Assert.Contains("W_dec", stdout);
    }

    [Fact]
    public void BenchJsonWithProfileIsOneJsonObject()
    {
        var (code, stdout, stderr) = Run("bench", "forward", "--model", Gpt2, "--batch", "1", "--seq", "4", "--iters", "1", "--json", "--profile", "--device", "cpu");
        Assert.True(code == 0, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);   // throws if text is mixed in
        var ops = doc.RootElement.GetProperty("profile").GetProperty("ops");
        Assert.True(ops.GetArrayLength() > 0);
        Assert.Contains(ops.EnumerateArray(), o => o.GetProperty("op").GetString()!.StartsWith("Linear") && o.GetProperty("calls").GetInt64() > 0);
    }

    [Fact]
    public void TensorsIndexAndModelsGiveTheirEmbeddings()
    {
        var t = new Tensor(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 2, 3, 4);
        Assert.Equal(23f, t[1, 2, 3]);
        Assert.Equal(5f, t[0, 1, 1]);
        Assert.Equal(23f, t[-1, -1, -1]);
        t[1, 0, 0] = -7f;
        Assert.Equal(-7f, t.Data[12]);
        Assert.Contains("takes 3 indices", Assert.Throws<ArgumentException>(() => t[1, 2]).Message);
        Assert.Throws<IndexOutOfRangeException>(() => t[2, 0, 0]);

        using var m = Model.Load(Gpt2);
        using var st = SafeTensorsFile.Open(Path.Combine(Gpt2, "model.safetensors"));
        var wte = st.ReadFloat32(st.Contains("transformer.wte.weight") ? "transformer.wte.weight" : "wte.weight");
        Assert.Equal(new long[] { 1000, 64 }, m.W_E.Shape);
        Assert.Equal(wte, m.W_E.Data);
        Assert.Equal(new long[] { 64, 1000 }, m.W_U.Shape);
        Assert.Equal(wte[7 * 64 + 5], m.W_U[5, 7]);   // tied: W_U = W_Eᵀ
        // logits = (normalised · w + b)·W_U at ln_final (TransformerLens's hook_normalized is before the weight and bias)
        var h = HookName.Parse("ln_final.hook_normalized");
        var r = m.Run([[1, 2, 3]], new RunOptions { Hooks = [h] });
        var x = r.Cache[h];
        var (w, b) = (st.ReadFloat32("transformer.ln_f.weight"), st.ReadFloat32("transformer.ln_f.bias"));
        for (int v = 0; v < 1000; v += 97)
        {
            double dot = 0;
            for (int i = 0; i < 64; i++) dot += (x[0, 2, i] * w[i] + b[i]) * m.W_U[i, v];
            Assert.Equal(r.Logits![0, 2, v], dot, 4);
        }
    }

    [Fact]
    public void AResumedScansSpeedCountsOnlyItsOwnWork()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("c.u32"), Enumerable.Range(0, 64).SelectMany(i => BitConverter.GetBytes((uint)(i * 13 % 1000))).ToArray());
        using var m = Model.Load(Gpt2, new CpuBackend(1));
        using var sae = SparseAutoencoder.Load(Path.Combine(Gpt2, "sae", "topk"), m.Backend);
        var options = new FeatureScanOptions { TopK = 1, Batch = 1, ContextSize = 8 };
        var checkpoint = new ScanCheckpoint { Path = dir.File(ScanCheckpoint.FileName), RunKey = "k", Every = TimeSpan.Zero };
        int calls = 0;
        Assert.Throws<OperationCanceledException>(() => FeatureScan.Run(m, [sae], Corpus.Open(dir.File("c.u32"), null), options,
            _ => { if (++calls == 5) throw new OperationCanceledException(); }, checkpoint));
        var reports = new List<ScanProgress>();
        FeatureScan.Run(m, [sae], Corpus.Open(dir.File("c.u32"), null), options, reports.Add, checkpoint);
        Assert.Equal(3, reports.Count);                          // 8 windows of 8 tokens; 5 were saved by the killed run
        Assert.Equal(40, reports[0].Tokens - reports[0].TokensThisRun);   // the resumed part is not this run's work
        Assert.Equal(8, reports[0].TokensThisRun);
        Assert.Equal(5 / 8.0, reports[0].FractionAtStart, 6);
        Assert.Equal(1.0, reports[^1].Fraction, 6);
        Assert.Equal((64L, 24L), (reports[^1].Tokens, reports[^1].TokensThisRun));
        Assert.Equal(0, reports[^1].SecondsLeft);
    }
}

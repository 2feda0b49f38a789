using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// The forward pass is written for the config space, not for two files: generated models of shapes HF never gave us goldens
/// for, checked against <see cref="ReferenceForward"/>, which is itself checked against the HF goldens first.
/// </summary>
public class ConfigSpaceTests
{
    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void ReferenceForwardMatchesHuggingFaceGolden(string name)
    {
        string folder = Fixtures.Golden(name);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        var ids = golden.ReadInt64("input_ids").Select(i => (int)i).ToArray();
        var shape = golden.Info("input_ids").Shape;
        var r = ReferenceForward.Run(folder, ids, (int)shape[0], (int)shape[1]);
        Compare.Close(golden.ReadFloat32("logits"), r.Logits.Select(x => (float)x).ToArray(), 1e-4, $"reference {name} logits");
        Compare.Close(golden.ReadFloat32("blocks.1.hook_attn_out"), r.Hooks["blocks.1.hook_attn_out"].Select(x => (float)x).ToArray(), 1e-4, $"reference {name} attn_out");
    }

    public static TheoryData<string, ToyConfig, int> Configs => new()
    {
        { "gpt2 odd widths, 3 layers, 6 heads of 16", new ToyConfig { Family = ModelFamily.Gpt2, DModel = 96, NLayers = 3, NHeads = 6, DMlp = 200, DVocab = 301, NCtx = 40, InitStd = 0.1f }, 3 },
        { "gpt2 d_model 48, 3 heads of 16, d_mlp 37", new ToyConfig { Family = ModelFamily.Gpt2, DModel = 48, NLayers = 1, NHeads = 3, DMlp = 37, DVocab = 97, NCtx = 20, InitStd = 0.15f }, 2 },
        { "neox sequential residual", new ToyConfig { Family = ModelFamily.GptNeoX, DModel = 96, NLayers = 3, NHeads = 6, DMlp = 130, DVocab = 211, NCtx = 40, ParallelResidual = false, InitStd = 0.1f }, 3 },
        { "neox rotary_pct 0.5 base 500", new ToyConfig { Family = ModelFamily.GptNeoX, DModel = 64, NLayers = 2, NHeads = 4, DMlp = 100, DVocab = 150, NCtx = 40, RotaryPct = 0.5f, RotaryBase = 500f, InitStd = 0.1f }, 3 },
        { "neox full rotary, F16 weights", new ToyConfig { Family = ModelFamily.GptNeoX, DModel = 40, NLayers = 2, NHeads = 5, DMlp = 64, DVocab = 99, NCtx = 30, RotaryPct = 1f, DType = SafeTensorDType.F16, InitStd = 0.1f }, 1 },
        { "gpt2 BF16 weights", new ToyConfig { Family = ModelFamily.Gpt2, DModel = 32, NLayers = 2, NHeads = 2, DMlp = 128, DVocab = 120, NCtx = 30, DType = SafeTensorDType.BF16, InitStd = 0.1f }, 2 },
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void GeneratedModelsMatchTheReferenceForward(string what, ToyConfig config, int batch)
    {
        using var dir = new Fixtures.TempDir();
        ToyModels.Write(config, 7, dir.Path);
        int seq = Math.Min(config.NCtx, 13);
        var rng = new Rng(99);
        var ids = Enumerable.Range(0, batch * seq).Select(_ => (int)(rng.NextU64() % (ulong)config.DVocab)).ToArray();
        ids[^1] = config.DVocab - 1;
        var expected = ReferenceForward.Run(dir.Path, ids, batch, seq);
        foreach (int threads in new[] { 1, 3 })
        {
            using var model = Model.Load(dir.Path, new PolyEngine.Kernels.Cpu.CpuBackend(threads));
            var hooks = HookName.Select(model.Spec, "blocks.*.hook_attn_out,blocks.*.hook_mlp_out,blocks.*.hook_resid_post");
            var r = model.Run(ids, batch, seq, new RunOptions { Hooks = hooks });
            Compare.Close(expected.Logits.Select(x => (float)x).ToArray(), r.Logits!.Data, 1e-4, $"{what} logits ({threads} threads)");
            foreach (var h in hooks)
                Compare.Close(expected.Hooks[h.ToString()].Select(x => (float)x).ToArray(), r.Cache[h].Data, 1e-4, $"{what} {h}");
        }
    }

    [Fact]
    public void StopAtLayerGivesTheSameActivationsAndNoLogits()
    {
        using var model = Model.Load(Fixtures.Golden("gpt2-tiny"));
        var ids = Enumerable.Range(0, 10).ToArray();
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var full = model.Run(ids, 2, 5, new RunOptions { Hooks = [hook] });
        var stopped = model.Run(ids, 2, 5, new RunOptions { Hooks = [hook], StopAtLayer = 0 });
        Assert.Null(stopped.Logits);
        Assert.Equal(full.Cache[hook].Data, stopped.Cache[hook].Data);
        var ex = Assert.Throws<PolyEngineException>(() => model.Run(ids, 2, 5, new RunOptions { Hooks = [HookName.Parse("blocks.1.hook_resid_pre")], StopAtLayer = 0 }));
        Assert.Contains("after stop layer 0", ex.Message);
    }

    [Fact]
    public void LastPositionLogitsEqualTheFullLogitsAtTheLastPosition()
    {
        using var model = Model.Load(Fixtures.Golden("neox-tiny"));
        var ids = Enumerable.Range(3, 12).ToArray();
        var full = model.Run(ids, 3, 4).Logits!;
        var last = model.Run(ids, 3, 4, new RunOptions { Logits = LogitsMode.LastPosition }).Logits!;
        Assert.Equal(new long[] { 3, 1, model.Spec.DVocab }, last.Shape);
        int v = model.Spec.DVocab;
        for (int b = 0; b < 3; b++)
            Compare.Close(full.Data.AsSpan((b * 4 + 3) * v, v), last.Data.AsSpan(b * v, v), 1e-5, $"row {b}");
    }

    [Fact]
    public void ShardedWeightsLoadLikeOneFile()
    {
        using var dir = new Fixtures.TempDir();
        var config = new ToyConfig { Family = ModelFamily.Gpt2, DModel = 32, NLayers = 2, NHeads = 2, DMlp = 64, DVocab = 50, NCtx = 16 };
        ToyModels.Write(config, 3, dir.Path);
        var ids = Enumerable.Range(0, 8).ToArray();
        float[] single;
        using (var m = Model.Load(dir.Path)) single = m.Run(ids, 1, 8).Logits!.Data;
        // Split model.safetensors into two shards with an index, as save_pretrained does for big models.
        using (var f = SafeTensorsFile.Open(dir.File("model.safetensors")))
        {
            var names = f.Tensors.Select(t => t.Name).OrderBy(n => n, StringComparer.Ordinal).ToList();
            var map = new System.Text.Json.Nodes.JsonObject();
            for (int s = 0; s < 2; s++)
            {
                var w = new SafeTensorsWriter();
                string shard = $"model-0000{s + 1}-of-00002.safetensors";
                foreach (var n in names.Where((_, i) => i % 2 == s))
                {
                    w.Add(n, f.ReadFloat32(n), f.Info(n).Shape);
                    map[n] = shard;
                }
                w.Save(dir.File(shard));
            }
            File.WriteAllText(dir.File("model.safetensors.index.json"), new System.Text.Json.Nodes.JsonObject { ["weight_map"] = map }.ToJsonString());
        }
        File.Delete(dir.File("model.safetensors"));
        using var sharded = Model.Load(dir.Path);
        Assert.Equal(single, sharded.Run(ids, 1, 8).Logits!.Data);
    }

    [Fact]
    public void ToyModelsAreDeterministicPerSeed()
    {
        using var a = new Fixtures.TempDir();
        using var b = new Fixtures.TempDir();
        var config = ToyModels.Preset(ModelFamily.GptNeoX, "tiny") with { DVocab = 500 };
        ToyModels.Write(config, 42, a.Path);
        ToyModels.Write(config, 42, b.Path);
        Assert.Equal(File.ReadAllBytes(a.File("model.safetensors")), File.ReadAllBytes(b.File("model.safetensors")));
        Assert.Equal(File.ReadAllText(a.File("config.json")), File.ReadAllText(b.File("config.json")));
        ToyModels.Write(config, 43, b.Path);
        Assert.NotEqual(File.ReadAllBytes(a.File("model.safetensors")), File.ReadAllBytes(b.File("model.safetensors")));
    }
}

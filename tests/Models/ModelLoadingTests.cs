using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>Config parsing, weight mapping and input validation: every bad input is a one-line error that names what and where.</summary>
public class ModelLoadingTests
{
    static string Gpt2Config => File.ReadAllText(Path.Combine(Fixtures.Golden("gpt2-tiny"), "config.json"));
    static string NeoXConfig => File.ReadAllText(Path.Combine(Fixtures.Golden("neox-tiny"), "config.json"));

    [Fact]
    public void ParsesBothFamiliesIntoTheSpec()
    {
        var g = ModelSpec.FromConfigJson(Gpt2Config);
        Assert.Equal((ModelFamily.Gpt2, 64, 2, 4, 16, 256, 1000, 64), (g.Family, g.DModel, g.NLayers, g.NHeads, g.DHead, g.DMlp, g.DVocab, g.NCtx));
        Assert.Equal((Activation.GeluTanh, true, false, 0), (g.Act, g.TiedHead, g.ParallelResidual, g.RotaryDim));
        var n = ModelSpec.FromConfigJson(NeoXConfig);
        Assert.Equal((ModelFamily.GptNeoX, 64, 256, Activation.GeluErf, 4, 10000f, true, false), (n.Family, n.DModel, n.DMlp, n.Act, n.RotaryDim, n.RotaryBase, n.ParallelResidual, n.TiedHead));
    }

    [Fact]
    public void RealPresetShapesHaveThePublishedParameterCounts()
    {
        Assert.Equal(124_439_808, Spec(ToyModels.Preset(ModelFamily.Gpt2, "gpt2-small")).ParameterCount);
        Assert.Equal(70_426_624, Spec(ToyModels.Preset(ModelFamily.GptNeoX, "pythia-70m")).ParameterCount);
    }

    static ModelSpec Spec(ToyConfig c) => ModelSpec.FromConfigJson(ToyModels.ConfigJson(c));

    [Fact]
    public void ReadsTheTransformersV5RopeSpellingAndDefaults()
    {
        var o = JsonNode.Parse(NeoXConfig)!.AsObject();
        o.Remove("rotary_pct"); o.Remove("rotary_emb_base");
        o["rope_parameters"] = new JsonObject { ["rope_theta"] = 500.0, ["partial_rotary_factor"] = 0.5 };
        var n = ModelSpec.FromConfigJson(o.ToJsonString());
        Assert.Equal((8, 500f), (n.RotaryDim, n.RotaryBase));
        var g = JsonNode.Parse(Gpt2Config)!.AsObject();
        g.Remove("n_inner");
        Assert.Equal(256, ModelSpec.FromConfigJson(g.ToJsonString()).DMlp);   // n_inner absent → 4·d_model
    }

    public static TheoryData<string, string, string> BadConfigs() => new()
    {
        { "unknown architecture", """{"architectures":["LlamaForCausalLM"]}""", "unknown architecture 'LlamaForCausalLM'" },
        { "no architecture", """{"n_embd":4}""", "missing field 'architectures'" },
        { "missing field", """{"architectures":["GPT2LMHeadModel"],"n_layer":1,"n_head":1,"vocab_size":5,"n_positions":4}""", "missing field 'n_embd'" },
        { "wrong type", """{"architectures":["GPT2LMHeadModel"],"n_embd":"64","n_layer":1,"n_head":1,"vocab_size":5,"n_positions":4}""", "field 'n_embd' must be an integer" },
        { "heads do not divide", """{"architectures":["GPT2LMHeadModel"],"n_embd":10,"n_layer":1,"n_head":3,"vocab_size":5,"n_positions":4}""", "not divisible by n_heads 3" },
        { "unknown activation", """{"architectures":["GPT2LMHeadModel"],"n_embd":8,"n_layer":1,"n_head":2,"vocab_size":5,"n_positions":4,"activation_function":"swish"}""", "activation_function 'swish' is not supported" },
        { "not an object", "[1]", "config must be a JSON object" },
        { "rope scaling", """{"architectures":["GPTNeoXForCausalLM"],"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":8,"vocab_size":5,"max_position_embeddings":4,"rope_scaling":{"type":"linear"}}""", "rope_scaling is not supported" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void BadConfigsAreRejectedClearly(string what, string json, string expected)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("config.json"), json);
        var e = Assert.Throws<PolyEngineException>(() => ModelSpec.FromConfigFile(dir.File("config.json")));
        Assert.Contains(expected, e.Message);
        Assert.Contains("config.json", e.Message);
        _ = what;
    }

    static Fixtures.TempDir CopyOfGolden(string name)
    {
        var dir = new Fixtures.TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(Fixtures.Golden(name), f), dir.File(f));
        return dir;
    }

    [Fact]
    public void MissingAndMisshapenTensorsAreNamed()
    {
        using var dir = CopyOfGolden("gpt2-tiny");
        // Drop one tensor.
        using (var f = SafeTensorsFile.Open(dir.File("model.safetensors")))
        {
            var w = new SafeTensorsWriter();
            foreach (var t in f.Tensors.Where(t => t.Name != "transformer.h.1.mlp.c_fc.bias")) w.Add(t.Name, f.ReadFloat32(t.Name), t.Shape);
            w.Save(dir.File("model2.safetensors"));
        }
        File.Move(dir.File("model2.safetensors"), dir.File("model.safetensors"), true);
        var e = Assert.Throws<PolyEngineException>(() => Model.Load(dir.Path));
        Assert.Contains("missing tensor 'transformer.h.1.mlp.c_fc.bias'", e.Message);

        // A config that disagrees with the weights.
        var cfg = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        cfg["n_inner"] = 128;
        File.WriteAllText(dir.File("config.json"), cfg.ToJsonString());
        File.Copy(Path.Combine(Fixtures.Golden("gpt2-tiny"), "model.safetensors"), dir.File("model.safetensors"), true);
        e = Assert.Throws<PolyEngineException>(() => Model.Load(dir.Path));
        Assert.Contains("has shape [64, 256], config.json implies [64, 128]", e.Message);
    }

    [Fact]
    public void MissingFilesAreExplained()
    {
        using var dir = new Fixtures.TempDir();
        Assert.Contains("config.json not found", Assert.Throws<PolyEngineException>(() => Model.Load(dir.Path)).Message);
        File.Copy(Path.Combine(Fixtures.Golden("gpt2-tiny"), "config.json"), dir.File("config.json"));
        Assert.Contains("no model.safetensors", Assert.Throws<PolyEngineException>(() => Model.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("pytorch_model.bin"), "x");
        Assert.Contains("only pytorch_model.bin", Assert.Throws<PolyEngineException>(() => Model.Load(dir.Path)).Message);
    }

    [Fact]
    public void BadInputIdsAreRejected()
    {
        using var model = Model.Load(Fixtures.Golden("gpt2-tiny"));
        Assert.Contains("token id 1000 (row 1, position 0) is outside the vocabulary 0..999",
            Assert.Throws<PolyEngineException>(() => model.Run([[1, 2], [1000, 3]])).Message);
        Assert.Contains("outside the vocabulary", Assert.Throws<PolyEngineException>(() => model.Run([[-1]])).Message);
        Assert.Contains("longer than the model's context n_ctx = 64", Assert.Throws<PolyEngineException>(() => model.Run([new int[65]])).Message);
        Assert.Contains("input row 1 is empty", Assert.Throws<PolyEngineException>(() => model.Run([[1, 2], []])).Message);
        Assert.Contains("empty", Assert.Throws<PolyEngineException>(() => model.Run([[]])).Message);
        Assert.Contains("--prompt is empty", Assert.Throws<PolyEngineException>(() => model.Encode("")).Message);
        // GPT-2 text whose ids exceed this tiny vocabulary is caught before any compute.
        Assert.Contains("outside the vocabulary", Assert.Throws<PolyEngineException>(() => model.Run([model.Encode("Hello world")])).Message);
        Assert.Equal(new long[] { 1, 64, 1000 }, model.Run([new int[64]]).Logits!.Shape);
    }

    [Fact]
    public void HubIdsResolveInTheHuggingFaceCache()
    {
        using var cache = new Fixtures.TempDir();
        string repo = Path.Combine(cache.Path, "models--EleutherAI--pythia-tiny");
        string snap = Path.Combine(repo, "snapshots", "abc123");
        Directory.CreateDirectory(snap);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "abc123\n");
        File.Copy(Path.Combine(Fixtures.Golden("neox-tiny"), "config.json"), Path.Combine(snap, "config.json"));
        Assert.Equal(snap, HfHub.ResolveModelFolder("EleutherAI/pythia-tiny", cache.Path));
        var e = Assert.Throws<PolyEngineException>(() => HfHub.ResolveModelFolder("gpt2", cache.Path));
        Assert.Contains("models--gpt2", e.Message);
        Assert.Contains("huggingface-cli download gpt2", e.Message);
        // openai-community/gpt2 serves the bare name too
        string oc = Path.Combine(cache.Path, "models--openai-community--gpt2", "snapshots", "s1");
        Directory.CreateDirectory(oc);
        File.WriteAllText(Path.Combine(oc, "config.json"), "{}");
        Assert.Equal(oc, HfHub.ResolveModelFolder("gpt2", cache.Path));
    }

    [Fact]
    public void NeoXQkvDeinterleaveIsAPermutation()
    {
        // rows (head, part, i) → (part, head, i) for 2 heads of 3 dims, rows of width 2
        var src = Enumerable.Range(0, 2 * 3 * 3 * 2).Select(i => (float)i).ToArray();
        var dst = NeoXMapping.DeinterleaveRows(src, 2, 3, 2);
        // Q of head 1 (source rows 9..11) lands at rows 3..5
        Assert.Equal(src.AsSpan(9 * 2, 6).ToArray(), dst.AsSpan(3 * 2, 6).ToArray());
        // V of head 0 (source rows 6..8) lands at rows 12..14
        Assert.Equal(src.AsSpan(6 * 2, 6).ToArray(), dst.AsSpan(12 * 2, 6).ToArray());
        Assert.Equal(src.OrderBy(x => x), dst.OrderBy(x => x));
    }
}

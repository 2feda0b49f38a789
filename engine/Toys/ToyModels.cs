using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Tokenization;

namespace PolyEngine.Toys;

/// <summary>The shape of a generated model, written in the real HF format of its family.</summary>
public sealed record ToyConfig
{
    public required ModelFamily Family { get; init; }
    public required int DModel { get; init; }
    public required int NLayers { get; init; }
    public required int NHeads { get; init; }
    public required int DMlp { get; init; }
    public required int DVocab { get; init; }
    public required int NCtx { get; init; }
    public float RotaryPct { get; init; } = 0.25f;
    public float RotaryBase { get; init; } = 10000f;
    public bool ParallelResidual { get; init; } = true;
    /// <summary>On-disk dtype of the weights (F32, F16 or BF16).</summary>
    public SafeTensorDType DType { get; init; } = SafeTensorDType.F32;
    /// <summary>Std of the matrix entries; LN gains are 1 ± 0.5 and biases N(0, 0.1²) so every path is exercised.</summary>
    public float InitStd { get; init; } = 0.02f;
}

/// <summary>
/// Random models in HF format (config.json + model.safetensors, + tokenizer.json for GPT-NeoX), deterministic per seed:
/// the generator is SplitMix64 + Box–Muller, independent of .NET's Random. Used by tests, benchmarks and the demo.
/// </summary>
public static class ToyModels
{
    public static readonly string[] Presets = ["tiny", "gpt2-small", "pythia-70m"];

    public static ToyConfig Preset(ModelFamily family, string preset) => (family, preset) switch
    {
        (ModelFamily.Gpt2, "tiny") => new() { Family = family, DModel = 64, NLayers = 2, NHeads = 4, DMlp = 256, DVocab = 50257, NCtx = 256, InitStd = 0.1f },
        (ModelFamily.GptNeoX, "tiny") => new() { Family = family, DModel = 64, NLayers = 2, NHeads = 4, DMlp = 256, DVocab = 50304, NCtx = 256, InitStd = 0.1f },
        (_, "gpt2-small") => new() { Family = family, DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = family == ModelFamily.Gpt2 ? 50257 : 50304, NCtx = 1024 },
        (_, "pythia-70m") => new() { Family = family, DModel = 512, NLayers = 6, NHeads = 8, DMlp = 2048, DVocab = family == ModelFamily.Gpt2 ? 50257 : 50304, NCtx = 2048,
            DType = family == ModelFamily.GptNeoX ? SafeTensorDType.F16 : SafeTensorDType.F32 },
        _ => throw new PolyEngineException($"--preset '{preset}' is unknown; choose one of {string.Join(", ", Presets)}"),
    };

    public static void Write(ToyConfig c, ulong seed, string outDir)
    {
        if (c.DModel % c.NHeads != 0) throw new PolyEngineException($"toy model: d_model {c.DModel} is not divisible by n_heads {c.NHeads}");
        Directory.CreateDirectory(outDir);
        var rng = new Rng(seed);
        var w = new SafeTensorsWriter().AddMetadata("format", "pt").AddMetadata("generator", $"polyengine toy seed={seed}");
        int d = c.DModel, m = c.DMlp, v = c.DVocab;
        void Normal(string name, float std, params long[] shape) => w.Add(name, rng.Normals(shape, std), c.DType, shape);
        void Gain(string name) => w.Add(name, rng.Uniforms(d, 0.5f, 1.5f), c.DType, d);
        void Bias(string name, int n) => w.Add(name, rng.Normals([n], 0.1f), c.DType, n);
        if (c.Family == ModelFamily.Gpt2)
        {
            Normal("wte.weight", c.InitStd, v, d);
            Normal("wpe.weight", c.InitStd, c.NCtx, d);
            for (int l = 0; l < c.NLayers; l++)
            {
                string p = $"h.{l}.";
                Gain(p + "ln_1.weight"); Bias(p + "ln_1.bias", d);
                Normal(p + "attn.c_attn.weight", c.InitStd, d, 3 * d); Bias(p + "attn.c_attn.bias", 3 * d);
                Normal(p + "attn.c_proj.weight", c.InitStd, d, d); Bias(p + "attn.c_proj.bias", d);
                Gain(p + "ln_2.weight"); Bias(p + "ln_2.bias", d);
                Normal(p + "mlp.c_fc.weight", c.InitStd, d, m); Bias(p + "mlp.c_fc.bias", m);
                Normal(p + "mlp.c_proj.weight", c.InitStd, m, d); Bias(p + "mlp.c_proj.bias", d);
            }
            Gain("ln_f.weight"); Bias("ln_f.bias", d);
        }
        else
        {
            Normal("gpt_neox.embed_in.weight", c.InitStd, v, d);
            for (int l = 0; l < c.NLayers; l++)
            {
                string p = $"gpt_neox.layers.{l}.";
                Gain(p + "input_layernorm.weight"); Bias(p + "input_layernorm.bias", d);
                Gain(p + "post_attention_layernorm.weight"); Bias(p + "post_attention_layernorm.bias", d);
                Normal(p + "attention.query_key_value.weight", c.InitStd, 3 * d, d); Bias(p + "attention.query_key_value.bias", 3 * d);
                Normal(p + "attention.dense.weight", c.InitStd, d, d); Bias(p + "attention.dense.bias", d);
                Normal(p + "mlp.dense_h_to_4h.weight", c.InitStd, m, d); Bias(p + "mlp.dense_h_to_4h.bias", m);
                Normal(p + "mlp.dense_4h_to_h.weight", c.InitStd, d, m); Bias(p + "mlp.dense_4h_to_h.bias", d);
            }
            Gain("gpt_neox.final_layer_norm.weight"); Bias("gpt_neox.final_layer_norm.bias", d);
            Normal("embed_out.weight", c.InitStd, v, d);
            using var tok = ModelTokenizer.OpenBuiltInNeoXTokenizerJson();
            AtomicFile.Write(Path.Combine(outDir, "tokenizer.json"), s => tok.CopyTo(s));
        }
        AtomicFile.WriteText(Path.Combine(outDir, "config.json"), ConfigJson(c));
        w.Save(Path.Combine(outDir, "model.safetensors"));
    }

    internal static string ConfigJson(ToyConfig c)
    {
        string dtype = c.DType switch { SafeTensorDType.F16 => "float16", SafeTensorDType.BF16 => "bfloat16", _ => "float32" };
        JsonObject o = c.Family == ModelFamily.Gpt2
            ? new()
            {
                ["activation_function"] = "gelu_new", ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["bos_token_id"] = Math.Min(50256, c.DVocab - 1),
                ["eos_token_id"] = Math.Min(50256, c.DVocab - 1), ["layer_norm_epsilon"] = 1e-5, ["model_type"] = "gpt2", ["n_ctx"] = c.NCtx,
                ["n_embd"] = c.DModel, ["n_head"] = c.NHeads, ["n_inner"] = c.DMlp, ["n_layer"] = c.NLayers, ["n_positions"] = c.NCtx,
                ["torch_dtype"] = dtype, ["vocab_size"] = c.DVocab,
            }
            : new()
            {
                ["architectures"] = new JsonArray("GPTNeoXForCausalLM"), ["bos_token_id"] = 0, ["eos_token_id"] = 0, ["hidden_act"] = "gelu",
                ["hidden_size"] = c.DModel, ["intermediate_size"] = c.DMlp, ["layer_norm_eps"] = 1e-5, ["max_position_embeddings"] = c.NCtx,
                ["model_type"] = "gpt_neox", ["num_attention_heads"] = c.NHeads, ["num_hidden_layers"] = c.NLayers, ["rotary_emb_base"] = c.RotaryBase,
                ["rotary_pct"] = c.RotaryPct, ["tie_word_embeddings"] = false, ["torch_dtype"] = dtype, ["use_parallel_residual"] = c.ParallelResidual,
                ["vocab_size"] = c.DVocab,
            };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

}

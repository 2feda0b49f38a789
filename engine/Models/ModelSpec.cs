using System.Text.Json;
using PolyEngine.Kernels;

namespace PolyEngine.Models;

public enum ModelFamily { Gpt2, GptNeoX }

/// <summary>
/// Family-neutral description of a decoder-only transformer, in TransformerLens vocabulary.
/// Built from a HuggingFace <c>config.json</c> by <see cref="FromConfigFile"/> (one explicit mapping per family).
/// </summary>
public sealed record ModelSpec
{
    public required ModelFamily Family { get; init; }
    public required string Architecture { get; init; }
    public required int DModel { get; init; }
    public required int NLayers { get; init; }
    public required int NHeads { get; init; }
    public int DHead => DModel / NHeads;
    public required int DMlp { get; init; }
    public required int DVocab { get; init; }
    /// <summary>Maximum sequence length (position embeddings / rotary cache).</summary>
    public required int NCtx { get; init; }
    public required Activation Act { get; init; }
    public required float LnEps { get; init; }
    /// <summary>Rotated dims per head (0 = no rotary: learned absolute positions).</summary>
    public int RotaryDim { get; init; }
    public float RotaryBase { get; init; } = 10000f;
    /// <summary>attn and MLP both read the block input (Pythia).</summary>
    public bool ParallelResidual { get; init; }
    /// <summary>LM head is the token embedding (GPT-2).</summary>
    public bool TiedHead { get; init; }
    public bool HasPositionEmbedding => Family == ModelFamily.Gpt2;
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }

    public long ParameterCount
    {
        get
        {
            long d = DModel, m = DMlp;
            long perLayer = 4 * d /*2 LN*/ + d * 3 * d + 3 * d + d * d + d + d * m + m + m * d + d;
            long total = DVocab * d + NLayers * perLayer + 2 * d;
            if (HasPositionEmbedding) total += (long)NCtx * d;
            if (!TiedHead) total += DVocab * d;
            return total;
        }
    }

    public static ModelSpec FromConfigFile(string path)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"{path}: config.json not found; a model folder needs config.json and model.safetensors");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Formats.FileLinks.ReadAllText(path)); }
        catch (JsonException e) { throw new PolyEngineException($"{path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using (doc) return FromConfig(new ConfigReader(path, doc.RootElement));
    }

    public static ModelSpec FromConfigJson(string json, string origin = "config.json")
    {
        using var doc = JsonDocument.Parse(json);
        return FromConfig(new ConfigReader(origin, doc.RootElement));
    }

    static ModelSpec FromConfig(ConfigReader c)
    {
        string arch = c.Architecture();
        return arch switch
        {
            "GPT2LMHeadModel" or "GPT2Model" => Gpt2(c, arch),
            "GPTNeoXForCausalLM" or "GPTNeoXModel" => NeoX(c, arch),
            _ => throw new PolyEngineException($"{c.Path}: unknown architecture '{arch}'; supported: GPT2LMHeadModel, GPT2Model, GPTNeoXForCausalLM"),
        };
    }

    // GPT-2: n_embd → d_model, n_inner (null → 4·d_model) → d_mlp, gelu_new → GeluTanh, Conv1D weights, tied head.
    static ModelSpec Gpt2(ConfigReader c, string arch)
    {
        if (c.Bool("scale_attn_by_inverse_layer_idx", false))
            throw new PolyEngineException($"{c.Path}: scale_attn_by_inverse_layer_idx = true is not supported; only standard GPT-2 attention scaling is implemented");
        if (!c.Bool("scale_attn_weights", true))
            throw new PolyEngineException($"{c.Path}: scale_attn_weights = false is not supported");
        int d = c.Int("n_embd");
        return Validate(c, new ModelSpec
        {
            Family = ModelFamily.Gpt2, Architecture = arch,
            DModel = d, NLayers = c.Int("n_layer"), NHeads = c.Int("n_head"),
            DMlp = c.OptionalInt("n_inner") ?? 4 * d, DVocab = c.Int("vocab_size"),
            NCtx = c.OptionalInt("n_positions") ?? c.OptionalInt("n_ctx") ?? throw c.Missing("n_positions"),
            Act = c.ActivationOf("activation_function", "gelu_new"), LnEps = c.Float("layer_norm_epsilon", 1e-5f),
            TiedHead = true, BosTokenId = c.OptionalInt("bos_token_id"), EosTokenId = c.OptionalInt("eos_token_id"),
        });
    }

    // GPT-NeoX: hidden_size → d_model, rotary_pct·d_head → rotary dims (rotate-half), gelu → GeluErf, nn.Linear weights,
    // per-head interleaved fused QKV, parallel residual by default, untied head. Reads both the v4 and v5 rope spellings.
    static ModelSpec NeoX(ConfigReader c, string arch)
    {
        if (c.Has("rope_scaling") && !c.IsNull("rope_scaling"))
            throw new PolyEngineException($"{c.Path}: rope_scaling is not supported; only plain rotary embeddings are implemented");
        if (!c.Bool("attention_bias", true))
            throw new PolyEngineException($"{c.Path}: attention_bias = false is not supported");
        int d = c.Int("hidden_size"), heads = c.Int("num_attention_heads");
        float pct = c.OptionalFloat("rotary_pct") ?? c.Nested("rope_parameters", "partial_rotary_factor") ?? 0.25f;
        float rbase = c.OptionalFloat("rotary_emb_base") ?? c.Nested("rope_parameters", "rope_theta") ?? c.OptionalFloat("rope_theta") ?? 10000f;
        int dHead = heads > 0 ? d / heads : 0;
        return Validate(c, new ModelSpec
        {
            Family = ModelFamily.GptNeoX, Architecture = arch,
            DModel = d, NLayers = c.Int("num_hidden_layers"), NHeads = heads,
            DMlp = c.Int("intermediate_size"), DVocab = c.Int("vocab_size"), NCtx = c.Int("max_position_embeddings"),
            Act = c.ActivationOf("hidden_act", "gelu"), LnEps = c.Float("layer_norm_eps", 1e-5f),
            RotaryDim = (int)(dHead * pct), RotaryBase = rbase,
            ParallelResidual = c.Bool("use_parallel_residual", true), TiedHead = c.Bool("tie_word_embeddings", false),
            BosTokenId = c.OptionalInt("bos_token_id"), EosTokenId = c.OptionalInt("eos_token_id"),
        });
    }

    static ModelSpec Validate(ConfigReader c, ModelSpec s)
    {
        void Positive(string what, int v) { if (v <= 0) throw new PolyEngineException($"{c.Path}: {what} must be positive, got {v}"); }
        Positive("d_model", s.DModel); Positive("n_layers", s.NLayers); Positive("n_heads", s.NHeads);
        Positive("d_mlp", s.DMlp); Positive("d_vocab", s.DVocab); Positive("n_ctx", s.NCtx);
        if (s.DModel % s.NHeads != 0)
            throw new PolyEngineException($"{c.Path}: d_model {s.DModel} is not divisible by n_heads {s.NHeads}");
        if (s.RotaryDim % 2 != 0 || s.RotaryDim > s.DHead)
            throw new PolyEngineException($"{c.Path}: rotary dims {s.RotaryDim} must be even and at most d_head {s.DHead}");
        if (!(s.LnEps > 0)) throw new PolyEngineException($"{c.Path}: layer-norm epsilon must be positive, got {s.LnEps}");
        return s;
    }

    /// <summary>Typed access to config.json fields with errors naming the file, the field and the fix.</summary>
    sealed class ConfigReader(string path, JsonElement root)
    {
        public string Path { get; } = path;

        public bool Has(string name) => root.ValueKind == JsonValueKind.Object && root.TryGetProperty(name, out _);
        public bool IsNull(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Null;

        public PolyEngineException Missing(string name) =>
            new($"{Path}: missing field '{name}'; the file is not a complete HuggingFace config (re-save it with save_pretrained)");

        public string Architecture()
        {
            if (root.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"{Path}: config must be a JSON object");
            if (root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0
                && a[0].ValueKind == JsonValueKind.String)
                return a[0].GetString()!;
            if (root.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String)
                return mt.GetString() switch { "gpt2" => "GPT2LMHeadModel", "gpt_neox" => "GPTNeoXForCausalLM", var other => other! };
            throw new PolyEngineException($"{Path}: missing field 'architectures' (and 'model_type'); cannot tell which model family this is");
        }

        public int Int(string name) => OptionalInt(name) ?? throw Missing(name);

        public int? OptionalInt(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
                throw new PolyEngineException($"{Path}: field '{name}' must be an integer, found {v.ValueKind} {v}");
            return i;
        }

        public float? OptionalFloat(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number) throw new PolyEngineException($"{Path}: field '{name}' must be a number, found {v.ValueKind}");
            return (float)v.GetDouble();
        }

        public float? Nested(string obj, string name)
        {
            if (!root.TryGetProperty(obj, out var o) || o.ValueKind != JsonValueKind.Object || !o.TryGetProperty(name, out var v)) return null;
            if (v.ValueKind != JsonValueKind.Number) throw new PolyEngineException($"{Path}: field '{obj}.{name}' must be a number");
            return (float)v.GetDouble();
        }

        public float Float(string name, float fallback) => OptionalFloat(name) ?? fallback;

        public bool Bool(string name, bool fallback)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new PolyEngineException($"{Path}: field '{name}' must be true or false, found {v}"),
            };
        }

        public Activation ActivationOf(string name, string fallback)
        {
            string act = root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : fallback;
            return act switch
            {
                "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
                "gelu" => Activation.GeluErf,
                "relu" => Activation.Relu,
                _ => throw new PolyEngineException($"{Path}: {name} '{act}' is not supported (supported: gelu_new, gelu_pytorch_tanh, gelu, relu)"),
            };
        }
    }
}

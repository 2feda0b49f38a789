using System.Text.Json;
using PolyEngine.Kernels;

namespace PolyEngine;

public enum SaeArchitecture { Standard, JumpRelu, TopK }

/// <summary>
/// An SAE's configuration, normalised from the formats researchers have (docs/FORMATS.md §5): SAELens folders with the flat
/// pre-6.0 or the 6.x <c>metadata</c> cfg.json, and EleutherAI sparsify folders (cfg.json + sae.safetensors).
/// </summary>
public sealed record SaeConfig
{
    public required string Folder { get; init; }
    public required string Format { get; init; }            // "saelens" | "saelens-v6" | "sparsify"
    public required SaeArchitecture Architecture { get; init; }
    public required int DIn { get; init; }
    public required int DSae { get; init; }
    public required HookName Hook { get; init; }
    public int K { get; init; }
    public bool ApplyBDecToInput { get; init; } = true;
    public RowNormalization Normalization { get; init; }
    public bool RescaleActsByDecoderNorm { get; init; }
    public bool PrependBos { get; init; }
    public int? ContextSize { get; init; }
    public string? ModelName { get; init; }
    /// <summary>TransformerLens processing the release was trained on (e.g. gpt2-small res-jb: centred residual stream).</summary>
    public bool CenterWritingWeights { get; init; }

    public static SaeConfig Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new PolyEngineException($"{folder}: SAE folder not found");
        string cfgPath = Path.Combine(folder, "cfg.json");
        if (!File.Exists(cfgPath))
            throw new PolyEngineException($"{folder}: no cfg.json; an SAE folder needs cfg.json with sae_weights.safetensors (SAELens) or sae.safetensors (sparsify)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Formats.FileLinks.ReadAllText(cfgPath)); }
        catch (JsonException e) { throw new PolyEngineException($"{cfgPath}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new PolyEngineException($"{cfgPath}: must be a JSON object of SAE settings, found {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
            var c = new Reader(cfgPath, doc.RootElement);
            if (File.Exists(Path.Combine(folder, "sae_weights.safetensors"))) return SaeLens(folder, c);
            if (File.Exists(Path.Combine(folder, "sae.safetensors"))) return Sparsify(folder, c);
            throw new PolyEngineException($"{folder}: neither sae_weights.safetensors (SAELens) nor sae.safetensors (sparsify) found");
        }
    }

    /// <summary>Checks that this SAE fits <paramref name="spec"/>: its hook exists and d_in equals the hook's width.</summary>
    public void CheckAgainst(Models.ModelSpec spec)
    {
        if (!HookName.AllFor(spec).Contains(Hook))
            throw new PolyEngineException($"{Folder}: the SAE reads '{Hook}', which this {spec.Architecture} model does not have");
        int width = Hook.WidthFor(spec);
        if (width == 0)
            throw new PolyEngineException($"{Folder}: the SAE reads '{Hook}', the attention pattern [batch, head, query, key], which is no vector per position; an SAE reads a hook such as hook_resid_pre or attn.hook_z");
        if (width != DIn)
            throw new PolyEngineException($"{Folder}: d_in {DIn} does not equal the width {width} of '{Hook}' in this model; the SAE belongs to another model");
    }

    // SAELens: 6.x keeps model/dataset fields in `metadata` and names TopK's k at the top level; the flat pre-6.0 layout
    // has hook_name, activation_fn_str and activation_fn_kwargs.k at the top level.
    static SaeConfig SaeLens(string folder, Reader c)
    {
        var meta = c.Object("metadata");
        bool v6 = meta is not null;
        var m = meta ?? c;
        string hookText = m.String("hook_name") ?? c.String("hook_name") ?? c.String("hook_point")
            ?? throw c.Missing("hook_name");
        if (!HookName.TryParse(hookText, out var hook))
            throw new PolyEngineException($"{c.Path}: hook_name '{hookText}' is not a TransformerLens hook PolyEngine provides");
        if ((m.Int("hook_head_index") ?? c.Int("hook_head_index") ?? c.Int("hook_point_head_index")) is not null)
            throw new PolyEngineException($"{c.Path}: per-head SAEs (hook_head_index) are not supported yet");
        string arch = c.String("architecture") ?? "standard";
        int k = 0;
        var archEnum = arch switch
        {
            "standard" => SaeArchitecture.Standard,
            "jumprelu" => SaeArchitecture.JumpRelu,
            "topk" => SaeArchitecture.TopK,
            _ => throw new PolyEngineException($"{c.Path}: SAE architecture '{arch}' is not supported (standard, jumprelu, topk)"),
        };
        if (c.String("activation_fn_str") is "topk" || c.String("activation_fn") is "topk") archEnum = SaeArchitecture.TopK;
        if (archEnum == SaeArchitecture.TopK)
            k = c.Int("k") ?? c.Object("activation_fn_kwargs")?.Int("k") ?? throw c.Missing("k");
        var norm = c.NormalizeActivations();
        var kwargs = m.Object("model_from_pretrained_kwargs") ?? c.Object("model_from_pretrained_kwargs");
        var config = new SaeConfig
        {
            Folder = folder, Format = v6 ? "saelens-v6" : "saelens", Architecture = archEnum,
            DIn = c.Int("d_in") ?? throw c.Missing("d_in"), DSae = c.Int("d_sae") ?? throw c.Missing("d_sae"),
            Hook = hook, K = k, ApplyBDecToInput = c.Bool("apply_b_dec_to_input") ?? true, Normalization = norm,
            RescaleActsByDecoderNorm = c.Bool("rescale_acts_by_decoder_norm") ?? false,
            PrependBos = m.Bool("prepend_bos") ?? c.Bool("prepend_bos") ?? true, ContextSize = m.Int("context_size") ?? c.Int("context_size"),
            ModelName = m.String("model_name") ?? c.String("model_name"),
            CenterWritingWeights = kwargs?.Bool("center_writing_weights") ?? false,
        };
        return Validate(config, c);
    }

    // EleutherAI sparsify: TopK over ReLU'd pre-activations; the hookpoint is the folder name (`layers.{i}` = the output of
    // block i = blocks.{i}.hook_resid_post; `embed_tokens` = hook_embed).
    static SaeConfig Sparsify(string folder, Reader c)
    {
        string activation = c.String("activation") ?? "topk";
        if (activation != "topk")
            throw new PolyEngineException($"{c.Path}: sparsify activation '{activation}' is not supported (topk)");
        if (c.Bool("transcode") == true || c.Bool("skip_connection") == true)
            throw new PolyEngineException($"{c.Path}: sparsify transcoders and skip connections are not supported");
        int dIn = c.Int("d_in") ?? throw c.Missing("d_in");
        int latents = c.Int("num_latents") is int nl && nl > 0 ? nl : dIn * (c.Int("expansion_factor") ?? throw c.Missing("num_latents"));
        string hookpoint = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
        HookName hook;
        if (hookpoint.StartsWith("layers.", StringComparison.Ordinal) && int.TryParse(hookpoint["layers.".Length..], out int layer))
            hook = new HookName(HookPoint.ResidPost, layer);
        else if (hookpoint is "embed_tokens" or "embed_in" or "wte") hook = new HookName(HookPoint.Embed);
        else if (!HookName.TryParse(hookpoint, out hook))
            throw new PolyEngineException($"{folder}: sparsify hookpoint '{hookpoint}' has no TransformerLens equivalent here (supported: layers.N, embed_tokens)");
        return Validate(new SaeConfig
        {
            Folder = folder, Format = "sparsify", Architecture = SaeArchitecture.TopK, DIn = dIn, DSae = latents, Hook = hook,
            K = c.Int("k") ?? throw c.Missing("k"), ApplyBDecToInput = true, PrependBos = false,
        }, c);
    }

    static SaeConfig Validate(SaeConfig s, Reader c)
    {
        if (s.DIn <= 0 || s.DSae <= 0) throw new PolyEngineException($"{c.Path}: d_in and d_sae must be positive, got {s.DIn} and {s.DSae}");
        if (s.Architecture == SaeArchitecture.TopK && (s.K <= 0 || s.K > s.DSae))
            throw new PolyEngineException($"{c.Path}: TopK k = {s.K} must be in 1..d_sae ({s.DSae})");
        return s;
    }

    sealed class Reader(string path, JsonElement e)
    {
        public string Path { get; } = path;

        bool Get(string name, out JsonElement v) =>
            e.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;

        public PolyEngineException Missing(string name) => new($"{Path}: missing field '{name}'");

        public string? String(string name) => !Get(name, out var v) ? null
            : v.ValueKind == JsonValueKind.String ? v.GetString() : throw new PolyEngineException($"{Path}: field '{name}' must be a string, found {v.ValueKind}");

        public int? Int(string name) => !Get(name, out var v) ? null
            : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
            : throw new PolyEngineException($"{Path}: field '{name}' must be an integer, found {v.ValueKind} {v}");

        public bool? Bool(string name) => !Get(name, out var v) ? null
            : v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new PolyEngineException($"{Path}: field '{name}' must be true or false, found {v}"),
            };

        public Reader? Object(string name) => !Get(name, out var v) ? null
            : v.ValueKind == JsonValueKind.Object ? new Reader(Path, v) : throw new PolyEngineException($"{Path}: field '{name}' must be an object");

        /// <summary>normalize_activations: 6.x strings, or the pre-6.0 boolean (true → expected_average_only_in).</summary>
        public RowNormalization NormalizeActivations()
        {
            if (!Get("normalize_activations", out var v)) return RowNormalization.None;
            string value = v.ValueKind switch
            {
                JsonValueKind.String => v.GetString()!,
                JsonValueKind.False => "none",
                JsonValueKind.True => "expected_average_only_in",
                _ => throw new PolyEngineException($"{Path}: field 'normalize_activations' must be a string or boolean"),
            };
            return value switch
            {
                "none" => RowNormalization.None,
                "layer_norm" => RowNormalization.LayerNorm,
                "constant_norm_rescale" => RowNormalization.ConstantNorm,
                "expected_average_only_in" => throw new PolyEngineException(
                    $"{Path}: normalize_activations 'expected_average_only_in' needs the release's norm_scaling_factor (SAELens pretrained_saes.yaml), which the folder does not carry; fold it into the weights or use a release without it"),
                _ => throw new PolyEngineException($"{Path}: normalize_activations '{value}' is not supported (none, layer_norm, constant_norm_rescale)"),
            };
        }
    }
}

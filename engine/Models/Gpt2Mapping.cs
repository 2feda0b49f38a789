using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Models;

/// <summary>
/// HF GPT-2 (<c>GPT2LMHeadModel</c>/<c>GPT2Model</c>) → <see cref="ModelParams"/>. Keys with or without <c>transformer.</c>;
/// Conv1D weights are [in, out] (no transpose); c_attn output is already [Q | K | V]; the head is tied to <c>wte</c>
/// unless <c>lm_head.weight</c> is present; causal-mask buffers (<c>attn.bias</c>, <c>attn.masked_bias</c>) are ignored.
/// </summary>
public static class Gpt2Mapping
{
    public static ModelParams Load(WeightFiles w, ModelSpec s)
    {
        string p = w.Contains("transformer.wte.weight") ? "transformer." : "";
        int d = s.DModel, m = s.DMlp, v = s.DVocab;
        var wte = Embed(w, s);                                                // [d_vocab, d_model]
        var blocks = new BlockParams[s.NLayers];
        for (int l = 0; l < s.NLayers; l++)
        {
            string b = $"{p}h.{l}.";
            blocks[l] = new BlockParams
            {
                Ln1W = w.Read(b + "ln_1.weight", d), Ln1B = w.Read(b + "ln_1.bias", d),
                Qkv = new(w.Read(b + "attn.c_attn.weight", d, 3 * d), d, 3 * d, WeightLayout.InOut),
                QkvB = w.Read(b + "attn.c_attn.bias", 3 * d),
                AttnOut = new(w.Read(b + "attn.c_proj.weight", d, d), d, d, WeightLayout.InOut),
                AttnOutB = w.Read(b + "attn.c_proj.bias", d),
                Ln2W = w.Read(b + "ln_2.weight", d), Ln2B = w.Read(b + "ln_2.bias", d),
                MlpIn = new(w.Read(b + "mlp.c_fc.weight", d, m), d, m, WeightLayout.InOut),
                MlpInB = w.Read(b + "mlp.c_fc.bias", m),
                MlpOut = new(w.Read(b + "mlp.c_proj.weight", m, d), m, d, WeightLayout.InOut),
                MlpOutB = w.Read(b + "mlp.c_proj.bias", d),
            };
        }
        var head = Head(w, s, wte);
        return new ModelParams
        {
            Embed = wte,
            PosEmbed = w.Read(p + "wpe.weight", s.NCtx, d),                     // [n_ctx, d_model]
            Blocks = blocks,
            LnFinalW = w.Read(p + "ln_f.weight", d), LnFinalB = w.Read(p + "ln_f.bias", d),
            Unembed = new(head, d, v, WeightLayout.OutIn),                      // [d_vocab, d_model] used as d_model → d_vocab
        };
    }

    /// <summary>The token embedding W_E [d_vocab, d_model] (<c>wte</c>).</summary>
    public static float[] Embed(WeightFiles w, ModelSpec s) =>
        w.Read((w.Contains("transformer.wte.weight") ? "transformer." : "") + "wte.weight", s.DVocab, s.DModel);

    /// <summary>The LM head [d_vocab, d_model]: <c>lm_head.weight</c> when present, else the tied <c>wte</c>
    /// (read here unless the caller has it).</summary>
    public static float[] Head(WeightFiles w, ModelSpec s, float[]? wte = null) =>
        w.Contains("lm_head.weight") ? w.Read("lm_head.weight", s.DVocab, s.DModel) : wte ?? Embed(w, s);
}

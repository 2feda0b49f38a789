using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Models;

/// <summary>
/// HF GPT-NeoX (<c>GPTNeoXForCausalLM</c>, Pythia) → <see cref="ModelParams"/>. nn.Linear weights are [out, in];
/// the fused QKV output is interleaved per head — (head, q|k|v, d_head) — and is permuted here to [Q | K | V]
/// blocks so both families share one attention path; the head is <c>embed_out</c> (untied) unless tie_word_embeddings.
/// Buffers (<c>attention.bias</c>, <c>masked_bias</c>, <c>rotary_emb.inv_freq</c>) are ignored.
/// </summary>
public static class NeoXMapping
{
    public static ModelParams Load(WeightFiles w, ModelSpec s)
    {
        string p = w.Contains("gpt_neox.embed_in.weight") ? "gpt_neox." : "";
        int d = s.DModel, m = s.DMlp, v = s.DVocab;
        var embed = Embed(w, s);                                              // [d_vocab, d_model]
        var blocks = new BlockParams[s.NLayers];
        for (int l = 0; l < s.NLayers; l++)
        {
            string b = $"{p}layers.{l}.";
            var qkvW = w.Read(b + "attention.query_key_value.weight", 3 * d, d);   // [3·d_model, d_model], rows (head qkv d_head)
            var qkvB = w.Read(b + "attention.query_key_value.bias", 3 * d);
            blocks[l] = new BlockParams
            {
                Ln1W = w.Read(b + "input_layernorm.weight", d), Ln1B = w.Read(b + "input_layernorm.bias", d),
                Qkv = new(DeinterleaveRows(qkvW, s.NHeads, s.DHead, d), d, 3 * d, WeightLayout.OutIn),
                QkvB = DeinterleaveRows(qkvB, s.NHeads, s.DHead, 1),
                AttnOut = new(w.Read(b + "attention.dense.weight", d, d), d, d, WeightLayout.OutIn),
                AttnOutB = w.Read(b + "attention.dense.bias", d),
                Ln2W = w.Read(b + "post_attention_layernorm.weight", d), Ln2B = w.Read(b + "post_attention_layernorm.bias", d),
                MlpIn = new(w.Read(b + "mlp.dense_h_to_4h.weight", m, d), d, m, WeightLayout.OutIn),
                MlpInB = w.Read(b + "mlp.dense_h_to_4h.bias", m),
                MlpOut = new(w.Read(b + "mlp.dense_4h_to_h.weight", d, m), m, d, WeightLayout.OutIn),
                MlpOutB = w.Read(b + "mlp.dense_4h_to_h.bias", d),
            };
        }
        float[] head = Head(w, s, embed);
        return new ModelParams
        {
            Embed = embed,
            Blocks = blocks,
            LnFinalW = w.Read(p + "final_layer_norm.weight", d), LnFinalB = w.Read(p + "final_layer_norm.bias", d),
            Unembed = new(head, d, v, WeightLayout.OutIn),
        };
    }

    /// <summary>The LM head [d_vocab, d_model]: <c>embed_out.weight</c>, or the tied <c>embed_in</c> (read here unless the
    /// caller has it).</summary>
    public static float[] Head(WeightFiles w, ModelSpec s, float[]? embedIn = null) =>
        s.TiedHead && !w.Contains("embed_out.weight") ? embedIn ?? Embed(w, s) : w.Read("embed_out.weight", s.DVocab, s.DModel);

    /// <summary>The token embedding W_E [d_vocab, d_model] (<c>embed_in</c>).</summary>
    public static float[] Embed(WeightFiles w, ModelSpec s) =>
        w.Read((w.Contains("gpt_neox.embed_in.weight") ? "gpt_neox." : "") + "embed_in.weight", s.DVocab, s.DModel);

    /// <summary>Rows ordered (head, part, i) → (part, head, i); each row has <paramref name="width"/> values.</summary>
    internal static float[] DeinterleaveRows(float[] src, int nHeads, int dHead, int width)
    {
        var dst = new float[src.Length];
        int d = nHeads * dHead;
        for (int h = 0; h < nHeads; h++)
            for (int part = 0; part < 3; part++)
                for (int i = 0; i < dHead; i++)
                {
                    int from = h * 3 * dHead + part * dHead + i, to = part * d + h * dHead + i;
                    Array.Copy(src, (long)from * width, dst, (long)to * width, width);
                }
        return dst;
    }
}

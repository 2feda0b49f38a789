using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Models;

/// <summary>A weight matrix as an operator from <see cref="In"/> to <see cref="Out"/> dims, stored in <see cref="Layout"/>.</summary>
public readonly record struct Matrix(float[] Data, int In, int Out, WeightLayout Layout);

/// <summary>One transformer block's parameters, in TransformerLens terms, family-neutral.</summary>
public sealed class BlockParams
{
    public required float[] Ln1W, Ln1B, Ln2W, Ln2B;   // [d_model]
    public required Matrix Qkv;                        // d_model → 3·d_model, output blocked [Q | K | V], head-major inside each
    public required float[] QkvB;                      // [3·d_model], same order
    public required Matrix AttnOut;                    // W_O: d_model → d_model (input index head·d_head + i)
    public required float[] AttnOutB;                  // [d_model]
    public required Matrix MlpIn;                      // W_in: d_model → d_mlp
    public required float[] MlpInB;                    // [d_mlp]
    public required Matrix MlpOut;                     // W_out: d_mlp → d_model
    public required float[] MlpOutB;                   // [d_model]
}

/// <summary>All parameters of a model, family-neutral (see <see cref="Gpt2Mapping"/> and <see cref="NeoXMapping"/>).</summary>
public sealed class ModelParams
{
    public required float[] Embed;                     // W_E [d_vocab, d_model]
    public float[]? PosEmbed;                          // W_pos [n_ctx, d_model] (GPT-2 only)
    public required BlockParams[] Blocks;
    public required float[] LnFinalW, LnFinalB;        // [d_model]
    public required Matrix Unembed;                    // W_U: d_model → d_vocab

    public static ModelParams Load(WeightFiles files, ModelSpec spec) => spec.Family switch
    {
        ModelFamily.Gpt2 => Gpt2Mapping.Load(files, spec),
        ModelFamily.GptNeoX => NeoXMapping.Load(files, spec),
        _ => throw new ArgumentOutOfRangeException(nameof(spec)),
    };

    /// <summary>Only the token embedding, W_E [d_vocab, d_model].</summary>
    public static float[] LoadEmbed(WeightFiles files, ModelSpec spec) => spec.Family switch
    {
        ModelFamily.Gpt2 => Gpt2Mapping.Embed(files, spec),
        ModelFamily.GptNeoX => NeoXMapping.Embed(files, spec),
        _ => throw new ArgumentOutOfRangeException(nameof(spec)),
    };

    /// <summary>Only the LM head, W_Uᵀ [d_vocab, d_model] (the logit lens of a direction u is head·u).</summary>
    public static float[] LoadHead(WeightFiles files, ModelSpec spec) => spec.Family switch
    {
        ModelFamily.Gpt2 => Gpt2Mapping.Head(files, spec),
        ModelFamily.GptNeoX => NeoXMapping.Head(files, spec),
        _ => throw new ArgumentOutOfRangeException(nameof(spec)),
    };
}

using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>A model's weights on a backend, uploaded and packed once (family-neutral: NeoX's QKV is de-interleaved at load).</summary>
sealed class ModelWeights : IDisposable
{
    public sealed class Block
    {
        public required DeviceBuffer Ln1W, Ln1B, Ln2W, Ln2B, QkvB, AttnOutB, MlpInB, MlpOutB;   // [d_model] / [3·d_model] / [d_mlp]
        public required PackedWeight Qkv, AttnOut, MlpIn, MlpOut;                               // d_model → 3·d_model, ...
    }

    public readonly DeviceBuffer Embed;         // [d_vocab, d_model]
    public readonly DeviceBuffer? PosEmbed;     // [n_ctx, d_model] (GPT-2)
    public readonly Block[] Blocks;
    public readonly DeviceBuffer LnFinalW, LnFinalB;   // [d_model]
    public readonly PackedWeight Unembed;       // d_model → d_vocab

    public ModelWeights(IBackend backend, ModelParams p)
    {
        Embed = backend.Upload(p.Embed);
        PosEmbed = p.PosEmbed is null ? null : backend.Upload(p.PosEmbed);
        PackedWeight Pack(Matrix m) => backend.PackWeight(m.Data, m.In, m.Out, m.Layout);
        Blocks = p.Blocks.Select(b => new Block
        {
            Ln1W = backend.Upload(b.Ln1W), Ln1B = backend.Upload(b.Ln1B), Ln2W = backend.Upload(b.Ln2W), Ln2B = backend.Upload(b.Ln2B),
            Qkv = Pack(b.Qkv), QkvB = backend.Upload(b.QkvB), AttnOut = Pack(b.AttnOut), AttnOutB = backend.Upload(b.AttnOutB),
            MlpIn = Pack(b.MlpIn), MlpInB = backend.Upload(b.MlpInB), MlpOut = Pack(b.MlpOut), MlpOutB = backend.Upload(b.MlpOutB),
        }).ToArray();
        LnFinalW = backend.Upload(p.LnFinalW);
        LnFinalB = backend.Upload(p.LnFinalB);
        Unembed = Pack(p.Unembed);
    }

    public void Dispose()
    {
        Embed.Dispose();
        PosEmbed?.Dispose();
        foreach (var b in Blocks)
            foreach (var x in new IDisposable[] { b.Ln1W, b.Ln1B, b.Ln2W, b.Ln2B, b.Qkv, b.QkvB, b.AttnOut, b.AttnOutB, b.MlpIn, b.MlpInB, b.MlpOut, b.MlpOutB })
                x.Dispose();
        LnFinalW.Dispose();
        LnFinalB.Dispose();
        Unembed.Dispose();
    }
}

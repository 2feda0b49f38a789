using PolyEngine.Forward;
using PolyEngine.Hooks;

namespace PolyEngine.Sae;

/// <summary>
/// SAEs applied to a forward pass's recorded hooks, with SAELens naming: <c>{hook}.hook_sae_acts_pre</c>,
/// <c>{hook}.hook_sae_acts_post</c> [batch, pos, d_sae], <c>{hook}.hook_sae_output</c> and <c>{hook}.hook_sae_error</c>
/// (input − output, in the SAE's input space) [batch, pos, d_in].
/// A release trained on TransformerLens-processed activations (<c>center_writing_weights</c>, e.g. GPT-2 res-jb) gets
/// the residual-stream family centred per token first (TL's centred stream = HF's minus its mean over d_model).
/// </summary>
public static class SaeHooks
{
    static readonly HashSet<HookPoint> Centred =
        [HookPoint.Embed, HookPoint.PosEmbed, HookPoint.ResidPre, HookPoint.ResidMid, HookPoint.ResidPost, HookPoint.AttnOut, HookPoint.MlpOut];

    /// <summary>What input processing <paramref name="sae"/> gets, in words (printed by runs).</summary>
    public static string Processing(SparseAutoencoder sae) =>
        sae.Config.CenterWritingWeights && Centred.Contains(sae.Config.Hook.Point)
            ? "input centred per token (center_writing_weights, as TransformerLens processed it in training)"
            : "input as the unprocessed HF model computes it";

    /// <summary>The SAE's input from a pass (its hook, processed as the release expects) and its encoding.</summary>
    public static (float[] Input, SaeEncoding Encoding) Encode(SparseAutoencoder sae, RunResult result, SaeEncoding? reuse = null)
    {
        var c = sae.Config;
        var x = result.Cache[c.Hook].Data;   // read only below, unless centred (then a copy)
        int rows = result.Batch * result.Seq;
        if (c.CenterWritingWeights && Centred.Contains(c.Hook.Point))
        {
            x = (float[])x.Clone();
            for (int r = 0; r < rows; r++)
            {
                var row = x.AsSpan(r * c.DIn, c.DIn);
                float mean = System.Numerics.Tensors.TensorPrimitives.Sum(row) / c.DIn;
                System.Numerics.Tensors.TensorPrimitives.Subtract(row, mean, row);
            }
        }
        return (x, sae.Encode(x, rows, reuse));
    }

    public static IEnumerable<(string Name, Tensor Tensor)> Apply(IEnumerable<SparseAutoencoder> saes, RunResult result)
    {
        foreach (var sae in saes)
        {
            var c = sae.Config;
            int rows = result.Batch * result.Seq;
            var (x, enc) = Encode(sae, result);
            yield return ($"{c.Hook}.hook_sae_acts_pre", new Tensor(enc.HiddenPre, result.Batch, result.Seq, c.DSae));
            yield return ($"{c.Hook}.hook_sae_acts_post", new Tensor(enc.FeatureActs, result.Batch, result.Seq, c.DSae));
            var output = sae.Decode(enc.FeatureActs, rows, x);
            yield return ($"{c.Hook}.hook_sae_output", new Tensor(output, result.Batch, result.Seq, c.DIn));
            var error = new float[output.Length];
            System.Numerics.Tensors.TensorPrimitives.Subtract(x, output, error);
            yield return ($"{c.Hook}.hook_sae_error", new Tensor(error, result.Batch, result.Seq, c.DIn));
        }
    }
}

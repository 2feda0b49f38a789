using PolyEngine.Forward;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;

namespace PolyEngine.Sae;

/// <summary>
/// SAEs applied to a forward pass's recorded hooks, dense, with SAELens naming: <c>{hook}.hook_sae_acts_pre</c>,
/// <c>{hook}.hook_sae_acts_post</c> [batch, pos, d_sae], <c>{hook}.hook_sae_output</c> and <c>{hook}.hook_sae_error</c>
/// (input − output, in the SAE's input space) [batch, pos, d_in]. For <c>run --sae</c>, which asks for them; scans
/// use <see cref="SparseAutoencoder.EncodeSparse"/> at the hook instead.
/// </summary>
public static class SaeHooks
{
    /// <summary>The SAE's input from a pass (its hook, centred when <see cref="SparseAutoencoder.CentresInput"/>) and its encoding.</summary>
    public static (float[] Input, SaeEncoding Encoding) Encode(SparseAutoencoder sae, RunResult result)
    {
        var c = sae.Config;
        var x = result.Cache[c.Hook].Data;   // read only below, unless centred (then a copy)
        int rows = result.Batch * result.Seq;
        if (sae.CentresInput)
        {
            x = (float[])x.Clone();
            for (int r = 0; r < rows; r++) SparseEncode.Normalize(x.AsSpan(r * c.DIn, c.DIn), RowNormalization.None, center: true, default, out _, out _);
        }
        return (x, sae.Encode(x, rows));
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

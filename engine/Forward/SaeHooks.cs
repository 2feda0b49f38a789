using PolyEngine.Kernels;
using PolyEngine.Kernels.Reference;

namespace PolyEngine;

/// <summary>
/// SAEs applied to a forward pass, dense, with SAELens naming: <c>{hook}.hook_sae_acts_pre</c>,
/// <c>{hook}.hook_sae_acts_post</c> [batch, pos, d_sae], <c>{hook}.hook_sae_output</c> and <c>{hook}.hook_sae_error</c>
/// (input − output, in the SAE's input space) [batch, pos, d_in]. Two ways, as in SAELens: <see cref="Apply"/> reads the
/// recorded hooks after the pass and changes nothing downstream (<c>use_error_term=True</c>: the logits are the model's
/// own); <see cref="SaeSplice"/> replaces the hook by the SAE's reconstruction during the pass, so everything downstream
/// sees it (<c>HookedSAETransformer</c> with the SAE attached). Scans use <see cref="SparseAutoencoder.EncodeSparse"/> at
/// the hook instead.
/// </summary>
public static class SaeHooks
{
    /// <summary>The SAE's input (x centred per token when <see cref="SparseAutoencoder.CentresInput"/>, else x itself) and its encoding.</summary>
    internal static (float[] Input, SaeEncoding Encoding) Encode(SparseAutoencoder sae, float[] x, int rows)
    {
        var c = sae.Config;
        if (sae.CentresInput)
        {
            x = (float[])x.Clone();
            for (int r = 0; r < rows; r++) SaeReference.NormalizeRow(x.AsSpan(r * c.DIn, c.DIn), RowNormalization.None, center: true, default, out _, out _);
        }
        return (x, sae.Encode(x, rows));
    }

    /// <summary>The SAE's four tensors from its input and encoding: pre, post, output and error (input − output).</summary>
    internal static (string Name, Tensor Tensor)[] Tensors(SparseAutoencoder sae, float[] input, SaeEncoding enc, int batch, int seq)
    {
        var c = sae.Config;
        var output = sae.Decode(enc.FeatureActs, batch * seq, input);
        var error = new float[output.Length];
        System.Numerics.Tensors.TensorPrimitives.Subtract(input, output, error);
        return
        [
            ($"{c.Hook}.hook_sae_acts_pre", new Tensor(enc.HiddenPre, batch, seq, c.DSae)),
            ($"{c.Hook}.hook_sae_acts_post", new Tensor(enc.FeatureActs, batch, seq, c.DSae)),
            ($"{c.Hook}.hook_sae_output", new Tensor(output, batch, seq, c.DIn)),
            ($"{c.Hook}.hook_sae_error", new Tensor(error, batch, seq, c.DIn)),
        ];
    }

    /// <summary>Each SAE read at its recorded hook after the pass (the pass itself is the model's own). Padded positions of
    /// a ragged batch read zero.</summary>
    public static IEnumerable<(string Name, Tensor Tensor)> Apply(IEnumerable<SparseAutoencoder> saes, RunResult result)
    {
        foreach (var sae in saes)
        {
            var (x, enc) = Encode(sae, result.Cache[sae.Config.Hook].Data, result.Batch * result.Seq);
            foreach (var (name, t) in Tensors(sae, x, enc, result.Batch, result.Seq))
            {
                result.ClearPadding(t.Data);
                yield return (name, t);
            }
        }
    }
}

/// <summary>
/// An SAE spliced into a pass (<see cref="RunOptions.Replacements"/>): at its hook the activation x is replaced by
/// x − error, which is the SAE's reconstruction in the model's own space (for an SAE that centres its input, the
/// reconstruction plus the per-token mean that centring removed — the same downstream, since every layer norm removes it
/// again). The hook itself is recorded before the replacement, so <c>{hook}</c> in the cache is the SAE's input as the
/// model computed it (with any upstream splice), and <see cref="Tensors"/> holds the SAE's tensors of that pass.
/// </summary>
public sealed class SaeSplice(SparseAutoencoder sae)
{
    (string Name, Tensor Tensor)[] _tensors = [];   // of the last pass, until taken

    public SparseAutoencoder Sae { get; } = sae;

    /// <summary>The replacement to put in <see cref="RunOptions.Replacements"/>.</summary>
    public HookReplacement Replacement => new(Sae.Config.Hook, Replace);

    /// <summary>The SAE's tensors of the pass that gave <paramref name="result"/> (SAELens naming), padded positions
    /// zeroed. Taken once, right after the pass: a second call, or a result of another shape, is an error rather than
    /// another pass's tensors.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Tensors(RunResult result)
    {
        var tensors = _tensors;
        if (tensors.Length == 0 || tensors[0].Tensor.Shape[0] != result.Batch || tensors[0].Tensor.Shape[1] != result.Seq)
            throw new InvalidOperationException("this splice holds no tensors of this result's pass; take them once, right after the pass");
        _tensors = [];
        foreach (var (_, t) in tensors) result.ClearPadding(t.Data);
        return tensors;
    }

    void Replace(DeviceBuffer buffer, int batch, int seq)
    {
        var backend = Sae.Backend;
        int rows = batch * seq, dIn = Sae.Config.DIn;
        var x = new float[(long)rows * dIn];   // [batch·pos, d_in]
        backend.Download(buffer, x);
        var (input, enc) = SaeHooks.Encode(Sae, x, rows);
        _tensors = SaeHooks.Tensors(Sae, input, enc, batch, seq);
        var error = _tensors[3].Tensor.Data;
        var spliced = new float[x.Length];
        System.Numerics.Tensors.TensorPrimitives.Subtract(x, error, spliced);
        using var upload = backend.Upload(spliced);
        backend.Rows.CopyColumns(upload, rows, dIn, 0, dIn, buffer);   // a plain copy: the hook becomes exactly the reconstruction
        backend.Synchronize();   // the upload is freed on return
    }
}

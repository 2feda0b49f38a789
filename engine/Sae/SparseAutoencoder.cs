using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Reference;
using PolyEngine.Models;

namespace PolyEngine;

/// <summary>One SAE's encode output for a batch of activation rows.</summary>
public sealed record SaeEncoding(float[] HiddenPre, float[] FeatureActs, int Rows, int DSae);

/// <summary>
/// A sparse autoencoder (SAELens conventions, docs/FORMATS.md §5.1): W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec
/// (+ threshold for JumpReLU). Encode: x' = norm_in(x); s = x' − b_dec (when apply_b_dec_to_input); pre = s·W_enc + b_enc;
/// standard f = ReLU(pre), JumpReLU f = ReLU(pre)·[pre &gt; θ], TopK f = ReLU of the k largest pre (the rest 0).
/// Decode: x̂ = norm_out(f·W_dec + b_dec). Every encode step runs on the model's backend (<see cref="ISaeOps.NormalizeRows"/>,
/// the GEMM, <see cref="ISaeOps.Sparsify"/>): <see cref="EncodeSparse"/> reads a hook's device buffer and returns only the
/// nonzeros. <c>rescale_acts_by_decoder_norm</c> is folded into W_enc and b_enc at load (pre_j·‖W_dec[j]‖ is
/// x·(W_enc[:, j]·‖W_dec[j]‖) + b_enc[j]·‖W_dec[j]‖). Not thread-safe: encodes share scratch buffers (a model's passes are
/// serialised anyway).
/// </summary>
public sealed class SparseAutoencoder : IDisposable
{
    readonly IBackend _backend;
    readonly PackedWeight _enc, _dec;
    readonly DeviceBuffer _bEnc, _bDec;
    readonly DeviceBuffer? _threshold;
    readonly SparseRule _rule;
    readonly float[]? _decoderNorms;   // ‖W_dec[j]‖ for TopK with rescale_acts_by_decoder_norm
    DeviceBuffer? _input, _pre;        // scratch: [rows, d_in] processed input, [rows, d_sae] pre-activations

    public SaeConfig Config { get; }

    /// <summary>The backend the SAE's weights live on (the model's).</summary>
    public IBackend Backend => _backend;

    /// <summary>True when the release was trained on TransformerLens-processed activations (<c>center_writing_weights</c>,
    /// e.g. GPT-2 res-jb) and reads the residual-stream family: its input is centred per token first (TL's centred stream
    /// = HF's minus its mean over d_model).</summary>
    public bool CentresInput => Config.CenterWritingWeights && Config.Hook.InResidualSpace;

    /// <summary>What input processing this SAE gets, in words (printed by runs).</summary>
    public string Processing => CentresInput
        ? "input centred per token (center_writing_weights, as TransformerLens processed it in training)"
        : "input as the unprocessed HF model computes it";

    SparseAutoencoder(SaeConfig config, IBackend backend, float[] wEnc, WeightLayout encLayout, float[] bEnc, float[] wDec, float[] bDec, float[]? threshold)
    {
        Config = config;
        _backend = backend;
        if (config.RescaleActsByDecoderNorm)
        {
            _decoderNorms = new float[config.DSae];
            for (int j = 0; j < config.DSae; j++)
                _decoderNorms[j] = (float)Math.Sqrt(wDec.AsSpan(j * config.DIn, config.DIn).ToArray().Sum(v => (double)v * v));
            for (int i = 0; i < config.DIn; i++)
                for (int j = 0; j < config.DSae; j++)
                    wEnc[encLayout == WeightLayout.InOut ? (long)i * config.DSae + j : (long)j * config.DIn + i] *= _decoderNorms[j];
            for (int j = 0; j < config.DSae; j++) bEnc[j] *= _decoderNorms[j];
        }
        _enc = backend.PackWeight(wEnc, config.DIn, config.DSae, encLayout);
        _dec = backend.PackWeight(wDec, config.DSae, config.DIn, WeightLayout.InOut);
        _bEnc = backend.Upload(bEnc);
        _bDec = backend.Upload(bDec);
        _threshold = threshold is null ? null : backend.Upload(threshold);
        _rule = new SparseRule(config.Architecture switch
        {
            SaeArchitecture.JumpRelu => SparseActivation.JumpRelu,
            SaeArchitecture.TopK => SparseActivation.TopK,
            _ => SparseActivation.Relu,
        }, config.K, _threshold);
    }

    /// <summary>Loads an SAELens or sparsify folder; weights are checked for shape and NaN before anything runs.</summary>
    public static SparseAutoencoder Load(string folder, IBackend backend)
    {
        var c = SaeConfig.Load(folder);
        if (c.Format == "sparsify")
        {
            using var f = SafeTensorsFile.Open(Path.Combine(folder, "sae.safetensors"));
            return new SparseAutoencoder(c, backend,
                Read(f, "encoder.weight", c.DSae, c.DIn), WeightLayout.OutIn,   // [num_latents, d_in] used as d_in → d_sae
                Read(f, "encoder.bias", c.DSae), Read(f, "W_dec", c.DSae, c.DIn), Read(f, "b_dec", c.DIn), null);
        }
        using var w = SafeTensorsFile.Open(Path.Combine(folder, "sae_weights.safetensors"));
        if (w.Contains("scaling_factor") && w.ReadFloat32("scaling_factor").Any(v => v != 1f))
            throw new PolyEngineException($"{w.Path}: a scaling_factor other than ones is not supported yet; fold it into W_dec");
        return new SparseAutoencoder(c, backend,
            Read(w, "W_enc", c.DIn, c.DSae), WeightLayout.InOut, Read(w, "b_enc", c.DSae), Read(w, "W_dec", c.DSae, c.DIn), Read(w, "b_dec", c.DIn),
            c.Architecture == SaeArchitecture.JumpRelu ? Read(w, "threshold", c.DSae) : null);
    }

    /// <summary>W_dec [d_sae, d_in] of an SAE folder alone (checked for shape and NaN), for scans of the decoder geometry.</summary>
    public static float[] ReadDecoder(SaeConfig c)
    {
        bool sparsify = c.Format == "sparsify";
        using var f = SafeTensorsFile.Open(Path.Combine(c.Folder, sparsify ? "sae.safetensors" : "sae_weights.safetensors"));
        return Read(f, "W_dec", c.DSae, c.DIn);
    }

    static float[] Read(SafeTensorsFile f, string name, params long[] shape)
    {
        if (!f.Contains(name)) throw new PolyEngineException($"{f.Path}: missing tensor '{name}'; the SAE weights do not match cfg.json");
        var info = f.Info(name);
        if (info.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.F64))
            throw new PolyEngineException($"{f.Path}: tensor '{name}' is {info.DType}; an SAE's weights must be floats (F32, F16, BF16 or F64)");
        if (!info.Shape.SequenceEqual(shape))
            throw new PolyEngineException($"{f.Path}: tensor '{name}' has shape {info.ShapeText}, cfg.json implies [{string.Join(", ", shape)}]");
        var values = f.ReadFloat32(name);
        int nan = Array.FindIndex(values, v => !float.IsFinite(v));
        if (nan >= 0) throw new PolyEngineException($"{f.Path}: tensor '{name}' holds a non-finite value ({values[nan]}) at flat index {nan}; the SAE file is corrupt");
        return values;
    }

    /// <summary>Checks that this SAE fits <paramref name="spec"/>: its hook exists and d_in equals the hook's width.</summary>
    public void CheckAgainst(ModelSpec spec) => Config.CheckAgainst(spec);

    /// <summary>pre [rows, d_sae] in the scratch buffer, from the hook activation x [rows, d_in] on the backend.</summary>
    DeviceBuffer PreActivations(DeviceBuffer x, int rows, bool center)
    {
        long nIn = (long)rows * Config.DIn, nPre = (long)rows * Config.DSae;
        if (_input is null || _input.Length < nIn) { _input?.Dispose(); _input = _backend.Allocate(nIn); }
        if (_pre is null || _pre.Length < nPre) { _pre?.Dispose(); _pre = _backend.Allocate(nPre); }
        _backend.Sae.NormalizeRows(x, _input, rows, Config.DIn, Config.Normalization, center, Config.ApplyBDecToInput ? _bDec : null);
        _backend.Linear.Forward(_input, _enc, _bEnc, _pre, rows);
        return _pre;
    }

    /// <summary>The fused encode at a hook: x [rows, d_in] is the hook's backend buffer as the model computed it (centred
    /// here when <see cref="CentresInput"/>); only the firing (feature, value) pairs come back, never dense [rows, d_sae].</summary>
    public SparseRows EncodeSparse(DeviceBuffer x, int rows)
    {
        if (x.Length < (long)rows * Config.DIn) throw new ArgumentException($"x holds {x.Length} floats, expected at least {rows}×{Config.DIn}");
        return _backend.Sae.Sparsify(PreActivations(x, rows, CentresInput), rows, Config.DSae, _rule);
    }

    /// <summary>Dense encode of x [rows, d_in], already in the SAE's input convention (centred when it should be):
    /// hidden_pre and feature_acts as host arrays, for when they are asked for (<c>run --sae</c>).</summary>
    public SaeEncoding Encode(float[] x, int rows)
    {
        int dSae = Config.DSae;
        if (x.Length != (long)rows * Config.DIn) throw new ArgumentException($"x has {x.Length} values, expected {rows}×{Config.DIn}");
        using var xb = _backend.Upload(x);
        var pre = PreActivations(xb, rows, center: false);
        var hiddenPre = GC.AllocateUninitializedArray<float>(checked(rows * dSae));
        _backend.Download(pre, hiddenPre);
        return new SaeEncoding(hiddenPre, _backend.Sae.Sparsify(pre, rows, dSae, _rule).ToDense(), rows, dSae);
    }

    /// <summary>x̂ [rows, d_in] from feature activations [rows, d_sae] (in the original activation space when normalised).</summary>
    public float[] Decode(float[] acts, int rows, float[]? originalInput = null)
    {
        int dIn = Config.DIn, dSae = Config.DSae;
        var f = (float[])acts.Clone();
        if (_decoderNorms is not null)
            for (int r = 0; r < rows; r++) System.Numerics.Tensors.TensorPrimitives.Divide(f.AsSpan(r * dSae, dSae), _decoderNorms, f.AsSpan(r * dSae, dSae));
        var output = new float[(long)rows * dIn];
        using (var fb = _backend.Upload(f))
        using (var yb = _backend.Allocate(output.LongLength))
        {
            _backend.Linear.Forward(fb, _dec, _bDec, yb, rows);
            _backend.Download(yb, output);
        }
        if (Config.Normalization != RowNormalization.None)
        {
            if (originalInput is null) throw new ArgumentException("a normalised SAE decodes into the input space only with the original input (for its scale)");
            var inRow = new float[dIn];
            for (int r = 0; r < rows; r++)
            {
                originalInput.AsSpan(r * dIn, dIn).CopyTo(inRow);
                SaeReference.NormalizeRow(inRow, Config.Normalization, false, default, out float mu, out float scale);
                var o = output.AsSpan(r * dIn, dIn);
                for (int i = 0; i < dIn; i++) o[i] = o[i] * scale + mu;
            }
        }
        return output;
    }

    public void Dispose()
    {
        _input?.Dispose();
        _pre?.Dispose();
        _threshold?.Dispose();
        _enc.Dispose();
        _dec.Dispose();
        _bEnc.Dispose();
        _bDec.Dispose();
    }
}

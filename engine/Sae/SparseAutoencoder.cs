using PolyEngine.Formats;
using PolyEngine.Hooks;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;

namespace PolyEngine.Sae;

/// <summary>One SAE's encode output for a batch of activation rows.</summary>
public sealed record SaeEncoding(float[] HiddenPre, float[] FeatureActs, int Rows, int DSae);

/// <summary>
/// A sparse autoencoder (SAELens conventions, FORMATS.md §4.1): W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec
/// (+ threshold for JumpReLU). Encode: x' = norm_in(x); s = x' − b_dec (when apply_b_dec_to_input); pre = s·W_enc + b_enc;
/// standard f = ReLU(pre), JumpReLU f = ReLU(pre)·[pre &gt; θ], TopK f = ReLU of the k largest pre (the rest 0).
/// Decode: x̂ = norm_out(f·W_dec + b_dec). The GEMMs run on the model's backend; the activation functions on the host.
/// </summary>
public sealed class SparseAutoencoder : IDisposable
{
    readonly IBackend _backend;
    readonly PackedWeight _enc, _dec;
    readonly DeviceBuffer _bEnc, _bDec;
    readonly float[] _bDecHost;
    readonly float[]? _threshold;
    readonly float[]? _decoderNorms;   // ‖W_dec[j]‖ for TopK with rescale_acts_by_decoder_norm

    public SaeConfig Config { get; }

    SparseAutoencoder(SaeConfig config, IBackend backend, float[] wEnc, WeightLayout encLayout, float[] bEnc, float[] wDec, float[] bDec, float[]? threshold)
    {
        Config = config;
        _backend = backend;
        _enc = backend.PackWeight(wEnc, config.DIn, config.DSae, encLayout);
        _dec = backend.PackWeight(wDec, config.DSae, config.DIn, WeightLayout.InOut);
        _bEnc = backend.Upload(bEnc);
        _bDec = backend.Upload(bDec);
        _bDecHost = bDec;
        _threshold = threshold;
        if (config.RescaleActsByDecoderNorm)
        {
            _decoderNorms = new float[config.DSae];
            for (int j = 0; j < config.DSae; j++)
                _decoderNorms[j] = (float)Math.Sqrt(wDec.AsSpan(j * config.DIn, config.DIn).ToArray().Sum(v => (double)v * v));
        }
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

    static float[] Read(SafeTensorsFile f, string name, params long[] shape)
    {
        if (!f.Contains(name)) throw new PolyEngineException($"{f.Path}: missing tensor '{name}'; the SAE weights do not match cfg.json");
        var info = f.Info(name);
        if (!info.Shape.SequenceEqual(shape))
            throw new PolyEngineException($"{f.Path}: tensor '{name}' has shape {info.ShapeText}, cfg.json implies [{string.Join(", ", shape)}]");
        var values = f.ReadFloat32(name);
        int nan = Array.FindIndex(values, v => !float.IsFinite(v));
        if (nan >= 0) throw new PolyEngineException($"{f.Path}: tensor '{name}' holds a non-finite value ({values[nan]}) at flat index {nan}; the SAE file is corrupt");
        return values;
    }

    /// <summary>Checks that this SAE fits <paramref name="spec"/>: its hook exists and d_in equals the hook's width.</summary>
    public void CheckAgainst(ModelSpec spec)
    {
        var hooks = HookName.AllFor(spec);
        if (!hooks.Contains(Config.Hook))
            throw new PolyEngineException($"{Config.Folder}: the SAE reads '{Config.Hook}', which this {spec.Architecture} model does not have");
        var shape = Config.Hook.ShapeFor(spec, 1, 1);
        long width = Config.Hook.Point == HookPoint.AttnPattern ? 0 : shape.Skip(2).Aggregate(1L, (a, b) => a * b);
        if (width != Config.DIn)
            throw new PolyEngineException($"{Config.Folder}: d_in {Config.DIn} does not equal the width {width} of '{Config.Hook}' in this model; the SAE belongs to another model");
    }

    /// <summary>Encodes rows of the hook activation x [rows, d_in] (already in the SAE's input convention).</summary>
    /// <param name="reuse">An earlier encoding whose arrays may be overwritten (scans pass theirs: no fresh [rows, d_sae]
    /// arrays per batch); the result's arrays are then at least, not exactly, rows·d_sae long.</param>
    public SaeEncoding Encode(float[] x, int rows, SaeEncoding? reuse = null)
    {
        int dIn = Config.DIn, dSae = Config.DSae;
        if (x.Length != (long)rows * dIn) throw new ArgumentException($"x has {x.Length} values, expected {rows}×{dIn}");
        var input = (float[])x.Clone();
        for (int r = 0; r < rows; r++)
        {
            var row = input.AsSpan(r * dIn, dIn);
            NormalizeIn(row, out _, out _);
            if (Config.ApplyBDecToInput) System.Numerics.Tensors.TensorPrimitives.Subtract(row, _bDecHost, row);
        }
        long n = (long)rows * dSae;
        var pre = reuse is not null && reuse.HiddenPre.LongLength >= n ? reuse.HiddenPre : GC.AllocateUninitializedArray<float>(checked((int)n));
        var acts = reuse is not null && reuse.FeatureActs.LongLength >= n ? reuse.FeatureActs : GC.AllocateUninitializedArray<float>(checked((int)n));
        // On a host backend the GEMM reads x and writes pre in place; on a device, upload and download.
        using (var xb = _backend.TryWrapHost(input) ?? _backend.Upload(input))
        {
            if (_backend.TryWrapHost(pre) is { } wrapped) _backend.Linear(xb, _enc, _bEnc, wrapped, rows);
            else
            {
                using var yb = _backend.Allocate(n);
                _backend.Linear(xb, _enc, _bEnc, yb, rows);
                _backend.Download(yb, pre.AsSpan(0, (int)n));
            }
        }
        if (_decoderNorms is not null)
            for (int r = 0; r < rows; r++) System.Numerics.Tensors.TensorPrimitives.Multiply(pre.AsSpan(r * dSae, dSae), _decoderNorms, pre.AsSpan(r * dSae, dSae));
        Parallel.For(0, rows, r => Activate(pre.AsSpan(r * dSae, dSae), acts.AsSpan(r * dSae, dSae)));
        return new SaeEncoding(pre, acts, rows, dSae);
    }

    void Activate(ReadOnlySpan<float> pre, Span<float> f)
    {
        switch (Config.Architecture)
        {
            case SaeArchitecture.Standard:
                for (int j = 0; j < pre.Length; j++) f[j] = Math.Max(pre[j], 0f);
                break;
            case SaeArchitecture.JumpRelu:
                for (int j = 0; j < pre.Length; j++) f[j] = pre[j] > _threshold![j] ? Math.Max(pre[j], 0f) : 0f;   // strict >, as SAELens
                break;
            case SaeArchitecture.TopK:
                f.Clear();
                foreach (int j in TopKIndices(pre, Config.K)) f[j] = Math.Max(pre[j], 0f);
                break;
        }
    }

    /// <summary>Indices (ascending) of the k largest values, ties broken towards the lower index: one pass with a size-k
    /// min-heap, O(F log k) — a full sort per token made TopK SAEs 50× slower at F = 24,576.</summary>
    internal static int[] TopKIndices(ReadOnlySpan<float> values, int k)
    {
        k = Math.Min(k, values.Length);
        var heap = new int[k];   // indices; heap[0] is the weakest kept (smallest value, then largest index)
        int size = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (size < k)
            {
                int c = size++;
                heap[c] = i;
                while (c > 0 && Weaker(values, heap[c], heap[(c - 1) / 2])) { (heap[c], heap[(c - 1) / 2]) = (heap[(c - 1) / 2], heap[c]); c = (c - 1) / 2; }
            }
            else if (Weaker(values, heap[0], i))
            {
                heap[0] = i;
                for (int c = 0; ;)
                {
                    int l = 2 * c + 1, r = l + 1, m = c;
                    if (l < k && Weaker(values, heap[l], heap[m])) m = l;
                    if (r < k && Weaker(values, heap[r], heap[m])) m = r;
                    if (m == c) break;
                    (heap[c], heap[m]) = (heap[m], heap[c]);
                    c = m;
                }
            }
        }
        Array.Sort(heap);
        return heap;
    }

    static bool Weaker(ReadOnlySpan<float> v, int a, int b) => v[a] < v[b] || (v[a] == v[b] && a > b);

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
            _backend.Linear(fb, _dec, _bDec, yb, rows);
            _backend.Download(yb, output);
        }
        if (Config.Normalization != SaeNormalization.None)
        {
            if (originalInput is null) throw new ArgumentException("a normalised SAE decodes into the input space only with the original input (for its scale)");
            for (int r = 0; r < rows; r++)
            {
                var inRow = originalInput.AsSpan(r * dIn, dIn).ToArray();
                NormalizeIn(inRow, out float mu, out float scale);
                var o = output.AsSpan(r * dIn, dIn);
                for (int i = 0; i < dIn; i++) o[i] = o[i] * scale + mu;
            }
        }
        return output;
    }

    /// <summary>In-place input normalisation; <paramref name="mu"/> and <paramref name="scale"/> undo it (x = x'·scale + mu).</summary>
    void NormalizeIn(Span<float> row, out float mu, out float scale)
    {
        mu = 0f;
        scale = 1f;
        switch (Config.Normalization)
        {
            case SaeNormalization.LayerNorm:
                // SAELens: mu = mean, std = unbiased std of x − mu, x' = (x − mu)/(std + 1e-5)
                double mean = 0, ss = 0;
                foreach (var v in row) mean += v;
                mean /= row.Length;
                foreach (var v in row) ss += (v - mean) * (v - mean);
                double std = Math.Sqrt(ss / Math.Max(1, row.Length - 1));
                mu = (float)mean;
                scale = (float)(std + 1e-5);
                for (int i = 0; i < row.Length; i++) row[i] = (float)((row[i] - mean) / (std + 1e-5));
                break;
            case SaeNormalization.ConstantNormRescale:
                double norm = Math.Sqrt(row.ToArray().Sum(v => (double)v * v));
                float c = (float)(Math.Sqrt(row.Length) / norm);
                scale = 1f / c;
                for (int i = 0; i < row.Length; i++) row[i] *= c;
                break;
        }
    }

    public void Dispose()
    {
        _enc.Dispose();
        _dec.Dispose();
        _bEnc.Dispose();
        _bDec.Dispose();
    }
}

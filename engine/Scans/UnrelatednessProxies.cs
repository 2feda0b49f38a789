using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Scans;

/// <summary>
/// The logit-lens proxy of relatedness: the cosine of two features' output directions over the vocabulary,
/// L_i = W_U·d̂_i (docs/METHOD.md §2.7: W_dec · W_U). Never materialises L [n, d_vocab]: with the Gram matrix G = W_Uᵀ·W_U
/// [d_model, d_model], L_a·L_b = d̂_aᵀ·G·d̂_b, so one [n, d]·[d, d] GEMM (V = U·G) gives every dot product as V_a·d̂_b.
/// </summary>
public sealed class LogitLens
{
    readonly float[] _unit;   // [n, d] unit decoder rows (compact)
    readonly float[] _gu;     // [n, d] U·G
    readonly float[] _norm;   // ‖L_a‖ = √(V_a·d̂_a)
    readonly int _d;

    /// <summary>G = headᵀ·head [d, d] for an LM head [d_vocab, d] (W_U transposed, as HF stores it), on the backend.</summary>
    public static float[] Gram(IBackend backend, float[] head, int vocab, int d)
    {
        var headT = new float[(long)d * vocab];   // [d, d_vocab]
        for (int v = 0; v < vocab; v++)
            for (int i = 0; i < d; i++) headT[(long)i * vocab + v] = head[(long)v * d + i];
        var g = new float[d * d];
        using var w = backend.PackWeight(head, vocab, d, WeightLayout.InOut);   // [d_vocab, d] as a d_vocab → d operator
        using var x = backend.Upload(headT);
        using var y = backend.Allocate(g.Length);
        backend.Linear.Forward(x, w, null, y, d);
        backend.Download(y, g);
        return g;
    }

    public LogitLens(IBackend backend, float[] gram, float[] unit, int d)
    {
        _unit = unit;
        _d = d;
        int n = unit.Length / d;
        _gu = new float[unit.Length];
        using (var w = backend.PackWeight(gram, d, d, WeightLayout.InOut))
        using (var x = backend.Upload(unit))
        using (var y = backend.Allocate(unit.Length))
        {
            backend.Linear.Forward(x, w, null, y, n);
            backend.Download(y, _gu);
        }
        _norm = new float[n];
        for (int a = 0; a < n; a++)
            _norm[a] = MathF.Sqrt(Math.Max(0f, System.Numerics.Tensors.TensorPrimitives.Dot(_gu.AsSpan(a * d, d), unit.AsSpan(a * d, d))));
    }

    /// <summary>cos(L_a, L_b) for compact features a and b (NaN when a direction has no logit effect).</summary>
    public float Cosine(int a, int b)
    {
        float denom = _norm[a] * _norm[b];
        if (denom == 0) return float.NaN;
        return System.Numerics.Tensors.TensorPrimitives.Dot(_gu.AsSpan(a * _d, _d), _unit.AsSpan(b * _d, _d)) / denom;
    }
}

/// <summary>
/// The co-activation proxy of relatedness, read from a <c>polyengine coactivate</c> output folder: the triangle-packed
/// pair counts and marginals of one SAE in <c>coactivation.safetensors</c> (memory-mapped, read per pair).
/// Jaccard = count_ab / (count_a + count_b − count_ab), NaN when neither feature fired.
/// </summary>
public sealed class CoactivationLookup : IDisposable
{
    readonly SafeTensorsFile _file;
    readonly SafeTensorInfo _pairs;
    readonly long[] _marginals;

    public CoactivationLookup(string folder, string saeName, int dSae)
    {
        string path = Directory.Exists(folder) ? Path.Combine(folder, "coactivation.safetensors") : folder;
        if (!File.Exists(path)) throw new PolyEngineException($"--coactivation {folder}: no coactivation.safetensors; give the --out folder of a `polyengine coactivate` run");
        _file = SafeTensorsFile.Open(path);
        try
        {
            if (!_file.Contains($"{saeName}.pairs"))
                throw new PolyEngineException($"--coactivation {path}: no counts for SAE '{saeName}' (it has " +
                    string.Join(", ", _file.Tensors.Where(t => t.Name.EndsWith(".pairs")).Select(t => t.Name[..^6]).Order()) + "); run coactivate with this SAE folder");
            _pairs = _file.Info($"{saeName}.pairs");
            _marginals = _file.ReadInt64($"{saeName}.marginals");
            if (_marginals.Length != dSae || _pairs.ElementCount != (long)dSae * (dSae - 1) / 2)
                throw new PolyEngineException($"--coactivation {path}: SAE '{saeName}' was counted with {_marginals.Length} features, this one has d_sae {dSae}");
            Units = long.Parse(_file.Metadata.GetValueOrDefault("units", "0"), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch
        {
            _file.Dispose();
            throw;
        }
    }

    public long Units { get; }

    /// <summary>Jaccard of features a and b (feature indices, not compact ones).</summary>
    public double Jaccard(int a, int b)
    {
        if (a == b) return 1;
        if (a > b) (a, b) = (b, a);
        long ab = _file.U32At(_pairs, CoactivationCounter.Index(a, b, _marginals.Length));
        double union = _marginals[a] + _marginals[b] - ab;
        return union == 0 ? double.NaN : ab / union;
    }

    /// <summary>The distribution of Jaccard over every pair that fired together at least once: pairs per bin of log10
    /// Jaccard, <paramref name="bins"/> equal bins over [<paramref name="log10Min"/>, 0] (lower values in the first), and the
    /// pairs that never fired together. Reads the triangle a row at a time.</summary>
    public (long[] Histogram, long Never) JaccardLog10Histogram(int bins, double log10Min)
    {
        var histogram = new long[bins];
        long never = 0;
        int f = _marginals.Length;
        var row = new uint[Math.Max(1, f - 1)];
        for (int a = 0; a < f - 1; a++)
        {
            int len = f - a - 1;
            _file.CopyU32(_pairs.Name, CoactivationCounter.Index(a, a + 1, f), row.AsSpan(0, len));
            for (int k = 0; k < len; k++)
            {
                long ab = row[k];
                if (ab == 0) { never++; continue; }
                double j = ab / (double)(_marginals[a] + _marginals[a + 1 + k] - ab);
                int bin = (int)Math.Floor((Math.Log10(j) - log10Min) / -log10Min * bins);
                histogram[Math.Clamp(bin, 0, bins - 1)]++;
            }
        }
        return (histogram, never);
    }

    public void Dispose() => _file.Dispose();
}

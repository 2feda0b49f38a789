using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Scans;

/// <summary>Options of the interference scan.</summary>
public sealed record InterferenceOptions
{
    /// <summary>Semantic-unrelatedness thresholds τ: a pair is unrelated under τ when the cosine of its explanation
    /// embeddings is below τ (the paper's 0.4, 0.3, 0.2, 0.15).</summary>
    public float[] Taus { get; init; } = [0.4f, 0.3f, 0.2f, 0.15f];

    /// <summary>Partners kept per (τ, target, bin): the strongest interference first.</summary>
    public int PartnersPerBin { get; init; } = 10;

    /// <summary>Top partners by cosine kept per feature (0: none).</summary>
    public int TopN { get; init; }

    /// <summary>Features per GEMM tile side: a tile is Tile × Tile cosines.</summary>
    public int Tile { get; init; } = 2048;

    /// <summary>Host threads for the binning (0: all cores).</summary>
    public int Threads { get; init; }
}

/// <summary>
/// One SAE's interference statistics, over n features (compact indices 0..n−1, the scan's features in ascending
/// feature order): the exact histogram of all n·(n−1)/2 pair cosines, the five-bin counts, and — with explanation
/// embeddings — per τ the pairs of each bin that are semantically unrelated, every feature's count of unrelated
/// partners per bin (a feature is a qualified target under τ when all five are nonzero) and its strongest partners
/// per bin; optionally every feature's top-N partners by cosine. Saved and restored whole by checkpoints.
/// </summary>
public sealed class InterferenceState
{
    public InterferenceState(int n, int taus, bool semantic, int partnersPerBin, int topN)
    {
        N = n;
        Taus = taus;
        Fine = new long[InterferenceBins.FineCount];
        Bins = new long[InterferenceBins.Count];
        if (semantic)
        {
            Unrelated = new long[taus * InterferenceBins.Count];
            PartnerCounts = new int[checked(taus * n * InterferenceBins.Count)];
            Partners = new TopHeaps(taus * n * InterferenceBins.Count, partnersPerBin);
        }
        if (topN > 0) Top = new TopHeaps(n, topN);
    }

    public int N { get; }
    public int Taus { get; }
    /// <summary>Pairs per fine bin (<see cref="InterferenceBins.FineOf"/>).</summary>
    public long[] Fine { get; private set; }
    /// <summary>Pairs per five-bin bin.</summary>
    public long[] Bins { get; private set; }
    /// <summary>[τ, bin]: pairs in the bin whose explanation similarity is below τ (null without explanations).</summary>
    public long[]? Unrelated { get; private set; }
    /// <summary>[τ, feature, bin]: unrelated partners of the feature in the bin (null without explanations).</summary>
    public int[]? PartnerCounts { get; private set; }
    /// <summary>Owner (τ·n + feature)·5 + bin: the strongest unrelated partners (compact indices) by cosine.</summary>
    public TopHeaps? Partners { get; private set; }
    /// <summary>Owner = feature: its top-N partners by cosine, related or not.</summary>
    public TopHeaps? Top { get; private set; }
    /// <summary>Tiles finished (row-major over the upper triangle of tiles).</summary>
    public long TilesDone { get; internal set; }

    public long Pairs => (long)N * (N - 1) / 2;

    public static int Owner(int tau, int feature, int bin, int n) => (tau * n + feature) * InterferenceBins.Count + bin;

    /// <summary>Whether <paramref name="feature"/> has an unrelated partner in every bin under τ number <paramref name="tau"/>.</summary>
    public bool Qualified(int tau, int feature)
    {
        if (PartnerCounts is null) return false;
        int o = Owner(tau, feature, 0, N);
        for (int b = 0; b < InterferenceBins.Count; b++) if (PartnerCounts[o + b] == 0) return false;
        return true;
    }

    internal void Save(SafeTensorsWriter w, string prefix)
    {
        w.Add(prefix + "fine", Fine, Fine.Length).Add(prefix + "bins", Bins, Bins.Length).Add(prefix + "tiles_done", [TilesDone], 1);
        if (Unrelated is not null) w.Add(prefix + "unrelated", Unrelated, Unrelated.Length);
        if (PartnerCounts is not null) w.Add(prefix + "partner_counts", PartnerCounts, PartnerCounts.Length);
        foreach (var (name, heaps) in new[] { ("partners", Partners), ("top", Top) })
        {
            if (heaps is null) continue;
            var (scores, ids, sizes) = heaps.State;
            w.Add($"{prefix}{name}.scores", scores, scores.Length).Add($"{prefix}{name}.ids", ids, ids.Length).Add($"{prefix}{name}.sizes", sizes, sizes.Length);
        }
    }

    internal void Restore(SafeTensorsFile f, string prefix)
    {
        long[] Longs(string name, long[] like)
        {
            var v = f.ReadInt64(prefix + name);
            if (v.Length != like.Length) throw new PolyEngineException($"{f.Path}: checkpoint tensor '{prefix}{name}' does not match the scan; delete it or use --overwrite");
            return v;
        }
        int[] Ints(string name) => f.ReadInt64(prefix + name).Select(v => (int)v).ToArray();
        Fine = Longs("fine", Fine);
        Bins = Longs("bins", Bins);
        TilesDone = f.ReadInt64(prefix + "tiles_done")[0];
        if (Unrelated is not null) Unrelated = Longs("unrelated", Unrelated);
        if (PartnerCounts is not null)
        {
            var counts = Ints("partner_counts");
            if (counts.Length != PartnerCounts.Length) throw new PolyEngineException($"{f.Path}: checkpoint partner counts do not match the scan; delete it or use --overwrite");
            PartnerCounts = counts;
        }
        if (Partners is not null) Partners = RestoreHeaps("partners", Partners);
        if (Top is not null) Top = RestoreHeaps("top", Top);

        TopHeaps RestoreHeaps(string name, TopHeaps like) =>
            TopHeaps.Restore(like.Owners, like.K, f.ReadFloat32($"{prefix}{name}.scores"), Ints($"{name}.ids"), Ints($"{name}.sizes"));
    }
}

/// <summary>
/// The exhaustive interference scan of one SAE (PAPER.md §2.4), in bounded memory: the unit decoder rows U [n, d] (and
/// the unit explanation embeddings M [n, e]) are cut into tiles of T features; for each tile pair (I ≤ J) of the upper
/// triangle the backend computes the cosines U_I·U_Jᵀ (and the similarities M_I·M_Jᵀ) as GEMMs, and the host bins
/// the pairs a &lt; b of the tile: once for the histograms, then from each side for the per-feature counts and partner
/// heaps (the tile transposed for the column side, so every feature's state is written by one thread). Never more than
/// a few T² values exist; the result does not depend on the thread count or on where a run was resumed.
/// </summary>
public static class InterferenceScan
{
    /// <summary>Runs (or continues) the scan. <paramref name="unit"/> is [n, d] with unit rows; <paramref name="embed"/>
    /// [n, e] with unit rows or null. <paramref name="tileDone"/> is called after each tile (progress, checkpoints).</summary>
    public static InterferenceState Run(IBackend backend, float[] unit, int d, float[]? embed, int e, InterferenceOptions options,
        InterferenceState? resume = null, Action<InterferenceState, long, long>? tileDone = null)
    {
        int n = unit.Length / d;
        if ((long)n * d != unit.Length) throw new ArgumentException($"unit has {unit.Length} values, not a multiple of d = {d}");
        if (embed is not null && embed.LongLength != (long)n * e) throw new ArgumentException($"embed has {embed.Length} values, expected {n}×{e}");
        var state = resume ?? new InterferenceState(n, options.Taus.Length, embed is not null, options.PartnersPerBin, options.TopN);
        int tile = Math.Max(1, options.Tile);
        int tiles = (n + tile - 1) / tile;
        long totalTiles = (long)tiles * (tiles + 1) / 2;
        if (state.TilesDone >= totalTiles || n < 2) { state.TilesDone = totalTiles; return state; }
        var taus = options.Taus;
        int threads = options.Threads > 0 ? options.Threads : Environment.ProcessorCount;

        var packedU = new PackedWeight?[tiles];
        var packedM = new PackedWeight?[tiles];
        var cos = new float[(long)tile * tile];
        var sim = embed is null ? null : new float[cos.Length];
        var cosT = new float[cos.Length];
        var simT = embed is null ? null : new float[cos.Length];
        try
        {
            long index = 0;
            for (int ti = 0; ti < tiles; ti++)
            {
                int i0 = ti * tile, rows = Math.Min(tile, n - i0);
                if (index + (tiles - ti) <= state.TilesDone) { index += tiles - ti; continue; }
                using var xu = backend.Upload(unit.AsSpan(i0 * d, rows * d));
                using var xm = embed is null ? null : backend.Upload(embed.AsSpan(i0 * e, rows * e));
                for (int tj = ti; tj < tiles; tj++, index++)
                {
                    if (index < state.TilesDone) continue;
                    int j0 = tj * tile, cols = Math.Min(tile, n - j0);
                    packedU[tj] ??= backend.PackWeight(unit.AsSpan(j0 * d, cols * d), d, cols, WeightLayout.OutIn);
                    Gemm(backend, xu, packedU[tj]!, rows, cols, cos);
                    if (embed is not null)
                    {
                        packedM[tj] ??= backend.PackWeight(embed.AsSpan(j0 * e, cols * e), e, cols, WeightLayout.OutIn);
                        Gemm(backend, xm!, packedM[tj]!, rows, cols, sim!);
                    }
                    Accumulate(state, taus, cos, sim, rows, cols, i0, j0, rowsAreTargets: true, threads);
                    if (state.PartnerCounts is not null || state.Top is not null)
                    {
                        Transpose(cos, cosT, rows, cols);
                        if (sim is not null) Transpose(sim, simT!, rows, cols);
                        Accumulate(state, taus, cosT, simT, cols, rows, j0, i0, rowsAreTargets: false, threads);
                    }
                    state.TilesDone = index + 1;
                    tileDone?.Invoke(state, index + 1, totalTiles);
                }
            }
        }
        finally
        {
            foreach (var p in packedU.Concat(packedM)) p?.Dispose();
        }
        return state;
    }

    /// <summary>y [rows, cols] = x [rows, k] · packed on the backend, into the host array <paramref name="y"/>.</summary>
    static void Gemm(IBackend backend, DeviceBuffer x, PackedWeight w, int rows, int cols, float[] y)
    {
        if (backend.TryWrapHost(y) is { } wrapped)
        {
            backend.Linear(x, w, null, wrapped, rows);   // written in place: y holds [rows, cols] from index 0
            return;
        }
        using var yb = backend.Allocate((long)rows * cols);
        backend.Linear(x, w, null, yb, rows);
        backend.Download(yb, y.AsSpan(0, rows * cols));
    }

    static void Transpose(float[] src, float[] dst, int rows, int cols)
    {
        const int B = 32;
        for (int r0 = 0; r0 < rows; r0 += B)
            for (int c0 = 0; c0 < cols; c0 += B)
                for (int r = r0; r < Math.Min(rows, r0 + B); r++)
                    for (int c = c0; c < Math.Min(cols, c0 + B); c++)
                        dst[(long)c * rows + r] = src[(long)r * cols + c];
    }

    /// <summary>Bins the tile's pairs (a, b) with a &lt; b. Rows are global features r0 + r, columns c0 + c. With
    /// <paramref name="rowsAreTargets"/> the rows are the tile's row side (partners b &gt; a) and the histograms are counted;
    /// otherwise the tile is transposed (rows are the column side, partners a &lt; b) and only per-feature state changes.</summary>
    static void Accumulate(InterferenceState s, float[] taus, float[] cos, float[]? sim, int rows, int cols, int r0, int c0,
        bool rowsAreTargets, int threads)
    {
        int n = s.N, nt = taus.Length;
        var counts = s.PartnerCounts;
        var partners = s.Partners;
        var top = s.Top;
        int fineLen = InterferenceBins.FineCount, binLen = InterferenceBins.Count;
        object merge = new();
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads },
            () => rowsAreTargets ? new long[fineLen + binLen + nt * binLen] : null,
            (r, _, local) =>
            {
                int target = r0 + r;
                // rows side: partners b > a; column side (transposed): partners a < b
                int cStart = rowsAreTargets ? Math.Max(0, target + 1 - c0) : 0;
                int cEnd = rowsAreTargets ? cols : Math.Min(cols, target - c0);
                long o = (long)r * cols;
                for (int c = cStart; c < cEnd; c++)
                {
                    float v = InterferenceBins.Clamp(cos[o + c]);
                    int partner = c0 + c;
                    int bin = InterferenceBins.Of(v);
                    if (local is not null)
                    {
                        local[InterferenceBins.FineOf(v)]++;
                        if (bin >= 0) local[fineLen + bin]++;
                    }
                    top?.Offer(target, v, partner);
                    if (bin < 0 || sim is null) continue;
                    float similarity = sim[o + c];
                    for (int t = 0; t < nt; t++)
                    {
                        if (!(similarity < taus[t])) continue;
                        if (local is not null) local[fineLen + binLen + t * binLen + bin]++;
                        int owner = InterferenceState.Owner(t, target, bin, n);
                        counts![owner]++;
                        if (partners!.Admits(owner, v)) partners.Offer(owner, v, partner);
                    }
                }
                return local;
            },
            local =>
            {
                if (local is null) return;
                lock (merge)
                {
                    for (int i = 0; i < fineLen; i++) s.Fine[i] += local[i];
                    for (int i = 0; i < binLen; i++) s.Bins[i] += local[fineLen + i];
                    if (s.Unrelated is not null)
                        for (int i = 0; i < nt * binLen; i++) s.Unrelated[i] += local[fineLen + binLen + i];
                }
            });
    }
}

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

    /// <summary>The tile rows this run scans (<see cref="InterferenceScan.ShardOfRow"/>); the shards' states add up to the
    /// whole scan's (<see cref="InterferenceState.Add"/>).</summary>
    public Shard Shard { get; init; } = Shard.All;
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
        // A feature has at most n − 1 partners: larger requests keep them all (and allocate no more than that).
        partnersPerBin = Math.Min(partnersPerBin, Math.Max(1, n - 1));
        topN = Math.Min(topN, Math.Max(1, n - 1));
        long heapBytes = (semantic ? (long)taus * n * InterferenceBins.Count * (partnersPerBin * 8L + 8) : 0) + (topN > 0 ? (long)n * topN * 8 : 0);
        MemoryInfo.Check(heapBytes, $"the partner lists of {n:N0} features (--partners {partnersPerBin}, --top {topN})",
            "give a smaller --partners or --top");
        N = n;
        Taus = taus;
        Fine = new long[InterferenceBins.FineCount];
        Bins = new long[InterferenceBins.Count];
        if (semantic)
        {
            Unrelated = new long[taus * InterferenceBins.Count];
            SimilarityFine = new long[InterferenceBins.FineCount];
            SimilarityBelow = new long[taus];
            PartnerCounts = new int[checked(taus * n * InterferenceBins.Count)];
            Partners = new TopHeaps<float>(taus * n * InterferenceBins.Count, partnersPerBin);
        }
        if (topN > 0) Top = new TopHeaps<float>(n, topN);
    }

    public int N { get; }
    public int Taus { get; }
    /// <summary>Pairs per fine bin (<see cref="InterferenceBins.FineOf"/>).</summary>
    public long[] Fine { get; private set; }
    /// <summary>Pairs per five-bin bin.</summary>
    public long[] Bins { get; private set; }
    /// <summary>[τ, bin]: pairs in the bin whose explanation similarity is below τ (null without explanations).</summary>
    public long[]? Unrelated { get; private set; }
    /// <summary>Pairs per fine bin of their explanation similarity, every pair whatever its cosine (null without explanations).</summary>
    public long[]? SimilarityFine { get; private set; }
    /// <summary>[τ]: pairs whose explanation similarity is below τ, every pair whatever its cosine (the paper's App. F
    /// "x % of pairs &lt; 0.15"; null without explanations).</summary>
    public long[]? SimilarityBelow { get; private set; }
    /// <summary>[τ, feature, bin]: unrelated partners of the feature in the bin (null without explanations).</summary>
    public int[]? PartnerCounts { get; private set; }
    /// <summary>Owner (τ·n + feature)·5 + bin: the strongest unrelated partners (compact indices) by cosine.</summary>
    public TopHeaps<float>? Partners { get; private set; }
    /// <summary>Owner = feature: its top-N partners by cosine, related or not.</summary>
    public TopHeaps<float>? Top { get; private set; }
    /// <summary>Tiles finished (row-major over the upper triangle of tiles).</summary>
    public long TilesDone { get; internal set; }

    public long Pairs => (long)N * (N - 1) / 2;

    /// <summary>Adds another shard's state of the same scan (same features and options): the counts add, and the partner
    /// heaps keep the strongest of both (a total order, so the result is the whole scan's whatever the split).</summary>
    public void Add(InterferenceState other)
    {
        if (other.N != N || other.Taus != Taus || (other.PartnerCounts is null) != (PartnerCounts is null) || (other.Top is null) != (Top is null))
            throw new PolyEngineException("the interference states to add are of different scans (features, τ or options differ)");
        static void Sum(long[]? into, long[]? from) { if (into is not null) for (int i = 0; i < into.Length; i++) into[i] += from![i]; }
        Sum(Fine, other.Fine);
        Sum(Bins, other.Bins);
        Sum(Unrelated, other.Unrelated);
        Sum(SimilarityFine, other.SimilarityFine);
        Sum(SimilarityBelow, other.SimilarityBelow);
        if (PartnerCounts is not null) for (int i = 0; i < PartnerCounts.Length; i++) PartnerCounts[i] += other.PartnerCounts![i];
        foreach (var (mine, theirs) in new[] { (Partners, other.Partners), (Top, other.Top) })
        {
            if (mine is null) continue;
            for (int o = 0; o < mine.Owners; o++)
                foreach (var (id, score) in theirs!.Sorted(o))
                    if (mine.Admits(o, score)) mine.Offer(o, score, id);
        }
        TilesDone = Math.Max(TilesDone, other.TilesDone);
    }

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
        if (SimilarityFine is not null) w.Add(prefix + "similarity_fine", SimilarityFine, SimilarityFine.Length);
        if (SimilarityBelow is not null) w.Add(prefix + "similarity_below", SimilarityBelow, SimilarityBelow.Length);
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
            if (!f.Contains(prefix + name))
                throw new PolyEngineException($"{f.Path}: checkpoint has no '{prefix}{name}' (an older version wrote it); delete it or use --overwrite");
            var v = f.ReadInt64(prefix + name);
            if (v.Length != like.Length) throw new PolyEngineException($"{f.Path}: checkpoint tensor '{prefix}{name}' does not match the scan; delete it or use --overwrite");
            return v;
        }
        int[] Ints(string name) => f.ReadInt64(prefix + name).Select(v => (int)v).ToArray();
        Fine = Longs("fine", Fine);
        Bins = Longs("bins", Bins);
        TilesDone = f.ReadInt64(prefix + "tiles_done")[0];
        if (Unrelated is not null) Unrelated = Longs("unrelated", Unrelated);
        if (SimilarityFine is not null) SimilarityFine = Longs("similarity_fine", SimilarityFine);
        if (SimilarityBelow is not null) SimilarityBelow = Longs("similarity_below", SimilarityBelow);
        if (PartnerCounts is not null)
        {
            var counts = Ints("partner_counts");
            if (counts.Length != PartnerCounts.Length) throw new PolyEngineException($"{f.Path}: checkpoint partner counts do not match the scan; delete it or use --overwrite");
            PartnerCounts = counts;
        }
        if (Partners is not null) Partners = RestoreHeaps("partners", Partners);
        if (Top is not null) Top = RestoreHeaps("top", Top);

        TopHeaps<float> RestoreHeaps(string name, TopHeaps<float> like) =>
            TopHeaps<float>.Restore(like.Owners, like.K, f.ReadFloat32($"{prefix}{name}.scores"), Ints($"{name}.ids"), Ints($"{name}.sizes"));
    }
}

/// <summary>
/// The exhaustive interference scan of one SAE (docs/METHOD.md §2.4), in bounded memory: the unit decoder rows U [n, d] (and
/// the unit explanation embeddings M [n, e]) are cut into tiles of T features; for each tile pair (I ≤ J) of the upper
/// triangle the backend computes the cosines U_I·U_Jᵀ (and the similarities M_I·M_Jᵀ) as GEMMs, and the host bins
/// the pairs a &lt; b of the tile: by rows (each pair once into the histograms; each row feature as the target of its
/// partners), then by blocks of columns (each column feature as the target of its partners), so every feature's counts
/// and heaps are written by one thread at a time. Never more than a few T² values exist; the result does not depend on
/// the thread count or on where a run was resumed (nor, on the CPU backend, on the tile size: tested).
/// </summary>
public static class InterferenceScan
{
    /// <summary>The shard of tile row <paramref name="row"/> (it holds tiles − row tiles of the triangle): rows dealt in a
    /// snake, 0..n−1 then n−1..0, so each shard gets a long and a short row in turn and the pair counts balance.</summary>
    public static int ShardOfRow(int row, int shards)
    {
        int round = row / shards, place = row % shards;
        return round % 2 == 0 ? place : shards - 1 - place;
    }

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
        var shard = options.Shard.Checked();
        var taus = options.Taus;
        int threads = options.Threads > 0 ? options.Threads : Environment.ProcessorCount;

        var packedU = new PackedWeight?[tiles];
        var packedM = new PackedWeight?[tiles];
        var cos = new float[(long)tile * tile];
        var sim = embed is null ? null : new float[cos.Length];
        try
        {
            long index = 0;
            for (int ti = 0; ti < tiles; ti++)
            {
                int i0 = ti * tile, rows = Math.Min(tile, n - i0);
                if (index + (tiles - ti) <= state.TilesDone || ShardOfRow(ti, shard.Count) != shard.Index) { index += tiles - ti; continue; }
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
                    AccumulateRows(state, taus, cos, sim, rows, cols, i0, j0, threads);
                    if (state.PartnerCounts is not null || state.Top is not null) AccumulateColumns(state, taus, cos, sim, rows, cols, i0, j0, threads);
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
            backend.Linear.Forward(x, w, null, wrapped, rows);   // written in place: y holds [rows, cols] from index 0
            return;
        }
        using var yb = backend.Allocate((long)rows * cols);
        backend.Linear.Forward(x, w, null, yb, rows);
        backend.Download(yb, y.AsSpan(0, rows * cols));
    }

    /// <summary>The row side of a tile (rows r0 + r, columns c0 + c): each row's feature a is the target of its partners
    /// b &gt; a, and the histograms are counted here (each pair once). Rows are split into a fixed number of chunks per
    /// thread; the chunks' histograms are summed at the end.</summary>
    static void AccumulateRows(InterferenceState s, float[] taus, float[] cos, float[]? sim, int rows, int cols, int r0, int c0, int threads)
    {
        int nt = taus.Length, chunks = Math.Min(rows, threads * 8);
        var locals = new long[chunks][];
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, ch =>
        {
            // [fine | bins | unrelated τ×bin | similarity fine | similarity below τ] (the last three with explanations only)
            var local = new long[sim is null ? InterferenceBins.FineCount + InterferenceBins.Count
                : InterferenceBins.FineCount + InterferenceBins.Count + nt * InterferenceBins.Count + InterferenceBins.FineCount + nt];
            for (int r = (int)((long)rows * ch / chunks), end = (int)((long)rows * (ch + 1) / chunks); r < end; r++)
            {
                int a = r0 + r, cStart = Math.Max(0, a + 1 - c0);
                if (cStart >= cols) continue;
                int o = r * cols + cStart, len = cols - cStart;
                BinRow(cos.AsSpan(o, len), sim is null ? default : sim.AsSpan(o, len), sim is not null, a, c0 + cStart, taus, s, local);
            }
            locals[ch] = local;
        });
        foreach (var local in locals)
        {
            for (int i = 0; i < InterferenceBins.FineCount; i++) s.Fine[i] += local[i];
            for (int i = 0; i < InterferenceBins.Count; i++) s.Bins[i] += local[InterferenceBins.FineCount + i];
            if (s.Unrelated is null) continue;
            int o = InterferenceBins.FineCount + InterferenceBins.Count;
            for (int i = 0; i < nt * InterferenceBins.Count; i++) s.Unrelated[i] += local[o + i];
            o += nt * InterferenceBins.Count;
            for (int i = 0; i < InterferenceBins.FineCount; i++) s.SimilarityFine![i] += local[o + i];
            o += InterferenceBins.FineCount;
            for (int t = 0; t < nt; t++) s.SimilarityBelow![t] += local[o + t];
        }
    }

    static void BinRow(ReadOnlySpan<float> cos, ReadOnlySpan<float> sim, bool semantic, int target, int partner0, float[] taus,
        InterferenceState s, long[] local)
    {
        const int Fine = InterferenceBins.FineCount, Bins = InterferenceBins.Count;
        for (int c = 0; c < cos.Length; c++)
        {
            float v = InterferenceBins.Clamp(cos[c]);
            int bin = InterferenceBins.Of(v);
            local[InterferenceBins.FineOf(v)]++;
            if (bin >= 0) local[Fine + bin]++;
            if (semantic)
            {
                int o = Fine + Bins + taus.Length * Bins;
                local[o + InterferenceBins.FineOf(InterferenceBins.Clamp(sim[c]))]++;
                for (int t = 0; t < taus.Length; t++)
                    if (sim[c] < taus[t])
                    {
                        local[o + Fine + t]++;
                        if (bin >= 0) local[Fine + Bins + t * Bins + bin]++;
                    }
            }
            Pair(v, bin, semantic ? sim[c] : 0f, target, partner0 + c, taus, s);
        }
    }

    /// <summary>The column side of a tile: each column's feature b is the target of its partners a &lt; b (the rows).
    /// Threads own blocks of columns and read the tile row by row, a block's width at a time.</summary>
    static void AccumulateColumns(InterferenceState s, float[] taus, float[] cos, float[]? sim, int rows, int cols, int r0, int c0, int threads)
    {
        const int Block = 32;
        int blocks = (cols + Block - 1) / Block;
        Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = threads }, blk =>
        {
            int cFrom = blk * Block, cTo = Math.Min(cols, cFrom + Block);
            for (int r = 0; r < rows; r++)
            {
                int a = r0 + r;
                int first = Math.Max(cFrom, a + 1 - c0);   // columns b > a only
                int o = r * cols;
                for (int c = first; c < cTo; c++)
                {
                    float v = InterferenceBins.Clamp(cos[o + c]);
                    Pair(v, InterferenceBins.Of(v), sim is null ? 0f : sim[o + c], c0 + c, a, taus, s);
                }
            }
        });
    }

    /// <summary>One pair seen from its target: the top-N heap, and per τ under which it is unrelated, the target's count and
    /// partner heap of the pair's bin.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static void Pair(float v, int bin, float similarity, int target, int partner, float[] taus, InterferenceState s)
    {
        var top = s.Top;
        if (top is not null && top.Admits(target, v)) top.Offer(target, v, partner);
        var counts = s.PartnerCounts;
        if (bin < 0 || counts is null) return;
        var partners = s.Partners!;
        for (int t = 0; t < taus.Length; t++)
        {
            if (!(similarity < taus[t])) continue;
            int owner = InterferenceState.Owner(t, target, bin, s.N);
            counts[owner]++;
            if (partners.Admits(owner, v)) partners.Offer(owner, v, partner);
        }
    }
}

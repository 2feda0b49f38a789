using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// Logits-side reductions (scalar reference: Reference/ReductionReference): what leaves the device instead of [rows, vocab].
//   LogSumExp — one thread per row: max, then Σ exp(x − max) in float, lse = max + log(sum).
//   RowMetrics — one group of MetricsGroup threads per row, each thread striding over the vocabulary, fixed-tree reductions
//             in shared memory (deterministic): max and Σ exp → lse; the reference row's the same; then KL(Q ‖ P) =
//             Σ Q·(log Q − log P) (a sum of small differences, not of two large sums) and each Σ P·w_j.
//   The top-k per row is SaeKernels.TopK (a size-k heap per row, ties to the lower index); the host sorts each row's k.
//   Rank statistics — RankKeys makes one 64-bit key per (row, token): the row above an order-preserving map of −logit, so
//             ILGPU.Algorithms' (stable, LSD) radix sort of (key, id) pairs sorts every row by logit, descending, ties to
//             the lower id. RankGather turns the sorted ids P into the per-element products and the two sequences whose
//             inversions are the discordant pairs; MergePass merges sorted runs of width w into runs of 2w, each element
//             of a right run counting the larger elements of its left run (a binary search); RowSums adds each row up.
//             Exact integers throughout, so every backend gives the same statistics.
public static class LogitKernels
{
    public const int MetricsGroup = 128;

    /// <summary>Grid rows, group <see cref="MetricsGroup"/>: row r = Grid.IdxX of logits [rows, vocab] against group[r]'s
    /// weights [groups, nWeights, vocab] and reference logits [groups, vocab]; writes lse[r], dots[r, j], kl[r].</summary>
    [GpuKernel(Explicit = true)]
    public static void RowMetrics(ArrayView<float> logits, int vocab, ArrayView<int> group, ArrayView<float> weights, int nWeights,
        ArrayView<float> reference, int hasReference, ArrayView<float> lse, ArrayView<float> dots, ArrayView<float> kl)
    {
        var shared = SharedMemory.Allocate1D<float>(MetricsGroup);
        int tid = Group.IdxX, r = Grid.IdxX, g = group[r];
        long o = (long)r * vocab, qo = (long)g * vocab;
        float rowLse = Lse(logits, o, vocab, shared, tid);
        if (tid == 0) lse[r] = rowLse;
        if (hasReference != 0)
        {
            float refLse = Lse(reference, qo, vocab, shared, tid);
            float part = 0f;
            for (int t = tid; t < vocab; t += MetricsGroup)
            {
                float logQ = reference[qo + t] - refLse;
                part += XMath.Exp(logQ) * (logQ - (logits[o + t] - rowLse));
            }
            float total = Sum(shared, tid, part);
            if (tid == 0) kl[r] = total;
        }
        for (int j = 0; j < nWeights; j++)
        {
            long wo = ((long)g * nWeights + j) * vocab;
            float part = 0f;
            for (int t = tid; t < vocab; t += MetricsGroup) part += XMath.Exp(logits[o + t] - rowLse) * weights[wo + t];
            float total = Sum(shared, tid, part);
            if (tid == 0) dots[(long)r * nWeights + j] = total;
        }
    }

    /// <summary>log Σ exp(x[o .. o + n)) over the group: the max, then the sum of exp(x − max).</summary>
    static float Lse(ArrayView<float> x, long o, int n, ArrayView<float> shared, int tid)
    {
        float m = float.NegativeInfinity;
        for (int t = tid; t < n; t += MetricsGroup) m = XMath.Max(m, x[o + t]);
        m = Max(shared, tid, m);
        float s = 0f;
        for (int t = tid; t < n; t += MetricsGroup) s += XMath.Exp(x[o + t] - m);
        return m + XMath.Log(Sum(shared, tid, s));
    }

    static float Sum(ArrayView<float> shared, int tid, float v)
    {
        shared[tid] = v;
        Group.Barrier();
        for (int s = MetricsGroup / 2; s > 0; s >>= 1)
        {
            if (tid < s) shared[tid] += shared[tid + s];
            Group.Barrier();
        }
        float total = shared[0];
        Group.Barrier();   // every lane has read it before the next reduction writes
        return total;
    }

    static float Max(ArrayView<float> shared, int tid, float v)
    {
        shared[tid] = v;
        Group.Barrier();
        for (int s = MetricsGroup / 2; s > 0; s >>= 1)
        {
            if (tid < s) shared[tid] = XMath.Max(shared[tid], shared[tid + s]);
            Group.Barrier();
        }
        float total = shared[0];
        Group.Barrier();
        return total;
    }

    [GpuKernel]
    public static void LogSumExp(Index1D row, ArrayView<float> x, int width, ArrayView<float> lse)
    {
        long o = (long)(int)row * width;
        float max = float.NegativeInfinity;
        for (int i = 0; i < width; i++) max = XMath.Max(max, x[o + i]);
        float sum = 0f;
        for (int i = 0; i < width; i++) sum += XMath.Exp(x[o + i] - max);
        lse[row] = max + XMath.Log(sum);
    }
}

/// <summary>Rank-statistics kernels (see the file header); rows × vocab elements, one thread each unless said.</summary>
public static class RankKernels
{
    /// <summary>key = row · 2³² + (an ascending map of −logit), value = token id.</summary>
    [GpuKernel]
    public static void RankKeys(Index1D i, ArrayView<float> logits, int vocab, ArrayView<long> keys, ArrayView<int> ids)
    {
        float x = logits[i];
        if (x == 0f) x = 0f;   // −0 and +0 tie, as they compare
        uint u = (uint)Interop.FloatAsInt(x);
        uint ascending = (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;
        keys[i] = ((long)((int)i / vocab) << 32) | (~ascending);
        ids[i] = i % vocab;
    }

    /// <summary>From the sorted ids P [rows, vocab]: products P[i]·S[i] and i·rankS(P[i]); byP[P[i]] = S[i] and
    /// byRank[i] = rankS(P[i]), whose inversions are the discordant pairs. S and rankS per group [groups, vocab].</summary>
    [GpuKernel]
    public static void RankGather(Index1D i, ArrayView<int> p, int vocab, ArrayView<int> group, ArrayView<int> s, ArrayView<int> rankS,
        ArrayView<long> products, ArrayView<long> rankProducts, ArrayView<int> byP, ArrayView<int> byRank)
    {
        int r = i / vocab, j = i % vocab, t = p[i];
        long go = (long)group[r] * vocab;
        int sj = s[go + j], rs = rankS[go + t];
        products[i] = (long)t * sj;
        rankProducts[i] = (long)j * rs;
        byP[(long)r * vocab + t] = sj;
        byRank[i] = rs;
    }

    /// <summary>Merges the sorted runs [k·w, (k+1)·w) of each row of src pairwise into dst (values distinct within a row);
    /// each element of a right run adds the number of larger elements in its left run to inversions[i].</summary>
    [GpuKernel]
    public static void MergePass(Index1D i, ArrayView<int> src, ArrayView<int> dst, int vocab, int width, ArrayView<long> inversions)
    {
        int r = i / vocab, j = i % vocab, run = j / width, start = run * width;
        long o = (long)r * vocab;
        int x = src[i];
        bool left = (run & 1) == 0;
        int other = left ? start + width : start - width;
        int otherLength = left ? XMath.Min(width, XMath.Max(0, vocab - other)) : width;
        // Elements of the other run below x (binary search: the run is sorted ascending).
        int lo = 0, hi = otherLength;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (src[o + other + mid] < x) lo = mid + 1;
            else hi = mid;
        }
        int first = left ? start : other;   // the merged run's start
        dst[o + first + (j - start) + lo] = x;
        if (!left) inversions[i] += otherLength - lo;
    }

    /// <summary>Grid rows: sums[r] += Σ values[r, :] (one thread per row).</summary>
    [GpuKernel]
    public static void RowSums(Index1D r, ArrayView<long> values, int vocab, ArrayView<long> sums)
    {
        long total = 0;
        for (long t = (long)(int)r * vocab, end = t + vocab; t < end; t++) total += values[t];
        sums[r] = total;
    }
}

/// <summary>The reduction family on ILGPU: the top-k per row by the SAE family's heap kernel, the log-sum-exp and the row
/// metrics above; only [rows, k] ids and logits and [rows, …] sums leave the device.</summary>
sealed class IlgpuReductions : IReductionOps, IDisposable
{
    readonly IlgpuBackend _b;
    readonly IlgpuSae _sae;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<float>> _logSumExp;
    readonly Action<KernelConfig, ArrayView<float>, int, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, int, ArrayView<float>,
        ArrayView<float>, ArrayView<float>> _rowMetrics;
    MemoryBuffer1D<float, Stride1D.Dense>? _lse, _dots, _kl;
    MemoryBuffer1D<int, Stride1D.Dense>? _group;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<long>, ArrayView<int>> _rankKeys;
    readonly Action<Index1D, ArrayView<int>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<long>, ArrayView<long>, ArrayView<int>, ArrayView<int>> _rankGather;
    readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int, int, ArrayView<long>> _mergePass;
    readonly Action<Index1D, ArrayView<long>, int, ArrayView<long>> _rowSums;
    readonly RadixSortPairs<long, Stride1D.Dense, int, Stride1D.Dense> _sortPairs;

    /// <summary>Rows of logits one rank pass sorts at a time: bounds its scratch (≈ 60 bytes per element).</summary>
    const int RankElements = 1 << 24;

    public IlgpuReductions(IlgpuBackend backend, IlgpuSae sae)
    {
        _b = backend;
        _sae = sae;
        _logSumExp = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(LogitKernels.LogSumExp);
        _rowMetrics = backend.Acc.LoadStreamKernel<ArrayView<float>, int, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, int,
            ArrayView<float>, ArrayView<float>, ArrayView<float>>(LogitKernels.RowMetrics);
        var acc = backend.Acc;
        _rankKeys = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<long>, ArrayView<int>>(RankKernels.RankKeys);
        _rankGather = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, int, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<long>,
            ArrayView<long>, ArrayView<int>, ArrayView<int>>(RankKernels.RankGather);
        _mergePass = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, int, int, ArrayView<long>>(RankKernels.MergePass);
        _rowSums = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, int, ArrayView<long>>(RankKernels.RowSums);
        _sortPairs = acc.CreateRadixSortPairs<long, Stride1D.Dense, int, Stride1D.Dense, ILGPU.Algorithms.RadixSortOperations.AscendingInt64>();
    }

    public RankRows RankStats(DeviceBuffer logits, int rows, int vocab, int[] group, int[][] orders)
    {
        var l = IlgpuBackend.Of(logits, (long)rows * vocab, "logits", "RankStats").View;
        RankStatsCheck.Check(group, rows, vocab, l.Length, orders);
        var stats = new RankRows(rows, vocab, new long[rows], new long[rows], new long[rows], new long[rows]);
        if (rows == 0 || vocab == 0) return stats;
        var acc = _b.Acc;
        int chunk = Math.Max(1, RankElements / vocab);
        long n = (long)Math.Min(chunk, rows) * vocab;
        using var s = acc.Allocate1D(orders.SelectMany(o => o).ToArray());
        using var rankS = acc.Allocate1D(orders.SelectMany(o => { var inv = new int[vocab]; for (int i = 0; i < vocab; i++) inv[o[i]] = i; return inv; }).ToArray());
        using var keys = _b.Alloc<long>(n);
        using var ids = _b.Alloc<int>(n);
        using var temp = _b.Alloc<int>(acc.ComputeRadixSortPairsTempStorageSize<long, int, ILGPU.Algorithms.RadixSortOperations.AscendingInt64>((Index1D)n));
        using var products = _b.Alloc<long>(n);
        using var rankProducts = _b.Alloc<long>(n);
        using var a = _b.Alloc<int>(n);
        using var b = _b.Alloc<int>(n);
        using var c = _b.Alloc<int>(n);
        using var inversions = _b.Alloc<long>(n);
        using var sums = _b.Alloc<long>(chunk);
        using var groups = _b.Alloc<int>(chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int m = Math.Min(chunk, rows - r0);
            int count = m * vocab;
            groups.View.SubView(0, m).CopyFromCPU(group.AsSpan(r0, m).ToArray());
            _rankKeys(count, l.SubView((long)r0 * vocab, count), vocab, keys.View, ids.View);
            _sortPairs(acc.DefaultStream, keys.View.SubView(0, count), ids.View.SubView(0, count), temp.View);
            _rankGather(count, ids.View, vocab, groups.View, s.View, rankS.View, products.View, rankProducts.View, a.View, b.View);
            Sum(products, m, vocab, sums, stats.Products, r0);
            Sum(rankProducts, m, vocab, sums, stats.RankProducts, r0);
            foreach (var (seq, into) in new[] { (a, stats.Discordant), (b, stats.RankDiscordant) })
            {
                inversions.View.SubView(0, count).MemSetToZero();
                var (src, dst) = (seq, c);
                for (int width = 1; width < vocab; width *= 2)
                {
                    _mergePass(count, src.View, dst.View, vocab, width, inversions.View);
                    (src, dst) = (dst, src);
                }
                Sum(inversions, m, vocab, sums, into, r0);
            }
        }
        return stats;
    }

    /// <summary>into[r0 + r] = Σ values[r, :] for the m rows of a chunk.</summary>
    void Sum(MemoryBuffer1D<long, Stride1D.Dense> values, int m, int vocab, MemoryBuffer1D<long, Stride1D.Dense> sums, long[] into, int r0)
    {
        _rowSums(m, values.View, vocab, sums.View);
        var host = new long[m];
        sums.View.SubView(0, m).CopyToCPU(host);
        host.CopyTo(into, r0);
    }

    public LogitRowMetrics RowMetrics(DeviceBuffer logits, int rows, int vocab, int[] group, DeviceBuffer? weights, int nWeights, DeviceBuffer? reference)
    {
        var l = IlgpuBackend.Of(logits, (long)rows * vocab, "logits", "RowMetrics").View;
        int groups = RowMetricsCheck.Groups(group, rows, vocab, l.Length, weights?.Length ?? 0, nWeights, reference?.Length);
        var (w, _) = _b.Optional(weights, (long)groups * nWeights * vocab, "weights", "RowMetrics");
        var (q, hasReference) = _b.Optional(reference, (long)groups * vocab, "reference", "RowMetrics");
        var lse = new float[rows];
        var dots = new float[rows * nWeights];
        var kl = reference is null ? null : new float[rows];
        if (rows == 0) return new LogitRowMetrics(rows, nWeights, lse, dots, kl);
        var g = _b.Grow(ref _group, rows);
        g.View.SubView(0, rows).CopyFromCPU(group.AsSpan(0, rows).ToArray());
        var (lb, db, kb) = (_b.Grow(ref _lse, rows), _b.Grow(ref _dots, Math.Max(1, rows * nWeights)), _b.Grow(ref _kl, rows));
        _rowMetrics(new KernelConfig(rows, LogitKernels.MetricsGroup), l, vocab, g.View, w, nWeights, q, hasReference, lb.View, db.View, kb.View);
        lb.View.SubView(0, rows).CopyToCPU(lse);
        if (nWeights > 0) db.View.SubView(0, rows * nWeights).CopyToCPU(dots);
        if (kl is not null) kb.View.SubView(0, rows).CopyToCPU(kl);
        return new LogitRowMetrics(rows, nWeights, lse, dots, kl);
    }

    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        var l = IlgpuBackend.Of(logits, (long)rows * vocab, "logits", "TopLogits").View;
        k = Math.Min(k, vocab);
        if (k < 1 || k > SaeKernels.MaxTopK) throw new ArgumentException($"TopLogits: k = {k} is outside 1..{SaeKernels.MaxTopK}, what the device kernel keeps");
        var (ids, top) = _sae.TopK(l, rows, vocab, k);
        var lse = _b.Grow(ref _lse, rows);
        _logSumExp(rows, l, vocab, lse.View);
        var sums = new float[rows];
        lse.View.SubView(0, rows).CopyToCPU(sums);
        for (int r = 0; r < rows; r++)   // the heap's order → descending logits, ties to the lower id
        {
            var order = Enumerable.Range(r * k, k).OrderByDescending(i => top[i]).ThenBy(i => ids[i]).ToArray();
            var (ri, rv) = (order.Select(i => ids[i]).ToArray(), order.Select(i => top[i]).ToArray());
            ri.CopyTo(ids, r * k);
            rv.CopyTo(top, r * k);
        }
        return new TopLogitRows(rows, k, ids, top, sums);
    }

    public void Dispose()
    {
        foreach (var b in new IDisposable?[] { _lse, _dots, _kl, _group }) b?.Dispose();
    }
}

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

    public IlgpuReductions(IlgpuBackend backend, IlgpuSae sae)
    {
        _b = backend;
        _sae = sae;
        _logSumExp = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(LogitKernels.LogSumExp);
        _rowMetrics = backend.Acc.LoadStreamKernel<ArrayView<float>, int, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, int,
            ArrayView<float>, ArrayView<float>, ArrayView<float>>(LogitKernels.RowMetrics);
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

using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// The SAE encoder's row ops around its GEMM. Scalar references: Reference/SaeReference (NormalizeRows, Sparsify).
//   NormalizeRows — one thread per row (V1, like LayerNorm): centre, SAELens layer_norm or constant_norm_rescale, − b_dec
//   CountFiring   — one thread per (row, segment of Segment columns): how many columns fire (ReLU / JumpReLU)
//   Compact       — the same threads write their firing (column, value) pairs at offsets the host scanned from the
//                   counts: ascending columns per row, so the output is deterministic
//   TopK          — one thread per row with a size-k min-heap in local memory (k ≤ MaxTopK), ties to the lower column;
//                   the host drops non-positive values and sorts each row's k columns
// Only the compacted pairs (and the per-segment counts) are copied to the host, never the dense [rows, d_sae].
public static class SaeKernels
{
    public const int Segment = 256;
    public const int MaxTopK = 256;

    [GpuKernel]
    public static void NormalizeRows(Index1D row, ArrayView<float> x, ArrayView<float> y, int d, int norm, int center,
        ArrayView<float> subtract, int doSubtract)
    {
        long o = (long)(int)row * d;
        float mean = 0f;
        if (center != 0)
        {
            float s = 0f;
            for (int i = 0; i < d; i++) s += x[o + i];
            mean = s / d;
        }
        float mu = 0f, scale = 1f;
        if (norm == (int)RowNormalization.LayerNorm)
        {
            float s = 0f;
            for (int i = 0; i < d; i++) s += x[o + i] - mean;
            mu = s / d;
            float sq = 0f;
            for (int i = 0; i < d; i++)
            {
                float c = x[o + i] - mean - mu;
                sq += c * c;
            }
            scale = XMath.Sqrt(sq / (d > 1 ? d - 1 : 1)) + 1e-5f;
        }
        else if (norm == (int)RowNormalization.ConstantNorm)
        {
            float sq = 0f;
            for (int i = 0; i < d; i++)
            {
                float c = x[o + i] - mean;
                sq += c * c;
            }
            scale = XMath.Sqrt(sq) / XMath.Sqrt((float)d);
        }
        for (int i = 0; i < d; i++)
        {
            float v = (x[o + i] - mean - mu) / scale;
            if (doSubtract != 0) v -= subtract[i];
            y[o + i] = v;
        }
    }

    static bool Fires(float p, ArrayView<float> threshold, int useThreshold, int j) => p > 0f && (useThreshold == 0 || p > threshold[j]);

    [GpuKernel]
    public static void CountFiring(Index1D cell, ArrayView<float> pre, ArrayView<float> threshold, int useThreshold, int width, int segments,
        ArrayView<int> counts)
    {
        int i = cell;
        int r = i / segments, s = i % segments;
        long o = (long)r * width;
        int end = XMath.Min(width, (s + 1) * Segment);
        int c = 0;
        for (int j = s * Segment; j < end; j++)
            if (Fires(pre[o + j], threshold, useThreshold, j)) c++;
        counts[i] = c;
    }

    [GpuKernel]
    public static void Compact(Index1D cell, ArrayView<float> pre, ArrayView<float> threshold, int useThreshold, int width, int segments,
        ArrayView<int> offsets, ArrayView<int> index, ArrayView<float> value)
    {
        int i = cell;
        int r = i / segments, s = i % segments;
        long o = (long)r * width;
        int end = XMath.Min(width, (s + 1) * Segment);
        int at = offsets[i];
        for (int j = s * Segment; j < end; j++)
        {
            float p = pre[o + j];
            if (Fires(p, threshold, useThreshold, j))
            {
                index[at] = j;
                value[at] = p;
                at++;
            }
        }
    }

    static bool Weaker(ArrayView<float> v, long o, int a, int b) => v[o + a] < v[o + b] || (v[o + a] == v[o + b] && a > b);

    [GpuKernel]
    public static void TopK(Index1D row, ArrayView<float> pre, int width, int k, ArrayView<int> index, ArrayView<float> value)
    {
        var heap = LocalMemory.Allocate<int>(MaxTopK);   // column indices; heap[0] the weakest kept
        int r = row;
        long o = (long)r * width;
        int size = 0;
        for (int i = 0; i < width; i++)
        {
            if (size < k)
            {
                int c = size;
                size++;
                heap[c] = i;
                while (c > 0 && Weaker(pre, o, heap[c], heap[(c - 1) / 2]))
                {
                    int parent = (c - 1) / 2;
                    int t = heap[c];
                    heap[c] = heap[parent];
                    heap[parent] = t;
                    c = parent;
                }
            }
            else if (Weaker(pre, o, heap[0], i))
            {
                heap[0] = i;
                int c = 0;
                while (true)
                {
                    int l = 2 * c + 1, rr = l + 1, m = c;
                    if (l < k && Weaker(pre, o, heap[l], heap[m])) m = l;
                    if (rr < k && Weaker(pre, o, heap[rr], heap[m])) m = rr;
                    if (m == c) break;
                    int t = heap[c];
                    heap[c] = heap[m];
                    heap[m] = t;
                    c = m;
                }
            }
        }
        for (int j = 0; j < k; j++)
        {
            long at = (long)r * k + j;
            if (j < size)
            {
                index[at] = heap[j];
                value[at] = pre[o + heap[j]];
            }
            else
            {
                index[at] = -1;
                value[at] = 0f;
            }
        }
    }
}

/// <summary>The SAE family on ILGPU: input normalisation, then the activation and compaction kernels; only the firing
/// (feature, value) pairs, and the per-segment counts, are copied to the host.</summary>
sealed class IlgpuSae : ISaeOps, IDisposable
{
    readonly IlgpuBackend _b;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>, int> _normalizeRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>> _countFiring;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<int>, ArrayView<float>> _compact;
    readonly Action<Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<float>> _topK;
    MemoryBuffer1D<int, Stride1D.Dense>? _cells, _index;   // scratch, grown on demand
    MemoryBuffer1D<float, Stride1D.Dense>? _value;

    public IlgpuSae(IlgpuBackend backend)
    {
        _b = backend;
        var acc = backend.Acc;
        _normalizeRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>, int>(SaeKernels.NormalizeRows);
        _countFiring = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>>(SaeKernels.CountFiring);
        _compact = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<int>,
            ArrayView<float>>(SaeKernels.Compact);
        _topK = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<float>>(SaeKernels.TopK);
    }

    public void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract)
    {
        if (rows == 0) return;
        var (sub, hasSub) = _b.Optional(subtract, d, "subtract", "NormalizeRows");
        _normalizeRows(rows, IlgpuBackend.Of(x, (long)rows * d, "x", "NormalizeRows").View, IlgpuBackend.Of(y, (long)rows * d, "y", "NormalizeRows").View,
            d, (int)norm, center ? 1 : 0, sub, hasSub);
    }

    /// <summary>The k largest of each row of p [rows, width] (heap order), copied to the host: ids and values [rows, k].</summary>
    internal (int[] Ids, float[] Values) TopK(ArrayView<float> p, int rows, int width, int k)
    {
        int n = checked(rows * k);
        var idx = _b.Grow(ref _index, n);
        var val = _b.Grow(ref _value, n);
        _topK(rows, p, width, k, idx.View, val.View);
        var hi = new int[n];
        var hv = new float[n];
        idx.View.SubView(0, n).CopyToCPU(hi);
        val.View.SubView(0, n).CopyToCPU(hv);
        return (hi, hv);
    }

    public SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule)
    {
        var p = IlgpuBackend.Of(pre, (long)rows * width, "pre", "Sparsify").View;
        if (rows == 0 || width == 0) return SparseRows.FromRows(width, new (int[], float[])[rows].Select(_ => (Array.Empty<int>(), Array.Empty<float>())).ToList());
        if (rule.Activation == SparseActivation.TopK)
        {
            int k = Math.Min(rule.K, width);
            if (k < 1 || k > SaeKernels.MaxTopK) throw new ArgumentException($"Sparsify: TopK k = {rule.K} is outside 1..{SaeKernels.MaxTopK}, what the device kernel keeps");
            var (hi, hv) = TopK(p, rows, width, k);
            var perRow = new (int[], float[])[rows];
            for (int r = 0; r < rows; r++)
            {
                var kept = Enumerable.Range(r * k, k).Where(i => hi[i] >= 0 && hv[i] > 0f).OrderBy(i => hi[i]).ToArray();
                perRow[r] = (kept.Select(i => hi[i]).ToArray(), kept.Select(i => hv[i]).ToArray());
            }
            return SparseRows.FromRows(width, perRow);
        }
        bool jump = rule.Activation == SparseActivation.JumpRelu;
        ArrayView<float> threshold = !jump ? _b.Dummy.View
            : IlgpuBackend.Of(rule.Threshold ?? throw new ArgumentException("Sparsify: JumpReLU needs a threshold"), width, "threshold", "Sparsify").View;
        int segments = (width + SaeKernels.Segment - 1) / SaeKernels.Segment;
        int cells = checked(rows * segments);
        var cellBuf = _b.Grow(ref _cells, cells);
        _countFiring(cells, p, threshold, jump ? 1 : 0, width, segments, cellBuf.View);
        var counts = new int[cells];
        cellBuf.View.SubView(0, cells).CopyToCPU(counts);
        var rowStart = new int[rows + 1];
        int total = 0;
        for (int c = 0; c < cells; c++)   // exclusive scan: counts become each cell's output offset
        {
            if (c % segments == 0) rowStart[c / segments] = total;
            int count = counts[c];
            counts[c] = total;
            total = checked(total + count);
        }
        rowStart[rows] = total;
        var index = new int[total];
        var value = new float[total];
        if (total > 0)
        {
            cellBuf.View.SubView(0, cells).CopyFromCPU(counts);
            var idx = _b.Grow(ref _index, total);
            var val = _b.Grow(ref _value, total);
            _compact(cells, p, threshold, jump ? 1 : 0, width, segments, cellBuf.View, idx.View, val.View);
            idx.View.SubView(0, total).CopyToCPU(index);
            val.View.SubView(0, total).CopyToCPU(value);
        }
        return new SparseRows(rows, width, rowStart, index, value);
    }

    public void Dispose()
    {
        _cells?.Dispose();
        _index?.Dispose();
        _value?.Dispose();
    }
}

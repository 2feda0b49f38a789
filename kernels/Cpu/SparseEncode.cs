using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

/// <summary>
/// The SAE encoder's activation + sparse extraction on the host (<see cref="Sparsify"/>); the input normalisation is
/// <see cref="Reference.SaeReference.NormalizeRow"/>, one row at a time. Scalar references: Reference/SaeReference (full
/// sort for TopK, double precision for the norms).
/// </summary>
public static class SparseEncode
{
    /// <summary>The activation applied to pre[rows, width], nonzeros kept per row (parallel over rows).</summary>
    public static SparseRows Sparsify(ArraySegment<float> pre, int rows, int width, SparseActivation activation, int k, float[]? threshold, int threads)
    {
        var perRow = new (int[] Index, float[] Value)[rows];
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
        {
            ReadOnlySpan<float> p = pre.AsSpan(r * width, width);
            if (activation == SparseActivation.TopK)
            {
                var top = TopKIndices(p, k);
                int n = 0;
                foreach (int j in top) if (p[j] > 0f) top[n++] = j;
                var idx = top[..n];
                var val = new float[n];
                for (int i = 0; i < n; i++) val[i] = p[idx[i]];
                perRow[r] = (idx, val);
                return;
            }
            int count = 0;
            for (int j = 0; j < width; j++) if (Fires(p[j], activation, threshold, j)) count++;
            var index = new int[count];
            var value = new float[count];
            for (int j = 0, c = 0; c < count; j++)
                if (Fires(p[j], activation, threshold, j)) { index[c] = j; value[c++] = p[j]; }
            perRow[r] = (index, value);
        });
        return SparseRows.FromRows(width, perRow);
    }

    static bool Fires(float pre, SparseActivation a, float[]? threshold, int j) =>
        pre > 0f && (a != SparseActivation.JumpRelu || pre > threshold![j]);

    /// <summary>Indices (ascending) of the k largest values, ties broken towards the lower index: one pass with a size-k
    /// min-heap, O(F log k) — a full sort per token made TopK SAEs 50× slower at F = 24,576.</summary>
    public static int[] TopKIndices(ReadOnlySpan<float> values, int k)
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
}

/// <summary>The SAE family on the CPU, parallel over rows.</summary>
sealed class CpuSae(CpuBackend backend) : ISaeOps
{
    public void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract)
    {
        var (xs, ys) = (CpuBackend.Seg(x), CpuBackend.Seg(y));
        var sub = subtract is null ? default : CpuBackend.Seg(subtract);
        if ((long)rows * d > Math.Min(xs.Count, ys.Count) || (subtract is not null && sub.Count < d))
            throw new ArgumentException($"NormalizeRows: buffers too small for {rows}×{d}");
        bool same = xs.Array == ys.Array && xs.Offset == ys.Offset;
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = backend.Threads }, r =>
        {
            var row = ys.AsSpan(r * d, d);
            if (!same) xs.AsSpan(r * d, d).CopyTo(row);
            Reference.SaeReference.NormalizeRow(row, norm, center, subtract is null ? default : sub.AsSpan(0, d), out _, out _);
        });
    }

    public SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule)
    {
        var p = CpuBackend.Seg(pre);
        if ((long)rows * width > p.Count) throw new ArgumentException($"Sparsify: pre holds {p.Count} floats, {rows}×{width} needed");
        var threshold = rule.Threshold is null ? null : CpuBackend.Span(rule.Threshold).ToArray();
        if (rule.Activation == SparseActivation.JumpRelu && (threshold is null || threshold.Length < width))
            throw new ArgumentException($"Sparsify: JumpReLU needs a threshold of {width} values");
        return SparseEncode.Sparsify(p, rows, width, rule.Activation, rule.K, threshold, backend.Threads);
    }
}

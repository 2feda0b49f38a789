using ILGPU;
using ILGPU.Algorithms;

namespace PolyEngine.Kernels.Cuda;

// The SAE encoder's row ops around its GEMM. Scalar references: Cpu.SparseEncode.NormalizeReference / SparsifyReference.
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

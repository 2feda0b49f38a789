using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

/// <summary>
/// The SAE encoder's row ops on the host: input normalisation (<see cref="Normalize"/>) and activation + sparse
/// extraction (<see cref="Sparsify"/>), with scalar references beside them (<see cref="NormalizeReference"/>,
/// <see cref="SparsifyReference"/>: full sort for TopK, double precision for the norms).
/// </summary>
public static class SparseEncode
{
    /// <summary>In place: centre (x − mean) when asked, then <paramref name="norm"/>, then subtract <paramref name="subtract"/>
    /// (when not empty). <paramref name="mu"/> and <paramref name="scale"/> undo the norm step (x = x'·scale + mu).</summary>
    public static void Normalize(Span<float> row, RowNormalization norm, bool center, ReadOnlySpan<float> subtract, out float mu, out float scale)
    {
        mu = 0f;
        scale = 1f;
        int d = row.Length;
        if (center) TensorPrimitives.Subtract(row, TensorPrimitives.Sum(row) / d, row);
        switch (norm)
        {
            case RowNormalization.LayerNorm:
                mu = TensorPrimitives.Sum(row) / d;
                TensorPrimitives.Subtract(row, mu, row);
                float std = MathF.Sqrt(TensorPrimitives.SumOfSquares(row) / Math.Max(1, d - 1));
                scale = std + 1e-5f;
                TensorPrimitives.Divide(row, scale, row);
                break;
            case RowNormalization.ConstantNorm:
                float c = MathF.Sqrt(d) / TensorPrimitives.Norm(row);
                scale = 1f / c;
                TensorPrimitives.Multiply(row, c, row);
                break;
        }
        if (!subtract.IsEmpty) TensorPrimitives.Subtract(row, subtract, row);
    }

    /// <summary>Scalar reference of <see cref="Normalize"/>, in double precision.</summary>
    public static float[] NormalizeReference(float[] x, int d, RowNormalization norm, bool center, float[]? subtract)
    {
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / d; r++)
        {
            var v = new double[d];
            for (int i = 0; i < d; i++) v[i] = x[r * d + i];
            if (center) { double m = v.Average(); for (int i = 0; i < d; i++) v[i] -= m; }
            if (norm == RowNormalization.LayerNorm)
            {
                double m = v.Average();
                double std = Math.Sqrt(v.Sum(a => (a - m) * (a - m)) / Math.Max(1, d - 1));
                for (int i = 0; i < d; i++) v[i] = (v[i] - m) / (std + 1e-5);
            }
            else if (norm == RowNormalization.ConstantNorm)
            {
                double n = Math.Sqrt(v.Sum(a => a * a));
                for (int i = 0; i < d; i++) v[i] *= Math.Sqrt(d) / n;
            }
            for (int i = 0; i < d; i++) y[r * d + i] = (float)(v[i] - (subtract?[i] ?? 0.0));
        }
        return y;
    }

    /// <summary>The activation applied to pre[rows, width], nonzeros kept per row (parallel over rows).</summary>
    public static SparseRows Sparsify(float[] pre, int rows, int width, SparseActivation activation, int k, float[]? threshold, int threads)
    {
        var perRow = new (int[] Index, float[] Value)[rows];
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
        {
            var p = new ReadOnlySpan<float>(pre, r * width, width);
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

    /// <summary>Scalar reference of <see cref="Sparsify"/>: the dense activation (TopK by a full stable sort), then its nonzeros.</summary>
    public static SparseRows SparsifyReference(float[] pre, int rows, int width, SparseActivation activation, int k, float[]? threshold)
    {
        var perRow = new List<(int[], float[])>();
        for (int r = 0; r < rows; r++)
        {
            var p = pre.AsSpan(r * width, width).ToArray();
            var f = new float[width];
            if (activation == SparseActivation.TopK)
                foreach (int j in Enumerable.Range(0, width).OrderByDescending(j => p[j]).ThenBy(j => j).Take(k)) f[j] = Math.Max(p[j], 0f);
            else
                for (int j = 0; j < width; j++)
                    f[j] = activation == SparseActivation.JumpRelu && !(p[j] > threshold![j]) ? 0f : Math.Max(p[j], 0f);
            var nz = Enumerable.Range(0, width).Where(j => f[j] != 0f).ToArray();
            perRow.Add((nz, nz.Select(j => f[j]).ToArray()));
        }
        return SparseRows.FromRows(width, perRow);
    }

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

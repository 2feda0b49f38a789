using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Reference;

/// <summary>
/// The SAE family's row operations without a backend: <see cref="NormalizeRow"/> (one row, as the backends and the engine
/// apply it) and the scalar references the backends are checked against (<see cref="NormalizeRows"/> in double,
/// <see cref="Sparsify"/> with a full sort for TopK).
/// </summary>
public static class SaeReference
{
    /// <summary>In place: centre (x − mean) when asked, then <paramref name="norm"/>, then subtract <paramref name="subtract"/>
    /// (when not empty). <paramref name="mu"/> and <paramref name="scale"/> undo the norm step (x = x'·scale + mu).</summary>
    public static void NormalizeRow(Span<float> row, RowNormalization norm, bool center, ReadOnlySpan<float> subtract, out float mu, out float scale)
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

    /// <summary>Every row of x [rows, d] normalised as <see cref="NormalizeRow"/> does, in double precision.</summary>
    public static float[] NormalizeRows(float[] x, int d, RowNormalization norm, bool center, float[]? subtract)
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

    /// <summary>The dense activation of pre [rows, width] (TopK by a full stable sort), then its nonzeros per row.</summary>
    public static SparseRows Sparsify(float[] pre, int rows, int width, SparseActivation activation, int k, float[]? threshold)
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
}

namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar reference of the layer-norm family (torch semantics, biased variance), in double.</summary>
public static class NormReference
{
    /// <summary>y[rows, d] = (x − mean)/√(var + eps)·gamma + beta.</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y,
        int rows, int d, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            var (mean, s) = Statistics(x.Slice(r * d, d), eps);
            for (int i = 0; i < d; i++) y[r * d + i] = (float)((x[r * d + i] - mean) / s * gamma[i] + beta[i]);
        }
    }

    /// <summary>A row's mean and √(var + eps) (biased variance), in double.</summary>
    static (double Mean, double Scale) Statistics(ReadOnlySpan<float> row, float eps)
    {
        double mean = 0, var = 0;
        foreach (var v in row) mean += v;
        mean /= row.Length;
        foreach (var v in row) var += (v - mean) * (v - mean);
        return (mean, Math.Sqrt(var / row.Length + eps));
    }

    /// <summary>dx[rows, d] of y = LayerNorm(x) for the upstream gradient dy, recomputed from x in double:
    /// dx = (g − mean(g) − n̂·mean(g·n̂))/√(var + eps) with g = dy·gamma and n̂ the normalised row.</summary>
    public static void LayerNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> dy, Span<float> dx, int rows, int d, float eps)
    {
        var n = new double[d];
        var g = new double[d];
        for (int r = 0; r < rows; r++)
        {
            var (mean, s) = Statistics(x.Slice(r * d, d), eps);
            double mg = 0, mgn = 0;
            for (int i = 0; i < d; i++)
            {
                n[i] = (x[r * d + i] - mean) / s;
                g[i] = (double)dy[r * d + i] * gamma[i];
                mg += g[i];
                mgn += g[i] * n[i];
            }
            mg /= d;
            mgn /= d;
            for (int i = 0; i < d; i++) dx[r * d + i] = (float)((g[i] - mg - n[i] * mgn) / s);
        }
    }
}

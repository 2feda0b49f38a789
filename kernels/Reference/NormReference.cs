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
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += x[r * d + i];
            mean /= d;
            for (int i = 0; i < d; i++) { double t = x[r * d + i] - mean; var += t * t; }
            var /= d;
            double rstd = 1.0 / Math.Sqrt(var + eps);
            for (int i = 0; i < d; i++) y[r * d + i] = (float)((x[r * d + i] - mean) * rstd * gamma[i] + beta[i]);
        }
    }

    /// <summary>dx[rows, d] of y = LayerNorm(x) for the upstream gradient dy, recomputed from x in double:
    /// dx = (g − mean(g) − n̂·mean(g·n̂))/√(var + eps) with g = dy·gamma and n̂ the normalised row.</summary>
    public static void LayerNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> dy, Span<float> dx, int rows, int d, float eps)
    {
        var n = new double[d];
        var g = new double[d];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += x[r * d + i];
            mean /= d;
            for (int i = 0; i < d; i++) { double t = x[r * d + i] - mean; var += t * t; }
            var /= d;
            double s = Math.Sqrt(var + eps), mg = 0, mgn = 0;
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

namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar reference of the linear family: C = A·W + bias, accumulated in double. Deliberately the obvious loop:
/// the oracle the CPU GEMM, the ILGPU GEMMs and cuBLAS are checked against.</summary>
public static class LinearReference
{
    /// <summary>c[m, n] = a[m, k]·W + bias, with W given in <paramref name="layout"/> ([k, n] or [n, k]); bias may be empty.</summary>
    /// <summary>dx[m, k] = dy[m, n] · Wᵀ, W given as [k, n] (InOut) or [n, k] (OutIn), accumulated in double.</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> w, WeightLayout layout, Span<float> dx, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int kk = 0; kk < k; kk++)
            {
                double s = 0;
                for (int j = 0; j < n; j++) s += (double)dy[i * n + j] * (layout == WeightLayout.InOut ? w[kk * n + j] : w[j * k + kk]);
                dx[i * k + kk] = (float)s;
            }
    }

    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> w, WeightLayout layout, ReadOnlySpan<float> bias,
        Span<float> c, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = bias.IsEmpty ? 0 : bias[j];
                for (int kk = 0; kk < k; kk++)
                    s += (double)a[i * k + kk] * (layout == WeightLayout.InOut ? w[kk * n + j] : w[j * k + kk]);
                c[i * n + j] = (float)s;
            }
    }
}

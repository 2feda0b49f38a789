using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

// LayerNorm over the last axis, torch semantics: y = (x − mean)·rstd·gamma + beta, rstd = 1/√(var + eps), biased variance.
//   Forward   — TensorPrimitives per row (vectorised sums), optional taps: normalized (before gain/bias) and scale = √(var + eps).
//   Reference — double-precision scalar loop.
public static class LayerNorm
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y,
        int rows, int d, float eps, Span<float> normalized = default, Span<float> scale = default)
    {
        for (int r = 0; r < rows; r++) Row(x.Slice(r * d, d), gamma, beta, y.Slice(r * d, d), eps,
            normalized.IsEmpty ? default : normalized.Slice(r * d, d), scale.IsEmpty ? default : scale.Slice(r, 1));
    }

    public static void Row(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y, float eps,
        Span<float> normalized = default, Span<float> scale = default)
    {
        int d = x.Length;
        float mean = TensorPrimitives.Sum(x) / d;
        TensorPrimitives.Subtract(x, mean, y);                     // y = x − mean (y may alias x)
        float var = TensorPrimitives.SumOfSquares(y) / d;
        float std = MathF.Sqrt(var + eps);
        float rstd = 1f / std;
        TensorPrimitives.Multiply(y, rstd, y);
        if (!normalized.IsEmpty) y.CopyTo(normalized);
        if (!scale.IsEmpty) scale[0] = std;
        TensorPrimitives.MultiplyAdd(y, gamma, beta, y);
    }

    public static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y,
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
}

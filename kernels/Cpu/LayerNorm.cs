using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

// LayerNorm over the last axis, torch semantics: y = (x − mean)·rstd·gamma + beta, rstd = 1/√(var + eps), biased variance.
//   Forward   — TensorPrimitives per row (vectorised sums), optional taps: normalized (before gain/bias) and scale = √(var + eps).
//   Backward  — from those taps, per row in double: dx = (g − mean(g) − n̂·mean(g·n̂))/scale, g = dy·gamma.
//   Scalar reference: Reference/NormReference (double precision).
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
}

/// <summary>The layer-norm family on the CPU, parallel over rows.</summary>
sealed class CpuNorm(CpuBackend backend) : INormOps
{
    public void LayerNormBackward(DeviceBuffer dy, DeviceBuffer normalized, DeviceBuffer scale, DeviceBuffer gamma, DeviceBuffer dx, int rows, int d)
    {
        var (dys, ns, ss, g, dxs) = (CpuBackend.Seg(dy), CpuBackend.Seg(normalized), CpuBackend.Seg(scale), CpuBackend.Seg(gamma), CpuBackend.Seg(dx));
        backend.ForRows(rows, r =>
        {
            Span<float> dyr = dys.AsSpan(r * d, d), nr = ns.AsSpan(r * d, d), dxr = dxs.AsSpan(r * d, d);
            double mg = 0, mgn = 0;
            for (int i = 0; i < d; i++)
            {
                double gi = (double)dyr[i] * g[i];
                mg += gi;
                mgn += gi * nr[i];
            }
            mg /= d;
            mgn /= d;
            double inv = 1.0 / ss[r];
            for (int i = 0; i < d; i++) dxr[i] = (float)(((double)dyr[i] * g[i] - mg - nr[i] * mgn) * inv);
        });
    }

    public void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        var (xs, g, bt, ys) = (CpuBackend.Seg(x), CpuBackend.Seg(gamma), CpuBackend.Seg(beta), CpuBackend.Seg(y));
        var (ns, ss) = (normalized is null ? default : CpuBackend.Seg(normalized), scale is null ? default : CpuBackend.Seg(scale));
        backend.ForRows(rows, r => Cpu.LayerNorm.Row(xs.AsSpan(r * d, d), g.AsSpan(0, d), bt.AsSpan(0, d), ys.AsSpan(r * d, d), eps,
            normalized is null ? default : ns.AsSpan(r * d, d), scale is null ? default : ss.AsSpan(r, 1)));
    }

    public void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y,
        int rows, int d, float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        var (av, bv, sv, g, bt, ys) = (CpuBackend.Seg(a), CpuBackend.Seg(b), CpuBackend.Seg(sum), CpuBackend.Seg(gamma), CpuBackend.Seg(beta), CpuBackend.Seg(y));
        var (ns, ss) = (normalized is null ? default : CpuBackend.Seg(normalized), scale is null ? default : CpuBackend.Seg(scale));
        backend.ForRows(rows, r =>
        {
            var row = sv.AsSpan(r * d, d);
            TensorPrimitives.Add(av.AsSpan(r * d, d), bv.AsSpan(r * d, d), row);
            Cpu.LayerNorm.Row(row, g.AsSpan(0, d), bt.AsSpan(0, d), ys.AsSpan(r * d, d), eps,
                normalized is null ? default : ns.AsSpan(r * d, d), scale is null ? default : ss.AsSpan(r, 1));
        });
    }
}

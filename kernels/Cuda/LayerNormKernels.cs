using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// LayerNorm, one thread per row (V1: simple and obviously right; a warp-per-row variant is the next step on a GPU).
// Scalar reference: Reference/NormReference. Taps (normalized before gain/bias, scale = √(var + eps)) written when flagged.
//   Forward     — y = LN(x)
//   AddForward  — sum = a + b written, then y = LN(sum): the residual add fused with the norm that reads it (slow twin:
//                 ElementwiseKernels.Add followed by Forward)
//   Backward    — dx = (g − mean(g) − n̂·mean(g·n̂))/scale, g = dy·gamma, from the forward's taps (dx may alias dy)
public static class LayerNormKernels
{
    [GpuKernel]
    public static void Backward(Index1D row, ArrayView<float> dy, ArrayView<float> normalized, ArrayView<float> scale, ArrayView<float> gamma,
        ArrayView<float> dx, int d)
    {
        long o = (long)(int)row * d;
        float mg = 0f, mgn = 0f;
        for (int i = 0; i < d; i++)
        {
            float g = dy[o + i] * gamma[i];
            mg += g;
            mgn += g * normalized[o + i];
        }
        mg /= d;
        mgn /= d;
        float inv = 1f / scale[row];
        for (int i = 0; i < d; i++) dx[o + i] = (dy[o + i] * gamma[i] - mg - normalized[o + i] * mgn) * inv;
    }

    [GpuKernel]
    public static void AddForward(Index1D row, ArrayView<float> a, ArrayView<float> b, ArrayView<float> sum, ArrayView<float> gamma,
        ArrayView<float> beta, ArrayView<float> y, int d, float eps, ArrayView<float> normalized, int writeNormalized, ArrayView<float> scale, int writeScale)
    {
        int r = row;
        long o = (long)r * d;
        for (int i = 0; i < d; i++) sum[o + i] = a[o + i] + b[o + i];
        Forward(row, sum, gamma, beta, y, d, eps, normalized, writeNormalized, scale, writeScale);
    }

    [GpuKernel]
    public static void Forward(Index1D row, ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
        int d, float eps, ArrayView<float> normalized, int writeNormalized, ArrayView<float> scale, int writeScale)
    {
        int r = row;
        long o = (long)r * d;
        float sum = 0f;
        for (int i = 0; i < d; i++) sum += x[o + i];
        float mean = sum / d;
        float sq = 0f;
        for (int i = 0; i < d; i++)
        {
            float c = x[o + i] - mean;
            sq += c * c;
        }
        float std = XMath.Sqrt(sq / d + eps);
        float rstd = 1f / std;
        if (writeScale != 0) scale[r] = std;
        for (int i = 0; i < d; i++)
        {
            float n = (x[o + i] - mean) * rstd;
            if (writeNormalized != 0) normalized[o + i] = n;
            y[o + i] = n * gamma[i] + beta[i];
        }
    }
}

/// <summary>The layer-norm family on ILGPU: one thread per row.</summary>
sealed class IlgpuNorm : INormOps
{
    readonly IlgpuBackend _b;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, ArrayView<float>, int, ArrayView<float>, int> _layerNorm;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float,
        ArrayView<float>, int, ArrayView<float>, int> _addLayerNorm;

    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _backward;

    public IlgpuNorm(IlgpuBackend backend)
    {
        _b = backend;
        _backward = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(
            LayerNormKernels.Backward);
        _layerNorm = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float,
            ArrayView<float>, int, ArrayView<float>, int>(LayerNormKernels.Forward);
        _addLayerNorm = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int, float, ArrayView<float>, int, ArrayView<float>, int>(LayerNormKernels.AddForward);
    }

    public void LayerNormBackward(DeviceBuffer dy, DeviceBuffer normalized, DeviceBuffer scale, DeviceBuffer gamma, DeviceBuffer dx, int rows, int d)
    {
        long n = (long)rows * d;
        if (n == 0) return;
        _backward(rows, IlgpuBackend.Of(dy, n, "dy", "LayerNormBackward").View, IlgpuBackend.Of(normalized, n, "normalized", "LayerNormBackward").View,
            IlgpuBackend.Of(scale, rows, "scale", "LayerNormBackward").View, IlgpuBackend.Of(gamma, d, "gamma", "LayerNormBackward").View,
            IlgpuBackend.Of(dx, n, "dx", "LayerNormBackward").View, d);
    }

    public void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        long n = (long)rows * d;
        var (nv, hasN) = _b.Optional(normalized, n, "normalized", "LayerNorm");
        var (sv, hasS) = _b.Optional(scale, rows, "scale", "LayerNorm");
        _layerNorm(rows, IlgpuBackend.Of(x, n, "x", "LayerNorm").View, IlgpuBackend.Of(gamma, d, "gamma", "LayerNorm").View,
            IlgpuBackend.Of(beta, d, "beta", "LayerNorm").View, IlgpuBackend.Of(y, n, "y", "LayerNorm").View, d, eps, nv, hasN, sv, hasS);
    }

    public void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y,
        int rows, int d, float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        long n = (long)rows * d;
        var (nv, hasN) = _b.Optional(normalized, n, "normalized", "AddLayerNorm");
        var (sv, hasS) = _b.Optional(scale, rows, "scale", "AddLayerNorm");
        _addLayerNorm(rows, IlgpuBackend.Of(a, n, "a", "AddLayerNorm").View, IlgpuBackend.Of(b, n, "b", "AddLayerNorm").View,
            IlgpuBackend.Of(sum, n, "sum", "AddLayerNorm").View, IlgpuBackend.Of(gamma, d, "gamma", "AddLayerNorm").View,
            IlgpuBackend.Of(beta, d, "beta", "AddLayerNorm").View, IlgpuBackend.Of(y, n, "y", "AddLayerNorm").View, d, eps, nv, hasN, sv, hasS);
    }
}

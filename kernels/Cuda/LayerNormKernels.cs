using ILGPU;
using ILGPU.Algorithms;

namespace PolyEngine.Kernels.Cuda;

// LayerNorm, one thread per row (V1: simple and obviously right; a warp-per-row variant is the next step on a GPU).
// Scalar reference: Cpu.LayerNorm.Reference. Taps (normalized before gain/bias, scale = √(var + eps)) written when flagged.
//   Forward     — y = LN(x)
//   AddForward  — sum = a + b written, then y = LN(sum): the residual add fused with the norm that reads it (slow twin:
//                 ElementwiseKernels.Add followed by Forward)
public static class LayerNormKernels
{
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

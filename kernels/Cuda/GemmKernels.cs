using ILGPU;

namespace PolyEngine.Kernels.Cuda;

// GEMM ILGPU kernels: y[rows, N] = x[rows, K] · W[K, N] + bias. On a real GPU cuBLAS does the GEMMs; this kernel serves
// the emulated path (ILGPU's CPU accelerator) and GPUs without cuBLAS. Scalar reference: Cpu.Gemm.Reference.
//   Naive — V1: one thread per output element, fp32 accumulation in k order.
public static class GemmKernels
{
    [GpuKernel]
    public static void Naive(Index1D i, ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, int k, int n,
        ArrayView<float> y)
    {
        int r = i / n, j = i % n;
        float acc = hasBias != 0 ? bias[j] : 0f;
        long xo = (long)r * k;
        for (int kk = 0; kk < k; kk++) acc += x[xo + kk] * w[(long)kk * n + j];
        y[i] = acc;
    }
}

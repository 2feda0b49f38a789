using ILGPU;
using ILGPU.Algorithms;

namespace PolyEngine.Kernels.Cuda;

// Logits-side reductions (scalar reference: Cpu.LogitReductions.Reference): what leaves the device instead of [rows, vocab].
//   LogSumExp — one thread per row: max, then Σ exp(x − max) in float, lse = max + log(sum).
//   The top-k per row is SaeKernels.TopK (a size-k heap per row, ties to the lower index); the host sorts each row's k.
public static class LogitKernels
{
    [GpuKernel]
    public static void LogSumExp(Index1D row, ArrayView<float> x, int width, ArrayView<float> lse)
    {
        long o = (long)(int)row * width;
        float max = float.NegativeInfinity;
        for (int i = 0; i < width; i++) max = XMath.Max(max, x[o + i]);
        float sum = 0f;
        for (int i = 0; i < width; i++) sum += XMath.Exp(x[o + i] - max);
        lse[row] = max + XMath.Log(sum);
    }
}

using ILGPU;
using ILGPU.Algorithms;

namespace PolyEngine.Kernels.Cuda;

// Element-wise ILGPU kernels, one thread per output element (scalar references: CpuBackend / Cpu.Activations).
//   Gather       — y[r, c] = table[ids[r], c]
//   Add          — y = a + b
//   CopyColumns  — dst[r, c] = src[r, offset + c]
//   Activate     — GELU tanh as x·sigmoid(2u), GELU erf with the Numerical Recipes erfc fit, ReLU
// Rules from docs/CUDA.md §2: MathMode.Default, XMath (not Math/MathF), no FusedMultiplyAdd, no Math.Clamp, no System.Half.
public static class ElementwiseKernels
{
    [GpuKernel]
    public static void Gather(Index1D i, ArrayView<int> ids, ArrayView<float> table, int d, ArrayView<float> y)
    {
        int r = i / d, c = i % d;
        y[i] = table[(long)ids[r] * d + c];
    }

    [GpuKernel]
    public static void Add(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    [GpuKernel]
    public static void CopyColumns(Index1D i, ArrayView<float> src, int srcWidth, int colOffset, int width, ArrayView<float> dst)
    {
        int r = i / width, c = i % width;
        dst[i] = src[(long)r * srcWidth + colOffset + c];
    }

    /// <summary><paramref name="kind"/> is <see cref="Activation"/> as an int.</summary>
    [GpuKernel]
    public static void Activate(Index1D i, ArrayView<float> x, ArrayView<float> y, int kind)
    {
        float v = x[i];
        if (kind == (int)Activation.GeluTanh)
            y[i] = v / (1f + XMath.Exp(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
        else if (kind == (int)Activation.GeluErf)
            y[i] = 0.5f * v * (1f + Erf(v * 0.70710678118654752f));
        else
            y[i] = XMath.Max(v, 0f);
    }

    /// <summary>erf(x) from the erfc fit with fractional error below 1.2e-7 (the CPU path's Activations.Erf, in float).</summary>
    public static float Erf(float x)
    {
        float z = XMath.Abs(x);
        float t = 1f / (1f + 0.5f * z);
        float p = 0.17087277f;
        p = p * t - 0.82215223f;
        p = p * t + 1.48851587f;
        p = p * t - 1.13520398f;
        p = p * t + 0.27886807f;
        p = p * t - 0.18628806f;
        p = p * t + 0.09678418f;
        p = p * t + 0.37409196f;
        p = p * t + 1.00002368f;
        p = p * t - 1.26551223f;
        float ans = t * XMath.Exp(p - z * z);
        return x >= 0f ? 1f - ans : ans - 1f;
    }
}

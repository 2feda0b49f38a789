using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

// Element-wise activations.
//   Apply     — GELU-tanh as x·sigmoid(2u) with Vector256.Exp, GELU-erf with the Erf fit below in float vectors, ReLU through Max.
//   Erf       — W. H. Press et al.'s erfc Chebyshev fit (fractional error < 1.2e-7), evaluated in double.
//   Backward  — dy·act′(x) in float vectors (the same exp and erf fit); Derivative: act′(x) per element in double for the tails.
//   Scalar reference: Reference/ActivationReference (double precision, an erf of its own).
public static class Activations
{
    const float SqrtTwoOverPi = 0.7978845608028654f;

    public static void Apply(ReadOnlySpan<float> x, Span<float> y, Activation activation)
    {
        switch (activation)
        {
            case Activation.GeluTanh:
                GeluTanh(x, y);
                break;
            case Activation.GeluErf:
                GeluErf(x, y);
                break;
            case Activation.Relu:
                TensorPrimitives.Max(x, 0f, y);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(activation), activation, "unknown activation");
        }
    }

    // 0.5·x·(1 + tanh(u)) = x·sigmoid(2u) = x / (1 + exp(−2u)), u = √(2/π)·(x + 0.044715·x³): one exp per element,
    // and the right limits (x → −∞ gives −0, x → +∞ gives x).
    static unsafe void GeluTanh(ReadOnlySpan<float> x, Span<float> y)
    {
        int i = 0;
        fixed (float* xp = x, yp = y)
        {
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
            {
                var c1 = System.Runtime.Intrinsics.Vector256.Create(-2f * SqrtTwoOverPi);
                var c3 = System.Runtime.Intrinsics.Vector256.Create(0.044715f);
                var one = System.Runtime.Intrinsics.Vector256.Create(1f);
                for (; i <= x.Length - 8; i += 8)
                {
                    var v = System.Runtime.Intrinsics.Vector256.Load(xp + i);
                    var inner = v * (one + c3 * v * v);
                    var e = System.Runtime.Intrinsics.Vector256.Exp(c1 * inner);
                    System.Runtime.Intrinsics.Vector256.Store(v / (one + e), yp + i);
                }
            }
            for (; i < x.Length; i++)
            {
                float v = xp[i];
                yp[i] = v / (1f + MathF.Exp(-2f * SqrtTwoOverPi * (v + 0.044715f * v * v * v)));
            }
        }
    }

    // The erfc fit below in float vectors: t = 1/(1 + z/2), erfc(z) = t·exp(−z² + P(t)); the scalar tail uses the double version.
    static unsafe void GeluErf(ReadOnlySpan<float> x, Span<float> y)
    {
        int i = 0;
        fixed (float* xp = x, yp = y)
        {
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
            {
                var one = System.Runtime.Intrinsics.Vector256.Create(1f);
                var half = System.Runtime.Intrinsics.Vector256.Create(0.5f);
                var invSqrt2 = System.Runtime.Intrinsics.Vector256.Create(0.70710678118654752f);
                for (; i <= x.Length - 8; i += 8)
                {
                    var v = System.Runtime.Intrinsics.Vector256.Load(xp + i);
                    var u = v * invSqrt2;
                    var z = System.Runtime.Intrinsics.Vector256.Abs(u);
                    var t = one / (one + half * z);
                    var poly = Horner(t);
                    var ans = t * System.Runtime.Intrinsics.Vector256.Exp(poly - z * z);
                    var erf = System.Runtime.Intrinsics.Vector256.ConditionalSelect(
                        System.Runtime.Intrinsics.Vector256.GreaterThanOrEqual(u, System.Runtime.Intrinsics.Vector256<float>.Zero), one - ans, ans - one);
                    System.Runtime.Intrinsics.Vector256.Store(half * v * (one + erf), yp + i);
                }
            }
            for (; i < x.Length; i++) yp[i] = GeluErf(xp[i]);
        }
    }

    static System.Runtime.Intrinsics.Vector256<float> Horner(System.Runtime.Intrinsics.Vector256<float> t)
    {
        static System.Runtime.Intrinsics.Vector256<float> C(float c) => System.Runtime.Intrinsics.Vector256.Create(c);
        var p = C(0.17087277f);
        p = p * t + C(-0.82215223f);
        p = p * t + C(1.48851587f);
        p = p * t + C(-1.13520398f);
        p = p * t + C(0.27886807f);
        p = p * t + C(-0.18628806f);
        p = p * t + C(0.09678418f);
        p = p * t + C(0.37409196f);
        p = p * t + C(1.00002368f);
        return p * t + C(-1.26551223f);
    }

    public static float GeluErf(float x) => (float)(0.5 * x * (1.0 + Erf(x / Math.Sqrt(2.0))));

    /// <summary>dx = dy·act′(x) (dx may alias dy): GELU-tanh and GELU-erf in float vectors with the forward's exp and erf fit
    /// (GELU-tanh: with s = sigmoid(2u), act′ = s + 2x·s(1 − s)·√(2/π)(1 + 3·0.044715x²)), the tail and ReLU per element.</summary>
    public static unsafe void Backward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx, Activation activation)
    {
        int i = 0;
        fixed (float* xp = x, dyp = dy, dxp = dx)
        {
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated && activation != Activation.Relu)
            {
                static System.Runtime.Intrinsics.Vector256<float> C(float c) => System.Runtime.Intrinsics.Vector256.Create(c);
                var one = C(1f);
                for (; i <= x.Length - 8; i += 8)
                {
                    var v = System.Runtime.Intrinsics.Vector256.Load(xp + i);
                    System.Runtime.Intrinsics.Vector256<float> der;
                    if (activation == Activation.GeluTanh)
                    {
                        var x2 = v * v;
                        var s = one / (one + System.Runtime.Intrinsics.Vector256.Exp(C(-2f * SqrtTwoOverPi) * v * (one + C(0.044715f) * x2)));
                        der = s + C(2f) * v * s * (one - s) * C(SqrtTwoOverPi) * (one + C(3f * 0.044715f) * x2);
                    }
                    else
                    {
                        var u = v * C(0.70710678118654752f);
                        var z = System.Runtime.Intrinsics.Vector256.Abs(u);
                        var t = one / (one + C(0.5f) * z);
                        var ans = t * System.Runtime.Intrinsics.Vector256.Exp(Horner(t) - z * z);
                        var erf = System.Runtime.Intrinsics.Vector256.ConditionalSelect(
                            System.Runtime.Intrinsics.Vector256.GreaterThanOrEqual(u, System.Runtime.Intrinsics.Vector256<float>.Zero), one - ans, ans - one);
                        der = C(0.5f) * (one + erf) + v * System.Runtime.Intrinsics.Vector256.Exp(C(-0.5f) * v * v) * C(0.3989422804014327f);
                    }
                    System.Runtime.Intrinsics.Vector256.Store(System.Runtime.Intrinsics.Vector256.Load(dyp + i) * der, dxp + i);
                }
            }
            for (; i < x.Length; i++) dxp[i] = dyp[i] * Derivative(xp[i], activation);
        }
    }

    /// <summary>act′(x), in double inside (the forward's erf fit for GELU-erf).</summary>
    public static float Derivative(float x, Activation activation)
    {
        switch (activation)
        {
            case Activation.GeluTanh:
                double t = Math.Tanh(SqrtTwoOverPi * (x + 0.044715 * x * x * x));
                return (float)(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SqrtTwoOverPi * (1 + 3 * 0.044715 * x * x));
            case Activation.GeluErf:
                return (float)(0.5 * (1 + Erf(x / Math.Sqrt(2.0))) + x * Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI));
            case Activation.Relu:
                return x > 0 ? 1f : 0f;
            default:
                throw new ArgumentOutOfRangeException(nameof(activation), activation, "unknown activation");
        }
    }

    /// <summary>erf(x) with fractional error below 1.2e-7 (Numerical Recipes erfcc).</summary>
    public static double Erf(double x)
    {
        double z = Math.Abs(x);
        double t = 1.0 / (1.0 + 0.5 * z);
        double ans = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
            t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? 1.0 - ans : ans - 1.0;
    }
}

/// <summary>The activation family on the CPU, parallel over chunks.</summary>
sealed class CpuActivations(CpuBackend backend) : IActivationOps
{
    public void Backward(DeviceBuffer x, DeviceBuffer dy, DeviceBuffer dx, long n, Activation activation)
    {
        var (xs, dys, dxs) = (CpuBackend.Seg(x), CpuBackend.Seg(dy), CpuBackend.Seg(dx));
        if (xs.Count < n || dys.Count < n || dxs.Count < n) throw new ArgumentException($"Activation backward: buffers shorter than {n}");
        const int block = 4096;
        backend.ForRows((int)((n + block - 1) / block), c =>
        {
            long i0 = (long)c * block, i1 = Math.Min(n, i0 + block);
            Activations.Backward(xs.AsSpan((int)i0, (int)(i1 - i0)), dys.AsSpan((int)i0, (int)(i1 - i0)), dxs.AsSpan((int)i0, (int)(i1 - i0)), activation);
        });
    }

    public void Forward(DeviceBuffer x, DeviceBuffer y, long n, Activation activation)
    {
        var (xs, ys) = (CpuBackend.Seg(x), CpuBackend.Seg(y));
        const int Chunk = 16384;
        int chunks = (int)((n + Chunk - 1) / Chunk);
        backend.ForRows(chunks, c =>
        {
            int o = c * Chunk, len = (int)Math.Min(Chunk, n - o);
            Activations.Apply(xs.AsSpan(o, len), ys.AsSpan(o, len), activation);
        });
    }
}

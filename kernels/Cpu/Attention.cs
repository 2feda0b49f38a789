using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

// Causal self-attention and rotary embeddings. Layout of q, k, v, z: [batch, seq, n_heads, d_head] (row stride n_heads·d_head).
//   Causal    — per (batch, head): K gathered transposed and V contiguous, scores and z as vector axpys, masked entries never
//               computed (HF's finfo.min mask gives exact zeros after softmax), stable softmax, z = Σ p·v. Optional pattern tap.
//   Rotary    — NeoX "rotate half": pairs (j, j + r/2) of the first r dims; inv_freq and angles in float32 as HF computes them.
//   Reference — double-precision scalar loops for both.
public static class Attention
{
    public static unsafe void Causal(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> z,
        int batch, int seq, int nHeads, int dHead, float scale, Span<float> pattern, int b, int h)
    {
        int d = nHeads * dHead;
        // K transposed to [d_head, seq] so a query's scores are d_head axpys over keys; V contiguous [seq, d_head].
        var kt = System.Buffers.ArrayPool<float>.Shared.Rent(seq * dHead);
        var vh = System.Buffers.ArrayPool<float>.Shared.Rent(seq * dHead);
        var p = System.Buffers.ArrayPool<float>.Shared.Rent(seq);
        try
        {
            for (int s = 0; s < seq; s++)
            {
                int off = (b * seq + s) * d + h * dHead;
                for (int i = 0; i < dHead; i++) kt[i * seq + s] = k[off + i];
                v.Slice(off, dHead).CopyTo(vh.AsSpan(s * dHead));
            }
            fixed (float* ktp = kt, vhp = vh, pp = p)
            fixed (float* qp = q, zp = z)
                for (int t = 0; t < seq; t++)
                {
                    float* qt = qp + (b * seq + t) * d + h * dHead;
                    int n = t + 1;                         // keys 0..t; masked keys are never computed
                    new Span<float>(pp, n).Clear();
                    for (int i = 0; i < dHead; i++) Axpy(qt[i], ktp + i * seq, pp, n);
                    var row = new Span<float>(pp, n);
                    TensorPrimitives.Multiply(row, scale, row);
                    float max = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, max, row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Divide(row, TensorPrimitives.Sum(row), row);
                    float* zt = zp + (b * seq + t) * d + h * dHead;
                    new Span<float>(zt, dHead).Clear();
                    for (int s = 0; s < n; s++) Axpy(pp[s], vhp + s * dHead, zt, dHead);
                    if (!pattern.IsEmpty)
                    {
                        var prow = pattern.Slice((((b * nHeads + h) * seq) + t) * seq, seq);
                        row.CopyTo(prow);
                        prow[n..].Clear();
                    }
                }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(kt);
            System.Buffers.ArrayPool<float>.Shared.Return(vh);
            System.Buffers.ArrayPool<float>.Shared.Return(p);
        }
    }

    /// <summary>y[0..n) += a·x[0..n) (inlined vector loop: the attention inner loops are too short for a library call).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static unsafe void Axpy(float a, float* x, float* y, int n)
    {
        int i = 0;
        if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
        {
            var av = System.Runtime.Intrinsics.Vector256.Create(a);
            for (; i <= n - 8; i += 8)
                System.Runtime.Intrinsics.Vector256.Store(
                    System.Runtime.Intrinsics.Vector256.MultiplyAddEstimate(av, System.Runtime.Intrinsics.Vector256.Load(x + i),
                        System.Runtime.Intrinsics.Vector256.Load(y + i)), y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }

    /// <summary>inv_freq[j] = 1 / base^(2j / r), j &lt; r/2, as HF computes it (float32).</summary>
    public static float[] InverseFrequencies(int rotaryDim, float rotaryBase)
    {
        var inv = new float[rotaryDim / 2];
        for (int j = 0; j < inv.Length; j++) inv[j] = 1f / MathF.Pow(rotaryBase, (float)(2 * j) / rotaryDim);
        return inv;
    }

    public static void Rotary(ReadOnlySpan<float> x, Span<float> y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase)
    {
        if (!x.Overlaps(y)) x.Slice(0, batch * seq * nHeads * dHead).CopyTo(y);
        int half = rotaryDim / 2;
        var inv = InverseFrequencies(rotaryDim, rotaryBase);
        Span<float> cos = stackalloc float[half], sin = stackalloc float[half];
        for (int t = 0; t < seq; t++)
        {
            for (int j = 0; j < half; j++)
            {
                float angle = t * inv[j];
                cos[j] = MathF.Cos(angle);
                sin[j] = MathF.Sin(angle);
            }
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < nHeads; h++)
                {
                    var v = y.Slice(((b * seq + t) * nHeads + h) * dHead, rotaryDim);
                    for (int j = 0; j < half; j++)
                    {
                        float x1 = v[j], x2 = v[j + half];
                        v[j] = x1 * cos[j] - x2 * sin[j];
                        v[j + half] = x2 * cos[j] + x1 * sin[j];
                    }
                }
        }
    }

    public static void RotaryReference(ReadOnlySpan<float> x, Span<float> y, int batch, int seq, int nHeads, int dHead, int rotaryDim, double rotaryBase)
    {
        int half = rotaryDim / 2;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seq; t++)
                for (int h = 0; h < nHeads; h++)
                {
                    int o = ((b * seq + t) * nHeads + h) * dHead;
                    for (int i = 0; i < dHead; i++) y[o + i] = x[o + i];
                    for (int j = 0; j < half; j++)
                    {
                        double angle = t / Math.Pow(rotaryBase, 2.0 * j / rotaryDim);
                        double x1 = x[o + j], x2 = x[o + j + half];
                        y[o + j] = (float)(x1 * Math.Cos(angle) - x2 * Math.Sin(angle));
                        y[o + j + half] = (float)(x2 * Math.Cos(angle) + x1 * Math.Sin(angle));
                    }
                }
    }

    public static void CausalReference(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> z,
        int batch, int seq, int nHeads, int dHead, double scale, Span<float> pattern)
    {
        int d = nHeads * dHead;
        var p = new double[seq];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < nHeads; h++)
                for (int t = 0; t < seq; t++)
                {
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < dHead; i++) dot += (double)q[(b * seq + t) * d + h * dHead + i] * k[(b * seq + s) * d + h * dHead + i];
                        p[s] = dot * scale;
                        max = Math.Max(max, p[s]);
                    }
                    double sum = 0;
                    for (int s = 0; s <= t; s++) { p[s] = Math.Exp(p[s] - max); sum += p[s]; }
                    for (int i = 0; i < dHead; i++)
                    {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += p[s] / sum * v[(b * seq + s) * d + h * dHead + i];
                        z[(b * seq + t) * d + h * dHead + i] = (float)acc;
                    }
                    if (!pattern.IsEmpty)
                        for (int s = 0; s < seq; s++) pattern[((b * nHeads + h) * seq + t) * seq + s] = s <= t ? (float)(p[s] / sum) : 0f;
                }
    }
}

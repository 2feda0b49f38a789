using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

// Causal self-attention and rotary embeddings. Layout of q, k, v, z: [batch, seq, n_heads, d_head] (row stride n_heads·d_head).
//   Causal    — per (batch, head): K and V gathered contiguous, scores by TensorPrimitives.Dot, masked entries never
//               computed (HF's finfo.min mask gives exact zeros after softmax), stable softmax, z = Σ p·v. Optional pattern tap.
//   Rotary    — NeoX "rotate half": pairs (j, j + r/2) of the first r dims; inv_freq and angles in float32 as HF computes them.
//   Reference — double-precision scalar loops for both.
public static class Attention
{
    public static void Causal(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> z,
        int batch, int seq, int nHeads, int dHead, float scale, Span<float> pattern, int b, int h)
    {
        int d = nHeads * dHead;
        var kh = new float[seq * dHead];
        var vh = new float[seq * dHead];
        for (int s = 0; s < seq; s++)
        {
            long off = ((long)b * seq + s) * d + h * dHead;
            k.Slice((int)off, dHead).CopyTo(kh.AsSpan(s * dHead));
            v.Slice((int)off, dHead).CopyTo(vh.AsSpan(s * dHead));
        }
        Span<float> p = seq <= 4096 ? stackalloc float[seq] : new float[seq];
        for (int t = 0; t < seq; t++)
        {
            var qt = q.Slice((int)(((long)b * seq + t) * d + h * dHead), dHead);
            var row = p[..(t + 1)];
            for (int s = 0; s <= t; s++) row[s] = TensorPrimitives.Dot(qt, kh.AsSpan(s * dHead, dHead)) * scale;
            float max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, row);
            TensorPrimitives.Exp(row, row);
            float sum = TensorPrimitives.Sum(row);
            TensorPrimitives.Divide(row, sum, row);
            var zt = z.Slice((int)(((long)b * seq + t) * d + h * dHead), dHead);
            zt.Clear();
            for (int s = 0; s <= t; s++) TensorPrimitives.MultiplyAdd(vh.AsSpan(s * dHead, dHead), row[s], zt, zt);
            if (!pattern.IsEmpty)
            {
                var prow = pattern.Slice((int)((((long)b * nHeads + h) * seq + t) * seq), seq);
                row.CopyTo(prow);
                prow[(t + 1)..].Clear();
            }
        }
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

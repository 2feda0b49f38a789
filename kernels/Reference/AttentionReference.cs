namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar references of the attention family (rotary embedding, causal attention) in double, and the rotary
/// frequencies every backend shares (computed in float32 exactly as HF does).</summary>
public static class AttentionReference
{
    /// <summary>inv_freq[j] = 1 / base^(2j / r), j &lt; r/2, as HF computes it (float32): what every backend rotates by.</summary>
    public static float[] InverseFrequencies(int rotaryDim, float rotaryBase)
    {
        var inv = new float[rotaryDim / 2];
        for (int j = 0; j < inv.Length; j++) inv[j] = 1f / MathF.Pow(rotaryBase, (float)(2 * j) / rotaryDim);
        return inv;
    }

    /// <summary>Rotate-half rotary on the first <paramref name="rotaryDim"/> dims of every head of x [batch, seq, heads, d_head],
    /// row t at position <paramref name="positionOffset"/> + t.</summary>
    public static void Rotary(ReadOnlySpan<float> x, Span<float> y, int batch, int seq, int nHeads, int dHead, int rotaryDim, double rotaryBase,
        int positionOffset = 0) => Rotate(x, y, batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset, 1);

    /// <summary>dx = Rᵀ·dy for <see cref="Rotary"/>: the pairs rotated by the negative angle, in double.</summary>
    public static void RotaryBackward(ReadOnlySpan<float> dy, Span<float> dx, int batch, int seq, int nHeads, int dHead, int rotaryDim, double rotaryBase,
        int positionOffset = 0) => Rotate(dy, dx, batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset, -1);

    /// <summary>The pairs (j, j + r/2) rotated by <paramref name="sign"/>·angle.</summary>
    static void Rotate(ReadOnlySpan<float> x, Span<float> y, int batch, int seq, int nHeads, int dHead, int rotaryDim, double rotaryBase,
        int positionOffset, int sign)
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
                        double angle = (positionOffset + t) / Math.Pow(rotaryBase, 2.0 * j / rotaryDim);
                        double x1 = x[o + j], x2 = x[o + j + half], sin = sign * Math.Sin(angle);
                        y[o + j] = (float)(x1 * Math.Cos(angle) - x2 * sin);
                        y[o + j + half] = (float)(x2 * Math.Cos(angle) + x1 * sin);
                    }
                }
    }

    /// <summary>Per (batch, head): queries t &lt; seq at positions keys − seq + t over keys s at positions [0, keys) (null:
    /// keys = seq): z[b, t, h, :] = Σ_{s ≤ keys − seq + t} softmax_s(scale·q·k)·v; q, z [batch, seq, heads, d_head], k, v
    /// [batch, keys, heads, d_head]; the pattern [batch, heads, seq, keys] when not empty.</summary>
    public static void Causal(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> z,
        int batch, int seq, int nHeads, int dHead, double scale, Span<float> pattern, int? keys = null)
    {
        int nk = keys ?? seq, offset = nk - seq;
        if (offset < 0) throw new ArgumentException($"Causal: {seq} queries need at least as many keys, got {nk}");
        int d = nHeads * dHead;
        var p = new double[nk];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < nHeads; h++)
                for (int t = 0; t < seq; t++)
                {
                    int last = offset + t;   // the query's own position: the last key it sees
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= last; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < dHead; i++) dot += (double)q[(b * seq + t) * d + h * dHead + i] * k[(b * nk + s) * d + h * dHead + i];
                        p[s] = dot * scale;
                        max = Math.Max(max, p[s]);
                    }
                    double sum = 0;
                    for (int s = 0; s <= last; s++) { p[s] = Math.Exp(p[s] - max); sum += p[s]; }
                    for (int i = 0; i < dHead; i++)
                    {
                        double acc = 0;
                        for (int s = 0; s <= last; s++) acc += p[s] / sum * v[(b * nk + s) * d + h * dHead + i];
                        z[(b * seq + t) * d + h * dHead + i] = (float)acc;
                    }
                    if (!pattern.IsEmpty)
                        for (int s = 0; s < nk; s++) pattern[((b * nHeads + h) * seq + t) * nk + s] = s <= last ? (float)(p[s] / sum) : 0f;
                }
    }

    /// <summary>The gradients of causal attention over a whole sequence, in double, by the chain rule through the softmax:
    /// dP = dz·vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dz.</summary>
    public static void CausalBackward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dz,
        Span<float> dq, Span<float> dk, Span<float> dv, int batch, int seq, int nHeads, int dHead, double scale)
    {
        int d = nHeads * dHead;
        var p = new double[seq];
        var dp = new double[seq];
        var gq = new double[seq * dHead];
        var gk = new double[seq * dHead];
        var gv = new double[seq * dHead];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < nHeads; h++)
            {
                Array.Clear(gq); Array.Clear(gk); Array.Clear(gv);
                int At(int t, int i) => (b * seq + t) * d + h * dHead + i;
                for (int t = 0; t < seq; t++)
                {
                    double max = double.NegativeInfinity, sum = 0, c = 0;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < dHead; i++) dot += (double)q[At(t, i)] * k[At(s, i)];
                        p[s] = dot * scale;
                        max = Math.Max(max, p[s]);
                    }
                    for (int s = 0; s <= t; s++) { p[s] = Math.Exp(p[s] - max); sum += p[s]; }
                    for (int s = 0; s <= t; s++)
                    {
                        p[s] /= sum;
                        double g = 0;
                        for (int i = 0; i < dHead; i++) g += (double)dz[At(t, i)] * v[At(s, i)];
                        dp[s] = g;
                        c += p[s] * g;
                    }
                    for (int s = 0; s <= t; s++)
                    {
                        double ds = p[s] * (dp[s] - c);
                        for (int i = 0; i < dHead; i++)
                        {
                            gq[t * dHead + i] += scale * ds * k[At(s, i)];
                            gk[s * dHead + i] += scale * ds * q[At(t, i)];
                            gv[s * dHead + i] += p[s] * dz[At(t, i)];
                        }
                    }
                }
                for (int t = 0; t < seq; t++)
                    for (int i = 0; i < dHead; i++)
                    {
                        dq[At(t, i)] = (float)gq[t * dHead + i];
                        dk[At(t, i)] = (float)gk[t * dHead + i];
                        dv[At(t, i)] = (float)gv[t * dHead + i];
                    }
            }
    }
}

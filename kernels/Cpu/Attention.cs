using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace PolyEngine.Kernels.Cpu;

// Causal self-attention and rotary embeddings. Layout of q, k, v, z: [batch, seq, n_heads, d_head] (row stride n_heads·d_head);
// k and v may hold more positions than q (keys kept from before: the queries are the last seq of the keys' positions).
//   Causal    — per (batch, head): K gathered transposed, 64 keys scored per register block, z summed 64 dims per block, masked entries never
//               computed (HF's finfo.min mask gives exact zeros after softmax), stable softmax, z = Σ p·v. Optional pattern tap.
//   Rotary    — NeoX "rotate half": pairs (j, j + r/2) of the first r dims, from a position offset; inv_freq and angles in
//               float32 as HF computes them; its backward rotates by the negative angle.
//   CausalBackward — per (batch, head), each query's softmax row recomputed (its sums in double): dS = P ⊙ (dP − rowsum(P ⊙ dP)),
//               dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dz, in float vector FMAs; queries with a zero dz row are skipped.
//   Scalar references: Reference/AttentionReference (double precision).
public static class Attention
{
    const int KeyBlock = 64;   // keys scored per register block (8 Vector256 accumulators)

    /// <summary>Queries [batch, seq, heads, d_head] at positions [keys − seq, keys) over keys/values [batch, keys, heads,
    /// d_head], for one (batch <paramref name="b"/>, head <paramref name="h"/>); the pattern [batch, heads, seq, keys].</summary>
    public static unsafe void Causal(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> z,
        int batch, int seq, int keys, int nHeads, int dHead, float scale, Span<float> pattern, int b, int h)
    {
        int d = nHeads * dHead, offset = keys - seq;
        int keysPad = (keys + KeyBlock - 1) / KeyBlock * KeyBlock;
        // K transposed to [d_head, keysPad] (zero-padded keys) so 64 keys' scores are 8 vector accumulators;
        // V contiguous [keys, d_head].
        var pool = System.Buffers.ArrayPool<float>.Shared;
        var kt = pool.Rent(keysPad * dHead);
        var vh = pool.Rent(keys * dHead);
        var p = pool.Rent(keysPad);
        try
        {
            Array.Clear(kt, 0, keysPad * dHead);
            for (int s = 0; s < keys; s++)
            {
                int off = (b * keys + s) * d + h * dHead;
                for (int i = 0; i < dHead; i++) kt[i * keysPad + s] = k[off + i];
                v.Slice(off, dHead).CopyTo(vh.AsSpan(s * dHead));
            }
            fixed (float* ktp = kt, vhp = vh, pp = p)
            fixed (float* qp = q, zp = z)
                for (int t = 0; t < seq; t++)
                {
                    float* qt = qp + (b * seq + t) * d + h * dHead;
                    int n = offset + t + 1;                // keys up to the query's position; scores past it are computed in the last block and ignored
                    for (int s0 = 0; s0 < n; s0 += KeyBlock) Scores64(qt, ktp + s0, keysPad, dHead, pp + s0);
                    var row = new Span<float>(pp, n);
                    TensorPrimitives.Multiply(row, scale, row);
                    float max = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, max, row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Divide(row, TensorPrimitives.Sum(row), row);
                    WeightedSum(pp, n, vhp, dHead, zp + (b * seq + t) * d + h * dHead);
                    if (!pattern.IsEmpty)
                    {
                        var prow = pattern.Slice((((b * nHeads + h) * seq) + t) * keys, keys);
                        row.CopyTo(prow);
                        prow[n..].Clear();
                    }
                }
        }
        finally
        {
            pool.Return(kt);
            pool.Return(vh);
            pool.Return(p);
        }
    }

    /// <summary>out[0..64) = Σ_i q[i]·kt[i, 0..64) (row stride <paramref name="ld"/>): 8 independent FMA chains.</summary>
    static unsafe void Scores64(float* q, float* kt, int ld, int dHead, float* output)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            for (int s = 0; s < KeyBlock; s++)
            {
                float acc = 0;
                for (int i = 0; i < dHead; i++) acc += q[i] * kt[(long)i * ld + s];
                output[s] = acc;
            }
            return;
        }
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default,
            a4 = default, a5 = default, a6 = default, a7 = default;
        for (int i = 0; i < dHead; i++, kt += ld)
        {
            var x = Vector256.Create(q[i]);
            a0 = Fma(x, kt, a0); a1 = Fma(x, kt + 8, a1); a2 = Fma(x, kt + 16, a2); a3 = Fma(x, kt + 24, a3);
            a4 = Fma(x, kt + 32, a4); a5 = Fma(x, kt + 40, a5); a6 = Fma(x, kt + 48, a6); a7 = Fma(x, kt + 56, a7);
        }
        a0.Store(output); a1.Store(output + 8); a2.Store(output + 16); a3.Store(output + 24);
        a4.Store(output + 32); a5.Store(output + 40); a6.Store(output + 48); a7.Store(output + 56);
    }

    /// <summary>z[0..dHead) = Σ_s p[s]·v[s, 0..dHead): 64 dims at a time in 8 accumulators, then 8, then scalars.</summary>
    static unsafe void WeightedSum(float* p, int n, float* v, int dHead, float* z)
    {
        int c = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; c + 64 <= dHead; c += 64)
            {
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default,
                    a4 = default, a5 = default, a6 = default, a7 = default;
                float* vs = v + c;
                for (int s = 0; s < n; s++, vs += dHead)
                {
                    var x = Vector256.Create(p[s]);
                    a0 = Fma(x, vs, a0); a1 = Fma(x, vs + 8, a1); a2 = Fma(x, vs + 16, a2); a3 = Fma(x, vs + 24, a3);
                    a4 = Fma(x, vs + 32, a4); a5 = Fma(x, vs + 40, a5); a6 = Fma(x, vs + 48, a6); a7 = Fma(x, vs + 56, a7);
                }
                a0.Store(z + c); a1.Store(z + c + 8); a2.Store(z + c + 16); a3.Store(z + c + 24);
                a4.Store(z + c + 32); a5.Store(z + c + 40); a6.Store(z + c + 48); a7.Store(z + c + 56);
            }
            for (; c + 8 <= dHead; c += 8)
            {
                var a = Vector256<float>.Zero;
                for (int s = 0; s < n; s++) a = Fma(Vector256.Create(p[s]), v + (long)s * dHead + c, a);
                a.Store(z + c);
            }
        }
        for (; c < dHead; c++)
        {
            float a = 0;
            for (int s = 0; s < n; s++) a += p[s] * v[(long)s * dHead + c];
            z[c] = a;
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<float> Fma(Vector256<float> x, float* y,
        Vector256<float> acc) =>
        Vector256.MultiplyAddEstimate(x, Vector256.Load(y), acc);

    /// <summary>The gradients of <see cref="Causal"/> over a whole sequence for one (batch <paramref name="b"/>, head
    /// <paramref name="h"/>): each query's softmax row recomputed, sums in double; dq, dk, dv of that head written.</summary>
    public static void CausalBackward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dz,
        Span<float> dq, Span<float> dk, Span<float> dv, int seq, int nHeads, int dHead, float scale, int b, int h)
    {
        int d = nHeads * dHead;
        var pool = System.Buffers.ArrayPool<float>.Shared;
        var p = pool.Rent(seq);
        var dp = pool.Rent(seq);
        var gk = pool.Rent(seq * dHead);
        var gv = pool.Rent(seq * dHead);
        try
        {
            Array.Clear(gk, 0, seq * dHead);
            Array.Clear(gv, 0, seq * dHead);
            for (int t = 0; t < seq; t++)
            {
                var qt = q.Slice((b * seq + t) * d + h * dHead, dHead);
                var dzt = dz.Slice((b * seq + t) * d + h * dHead, dHead);
                var gq = dq.Slice((b * seq + t) * d + h * dHead, dHead);
                gq.Clear();
                // A query whose dz row is zero adds nothing (dP = 0, so dS = 0 and Pᵀ·dz = 0): the positions after a
                // backward seed's, in every layer.
                if (TensorPrimitives.MaxMagnitude(dzt) == 0f) continue;
                // The softmax row, recomputed; its sums in double.
                double max = double.NegativeInfinity, sum = 0, c = 0;
                for (int s = 0; s <= t; s++)
                {
                    p[s] = TensorPrimitives.Dot(qt, k.Slice((b * seq + s) * d + h * dHead, dHead)) * scale;
                    max = Math.Max(max, p[s]);
                }
                for (int s = 0; s <= t; s++) { double e = Math.Exp(p[s] - max); p[s] = (float)e; sum += e; }
                for (int s = 0; s <= t; s++)
                {
                    p[s] = (float)(p[s] / sum);
                    dp[s] = TensorPrimitives.Dot(dzt, v.Slice((b * seq + s) * d + h * dHead, dHead));
                    c += p[s] * (double)dp[s];
                }
                for (int s = 0; s <= t; s++)
                {
                    float ds = (float)(p[s] * (dp[s] - c) * scale);
                    var ks = k.Slice((b * seq + s) * d + h * dHead, dHead);
                    TensorPrimitives.MultiplyAdd(ks, ds, gq, gq);                                      // dq[t] += dS[t, s]·k[s]
                    var gks = gk.AsSpan(s * dHead, dHead);
                    TensorPrimitives.MultiplyAdd(qt, ds, gks, gks);                                    // dk[s] += dS[t, s]·q[t]
                    var gvs = gv.AsSpan(s * dHead, dHead);
                    TensorPrimitives.MultiplyAdd(dzt, p[s], gvs, gvs);                                 // dv[s] += P[t, s]·dz[t]
                }
            }
            for (int s = 0; s < seq; s++)
            {
                gk.AsSpan(s * dHead, dHead).CopyTo(dk.Slice((b * seq + s) * d + h * dHead, dHead));
                gv.AsSpan(s * dHead, dHead).CopyTo(dv.Slice((b * seq + s) * d + h * dHead, dHead));
            }
        }
        finally
        {
            pool.Return(p);
            pool.Return(dp);
            pool.Return(gk);
            pool.Return(gv);
        }
    }

    /// <summary>Rotary on x [batch, seq, heads, d_head] into y (may alias), row t at position <paramref name="positionOffset"/> + t;
    /// <paramref name="inverse"/> rotates by the negative angle (the backward: Rᵀ).</summary>
    public static void Rotary(ReadOnlySpan<float> x, Span<float> y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase,
        int positionOffset = 0, bool inverse = false)
    {
        if (!x.Overlaps(y)) x.Slice(0, batch * seq * nHeads * dHead).CopyTo(y);
        int half = rotaryDim / 2;
        var inv = Reference.AttentionReference.InverseFrequencies(rotaryDim, rotaryBase);
        Span<float> cos = stackalloc float[half], sin = stackalloc float[half];
        for (int t = 0; t < seq; t++)
        {
            for (int j = 0; j < half; j++)
            {
                float angle = (positionOffset + t) * inv[j];
                cos[j] = MathF.Cos(angle);
                sin[j] = inverse ? -MathF.Sin(angle) : MathF.Sin(angle);
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
}

/// <summary>The attention family on the CPU: rotary, and causal attention parallel over (batch, head).</summary>
sealed class CpuAttention(CpuBackend backend) : IAttentionOps
{
    public string Variant => "cpu";

    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0)
    {
        if (positionOffset < 0) throw new ArgumentException($"Rotary: position offset {positionOffset} is negative");
        Attention.Rotary(CpuBackend.Span(x), CpuBackend.Span(y), batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset);
    }

    public void RotaryBackward(DeviceBuffer dy, DeviceBuffer dx, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0)
    {
        if (positionOffset < 0) throw new ArgumentException($"Rotary: position offset {positionOffset} is negative");
        Attention.Rotary(CpuBackend.Span(dy), CpuBackend.Span(dx), batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset, inverse: true);
    }

    public void CausalBackward(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer dz, DeviceBuffer dq, DeviceBuffer dk, DeviceBuffer dv,
        int batch, int seq, int nHeads, int dHead, float scale)
    {
        var (qs, ks, vs, dzs, dqs, dks, dvs) = (CpuBackend.Seg(q), CpuBackend.Seg(k), CpuBackend.Seg(v), CpuBackend.Seg(dz), CpuBackend.Seg(dq),
            CpuBackend.Seg(dk), CpuBackend.Seg(dv));
        backend.ForRows(batch * nHeads, bh => Attention.CausalBackward(qs, ks, vs, dzs, dqs, dks, dvs, seq, nHeads, dHead, scale, bh / nHeads, bh % nHeads));
    }

    public void Causal(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null, int? keys = null)
    {
        int nk = keys ?? seq;
        if (nk < seq) throw new ArgumentException($"CausalAttention: {seq} queries need at least as many keys, got {nk}");
        var (qs, ks, vs, zs) = (CpuBackend.Seg(q), CpuBackend.Seg(k), CpuBackend.Seg(v), CpuBackend.Seg(z));
        var ps = pattern is null ? default : CpuBackend.Seg(pattern);
        backend.ForRows(batch * nHeads, bh => Attention.Causal(qs, ks, vs, zs, batch, seq, nk, nHeads, dHead, scale,
            pattern is null ? default : ps.AsSpan(), bh / nHeads, bh % nHeads));
    }
}

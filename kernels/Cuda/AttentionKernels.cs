using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// Attention ILGPU kernels. Layout [batch, seq, n_heads, d_head] as on the CPU (scalar references: Reference/AttentionReference).
// Queries are the last seq of the keys' positions (keys ≥ seq; keys = seq for a whole sequence).
//   Rotary  — one thread per (row, head, pair j < r/2); cos/sin tables [positions, r/2] computed on the host in float32
//             exactly as HF does (t·inv_freq, then cos/sin), so no approximate sin.approx on large angles.
//   Causal  — V1: one thread per (batch, head, query), three passes over the keys it sees (max, sum, weighted V), no
//             scratch; masked keys are never touched, the pattern tap gets exact zeros past the query's position.
//   CausalBackwardRows / CausalBackwardKeys — the backward over a whole sequence: per query the pattern row, dS and dq; then
//             per key dk and dv from the stored rows (V1: one thread each; the GEMM form is the next step on a GPU).
//   CausalSoftmax — the GEMM attention's middle step (scores = scale·Q·Kᵀ and z = P·V are strided-batched GEMMs, cuBLAS
//             on a GPU): one thread per score row [.., t, :], softmax over the keys it sees in place, exact zeros after.
public static class AttentionKernels
{
    [GpuKernel]
    public static void Rotary(Index1D i, ArrayView<float> x, ArrayView<float> y, ArrayView<float> cos, ArrayView<float> sin,
        int seq, int nHeads, int dHead, int rotaryDim, int positionOffset, int inverse)
    {
        int half = rotaryDim / 2;
        int j = i % half, rh = i / half;            // rh = row·n_heads + head
        int t = positionOffset + rh / nHeads % seq;
        long o = (long)rh * dHead;
        float x1 = x[o + j], x2 = x[o + j + half];
        float c = cos[t * half + j], s = inverse != 0 ? -sin[t * half + j] : sin[t * half + j];
        y[o + j] = x1 * c - x2 * s;
        y[o + j + half] = x2 * c + x1 * s;
    }

    [GpuKernel]
    public static void Causal(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> z,
        int seq, int keys, int nHeads, int dHead, float scale, ArrayView<float> pattern, int writePattern)
    {
        int t = i % seq, bh = i / seq, h = bh % nHeads, b = bh / nHeads;
        int d = nHeads * dHead, last = keys - seq + t;   // the query's position: the last key it sees
        long qo = ((long)b * seq + t) * d + h * dHead;
        float max = float.NegativeInfinity;
        for (int s = 0; s <= last; s++) max = XMath.Max(max, Score(q, k, qo, ((long)b * keys + s) * d + h * dHead, dHead) * scale);
        float sum = 0f;
        for (int s = 0; s <= last; s++) sum += XMath.Exp(Score(q, k, qo, ((long)b * keys + s) * d + h * dHead, dHead) * scale - max);
        float inv = 1f / sum;
        for (int c = 0; c < dHead; c++) z[qo + c] = 0f;
        long po = ((long)bh * seq + t) * keys;
        for (int s = 0; s < keys; s++)
        {
            if (s > last)
            {
                if (writePattern != 0) pattern[po + s] = 0f;
                continue;
            }
            long ko = ((long)b * keys + s) * d + h * dHead;
            float p = XMath.Exp(Score(q, k, qo, ko, dHead) * scale - max) * inv;
            if (writePattern != 0) pattern[po + s] = p;
            for (int c = 0; c < dHead; c++) z[qo + c] += p * v[ko + c];
        }
    }

    /// <summary>One thread per (batch, head, query t): the pattern row P[t, :] into p, dS[t, :] = scale·P ⊙ (dP − Σ P ⊙ dP)
    /// into ds (zeros past t), and dq[t] = dS[t, :]·k. Rows of p and ds are [batch·heads, seq, seq].</summary>
    [GpuKernel]
    public static void CausalBackwardRows(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dz, ArrayView<float> dq,
        ArrayView<float> p, ArrayView<float> ds, int seq, int nHeads, int dHead, float scale)
    {
        int t = i % seq, bh = i / seq, h = bh % nHeads, b = bh / nHeads, d = nHeads * dHead;
        long qo = ((long)b * seq + t) * d + h * dHead, po = (long)(int)i * seq;
        float max = float.NegativeInfinity;
        for (int s = 0; s <= t; s++)
        {
            float score = Score(q, k, qo, ((long)b * seq + s) * d + h * dHead, dHead) * scale;
            p[po + s] = score;
            max = XMath.Max(max, score);
        }
        float sum = 0f;
        for (int s = 0; s <= t; s++)
        {
            float e = XMath.Exp(p[po + s] - max);
            p[po + s] = e;
            sum += e;
        }
        float inv = 1f / sum, c = 0f;
        for (int s = 0; s <= t; s++)
        {
            float pv = p[po + s] * inv, dp = Score(dz, v, qo, ((long)b * seq + s) * d + h * dHead, dHead);
            p[po + s] = pv;
            ds[po + s] = dp;
            c += pv * dp;
        }
        for (int s = t + 1; s < seq; s++) { p[po + s] = 0f; ds[po + s] = 0f; }
        for (int e = 0; e < dHead; e++) dq[qo + e] = 0f;
        for (int s = 0; s <= t; s++)
        {
            float g = p[po + s] * (ds[po + s] - c) * scale;
            ds[po + s] = g;
            long ko = ((long)b * seq + s) * d + h * dHead;
            for (int e = 0; e < dHead; e++) dq[qo + e] += g * k[ko + e];
        }
    }

    /// <summary>One thread per (batch, head, key s): dk[s] = Σ_{t ≥ s} dS[t, s]·q[t] and dv[s] = Σ_{t ≥ s} P[t, s]·dz[t].</summary>
    [GpuKernel]
    public static void CausalBackwardKeys(Index1D i, ArrayView<float> q, ArrayView<float> dz, ArrayView<float> p, ArrayView<float> ds,
        ArrayView<float> dk, ArrayView<float> dv, int seq, int nHeads, int dHead)
    {
        int s = i % seq, bh = i / seq, h = bh % nHeads, b = bh / nHeads, d = nHeads * dHead;
        long ko = ((long)b * seq + s) * d + h * dHead;
        for (int e = 0; e < dHead; e++) { dk[ko + e] = 0f; dv[ko + e] = 0f; }
        for (int t = s; t < seq; t++)
        {
            long po = ((long)bh * seq + t) * seq + s, qo = ((long)b * seq + t) * d + h * dHead;
            float g = ds[po], pv = p[po];
            for (int e = 0; e < dHead; e++)
            {
                dk[ko + e] += g * q[qo + e];
                dv[ko + e] += pv * dz[qo + e];
            }
        }
    }

    [GpuKernel]
    public static void CausalSoftmax(Index1D row, ArrayView<float> scores, int seq, int keys)
    {
        int last = keys - seq + row % seq;
        long o = (long)(int)row * keys;
        float max = float.NegativeInfinity;
        for (int s = 0; s <= last; s++) max = XMath.Max(max, scores[o + s]);
        float sum = 0f;
        for (int s = 0; s <= last; s++)
        {
            float e = XMath.Exp(scores[o + s] - max);
            scores[o + s] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int s = 0; s <= last; s++) scores[o + s] *= inv;
        for (int s = last + 1; s < keys; s++) scores[o + s] = 0f;
    }

    static float Score(ArrayView<float> q, ArrayView<float> k, long qo, long ko, int dHead)
    {
        float dot = 0f;
        for (int c = 0; c < dHead; c++) dot += q[qo + c] * k[ko + c];
        return dot;
    }
}

/// <summary>
/// The attention family on ILGPU. Rotary with cos/sin tables computed once per (seq, rotary dims, base) in float32 exactly
/// as the CPU backend and HF compute them. Causal attention as two strided-batched GEMMs around a softmax kernel (cuBLAS
/// on a GPU, the <see cref="GemmKernels.StridedBatched"/> twin elsewhere), or as the fused V1 kernel
/// (<see cref="Kind"/>: Gemm when cuBLAS is loaded, else Fused).
/// </summary>
sealed class IlgpuAttention : IAttentionOps, IDisposable
{
    readonly IlgpuBackend _b;
    readonly IlgpuLinear _linear;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int, int> _rotary;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        int, int, int, float> _backwardRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _backwardKeys;
    MemoryBuffer1D<float, Stride1D.Dense>? _p, _ds;   // [batch·heads, seq, seq] pattern and dS of the backward
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float, ArrayView<float>, int> _causal;
    readonly Action<Index1D, ArrayView<float>, int, int> _causalSoftmax;
    (int Positions, int RotaryDim, float Base, MemoryBuffer1D<float, Stride1D.Dense> Cos, MemoryBuffer1D<float, Stride1D.Dense> Sin)? _tables;
    MemoryBuffer1D<float, Stride1D.Dense>? _scratch;   // [n_heads, seq, keys] scores of the GEMM attention when no pattern is asked for

    public IlgpuAttention(IlgpuBackend backend, IlgpuLinear linear)
    {
        _b = backend;
        _linear = linear;
        var acc = backend.Acc;
        _backwardRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, int, int, int, float>(AttentionKernels.CausalBackwardRows);
        _backwardKeys = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int, int, int>(AttentionKernels.CausalBackwardKeys);
        _rotary = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int, int>(
            AttentionKernels.Rotary);
        _causal = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float,
            ArrayView<float>, int>(AttentionKernels.Causal);
        _causalSoftmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int>(AttentionKernels.CausalSoftmax);
    }

    public AttentionVariant Kind { get; set; }

    public string Variant => Kind.ToString().ToLowerInvariant();

    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0) =>
        Rotate(x, y, batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset, inverse: false);

    public void RotaryBackward(DeviceBuffer dy, DeviceBuffer dx, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0) =>
        Rotate(dy, dx, batch, seq, nHeads, dHead, rotaryDim, rotaryBase, positionOffset, inverse: true);

    /// <summary>The gradients of a whole-sequence causal attention: one thread per (batch, head, query) for the pattern row,
    /// dS and dq, then one per (batch, head, key) for dk and dv (V1 kernels, scratch [batch·heads, seq, seq]).</summary>
    public void CausalBackward(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer dz, DeviceBuffer dq, DeviceBuffer dk, DeviceBuffer dv,
        int batch, int seq, int nHeads, int dHead, float scale)
    {
        long n = (long)batch * seq * nHeads * dHead;
        if (n == 0) return;
        var views = new[] { (q, "q"), (k, "k"), (v, "v"), (dz, "dz"), (dq, "dq"), (dk, "dk"), (dv, "dv") }
            .Select(x => IlgpuBackend.Of(x.Item1, n, x.Item2, "CausalBackward").View).ToArray();
        long square = (long)batch * nHeads * seq * seq;
        var (p, ds) = (_b.Grow(ref _p, square), _b.Grow(ref _ds, square));
        int rows = batch * nHeads * seq;
        _backwardRows(rows, views[0], views[1], views[2], views[3], views[4], p.View, ds.View, seq, nHeads, dHead, scale);
        _backwardKeys(rows, views[0], views[3], p.View, ds.View, views[5], views[6], seq, nHeads, dHead);
    }

    void Rotate(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset, bool inverse)
    {
        int half = rotaryDim / 2;
        if (half == 0) return;
        if (rotaryDim > dHead) throw new ArgumentException($"Rotary: rotary dims {rotaryDim} exceed d_head {dHead}");
        if (positionOffset < 0) throw new ArgumentException($"Rotary: position offset {positionOffset} is negative");
        int positions = positionOffset + seq;
        if (_tables is not { } t || t.Positions < positions || t.RotaryDim != rotaryDim || t.Base != rotaryBase)
        {   // a table for more positions serves fewer: position p's angles do not depend on the table's size
            var inv = Reference.AttentionReference.InverseFrequencies(rotaryDim, rotaryBase);
            var cos = new float[positions * half];
            var sin = new float[positions * half];
            for (int p = 0; p < positions; p++)
                for (int j = 0; j < half; j++)
                {
                    float angle = p * inv[j];
                    cos[p * half + j] = MathF.Cos(angle);
                    sin[p * half + j] = MathF.Sin(angle);
                }
            _b.Acc.Synchronize();
            if (_tables is { } old) { old.Cos.Dispose(); old.Sin.Dispose(); }
            _tables = (positions, rotaryDim, rotaryBase, _b.Acc.Allocate1D(cos), _b.Acc.Allocate1D(sin));
        }
        var tables = _tables.Value;
        long count = (long)batch * seq * nHeads * dHead;
        var xb = IlgpuBackend.Of(x, count, "x", "Rotary");
        var yb = IlgpuBackend.Of(y, count, "y", "Rotary");
        if (!ReferenceEquals(x, y)) xb.View.SubView(0, count).CopyTo(yb.View.SubView(0, count));
        _rotary(batch * seq * nHeads * half, yb.View, yb.View, tables.Cos.View, tables.Sin.View, seq, nHeads, dHead, rotaryDim, positionOffset, inverse ? 1 : 0);
    }

    public void Causal(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null, int? keys = null)
    {
        int nk = keys ?? seq;
        if (nk < seq) throw new ArgumentException($"CausalAttention: {seq} queries need at least as many keys, got {nk}");
        long n = (long)batch * seq * nHeads * dHead, nKeys = (long)batch * nk * nHeads * dHead;
        var (qb, kb, vb, zb) = (IlgpuBackend.Of(q, n, "q", "CausalAttention"), IlgpuBackend.Of(k, nKeys, "k", "CausalAttention"),
            IlgpuBackend.Of(v, nKeys, "v", "CausalAttention"), IlgpuBackend.Of(z, n, "z", "CausalAttention"));
        var pb = pattern is null ? null : IlgpuBackend.Of(pattern, (long)batch * nHeads * seq * nk, "pattern", "CausalAttention");
        if (batch * seq == 0) return;
        if (Kind == AttentionVariant.Fused)
        {
            _causal(batch * nHeads * seq, qb.View, kb.View, vb.View, zb.View, seq, nk, nHeads, dHead, scale, pb is null ? _b.Dummy.View : pb.View, pb is null ? 0 : 1);
            return;
        }
        // Per batch item, heads as the GEMM batch (stride d_head inside a [positions, n_heads·d_head] row-major block).
        // Column-major views: Q_h, Z_h are d_head × seq and K_h, V_h d_head × keys, leading dimension n_heads·d_head;
        // scores S_h are keys × seq (ld keys):
        // S_hᵀ[s, t] = scale·Σ_i K_h[s, i]·Q_h[t, i]  →  C = alpha·op(A)·op(B) with A = K (T), B = Q (N);
        // Z_hᵀ[i, t] = Σ_s V_h[s, i]·P_h[t, s]          →  C = op(A)·op(B) with A = V (N), B = P (N).
        int ld = nHeads * dHead;
        long qBlock = (long)seq * ld, kBlock = (long)nk * ld, scoreBlock = (long)nHeads * seq * nk;
        DeviceBuffer scores = pb ?? new IlgpuBackend.Buffer(_b.Grow(ref _scratch, scoreBlock), 0, scoreBlock, owner: false);
        var scoresView = IlgpuBackend.Of(scores).View;
        for (int b = 0; b < batch; b++)
        {
            long so = pb is null ? 0 : b * scoreBlock;
            _linear.StridedBatched(true, false, nk, seq, dHead, scale, kb, b * kBlock, ld, dHead, qb, b * qBlock, ld, dHead, 0f, scores, so, nk, (long)seq * nk, nHeads);
            _causalSoftmax(nHeads * seq, scoresView.SubView(so, scoreBlock), seq, nk);
            _linear.StridedBatched(false, false, dHead, seq, nk, 1f, vb, b * kBlock, ld, dHead, scores, so, nk, (long)seq * nk, 0f, zb, b * qBlock, ld, dHead, nHeads);
        }
    }

    public void Dispose()
    {
        _scratch?.Dispose();
        _p?.Dispose();
        _ds?.Dispose();
        if (_tables is { } t) { t.Cos.Dispose(); t.Sin.Dispose(); }
    }
}

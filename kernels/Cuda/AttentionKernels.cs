using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// Attention ILGPU kernels. Layout [batch, seq, n_heads, d_head] as on the CPU (scalar references: Reference/AttentionReference).
//   Rotary  — one thread per (row, head, pair j < r/2); cos/sin tables [seq, r/2] computed on the host in float32 exactly
//             as HF does (t·inv_freq, then cos/sin), so no approximate sin.approx on large angles.
//   Causal  — V1: one thread per (batch, head, query), three passes over keys ≤ t (max, sum, weighted V), no scratch;
//             masked keys are never touched, the pattern tap gets exact zeros above the diagonal.
//   CausalSoftmax — the GEMM attention's middle step (scores = scale·Q·Kᵀ and z = P·V are strided-batched GEMMs, cuBLAS
//             on a GPU): one thread per score row [.., t, :], softmax over keys ≤ t in place, exact zeros above the diagonal.
public static class AttentionKernels
{
    [GpuKernel]
    public static void Rotary(Index1D i, ArrayView<float> x, ArrayView<float> y, ArrayView<float> cos, ArrayView<float> sin,
        int seq, int nHeads, int dHead, int rotaryDim)
    {
        int half = rotaryDim / 2;
        int j = i % half, rh = i / half;            // rh = row·n_heads + head
        int t = rh / nHeads % seq;
        long o = (long)rh * dHead;
        float x1 = x[o + j], x2 = x[o + j + half];
        float c = cos[t * half + j], s = sin[t * half + j];
        y[o + j] = x1 * c - x2 * s;
        y[o + j + half] = x2 * c + x1 * s;
    }

    [GpuKernel]
    public static void Causal(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> z,
        int seq, int nHeads, int dHead, float scale, ArrayView<float> pattern, int writePattern)
    {
        int t = i % seq, bh = i / seq, h = bh % nHeads, b = bh / nHeads;
        int d = nHeads * dHead;
        long qo = ((long)b * seq + t) * d + h * dHead;
        float max = float.NegativeInfinity;
        for (int s = 0; s <= t; s++) max = XMath.Max(max, Score(q, k, qo, ((long)b * seq + s) * d + h * dHead, dHead) * scale);
        float sum = 0f;
        for (int s = 0; s <= t; s++) sum += XMath.Exp(Score(q, k, qo, ((long)b * seq + s) * d + h * dHead, dHead) * scale - max);
        float inv = 1f / sum;
        for (int c = 0; c < dHead; c++) z[qo + c] = 0f;
        long po = ((long)bh * seq + t) * seq;
        for (int s = 0; s < seq; s++)
        {
            if (s > t)
            {
                if (writePattern != 0) pattern[po + s] = 0f;
                continue;
            }
            long ko = ((long)b * seq + s) * d + h * dHead;
            float p = XMath.Exp(Score(q, k, qo, ko, dHead) * scale - max) * inv;
            if (writePattern != 0) pattern[po + s] = p;
            for (int c = 0; c < dHead; c++) z[qo + c] += p * v[ko + c];
        }
    }

    [GpuKernel]
    public static void CausalSoftmax(Index1D row, ArrayView<float> scores, int seq)
    {
        int t = row % seq;
        long o = (long)(int)row * seq;
        float max = float.NegativeInfinity;
        for (int s = 0; s <= t; s++) max = XMath.Max(max, scores[o + s]);
        float sum = 0f;
        for (int s = 0; s <= t; s++)
        {
            float e = XMath.Exp(scores[o + s] - max);
            scores[o + s] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int s = 0; s <= t; s++) scores[o + s] *= inv;
        for (int s = t + 1; s < seq; s++) scores[o + s] = 0f;
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
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> _rotary;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float, ArrayView<float>, int> _causal;
    readonly Action<Index1D, ArrayView<float>, int> _causalSoftmax;
    (int Seq, int RotaryDim, float Base, MemoryBuffer1D<float, Stride1D.Dense> Cos, MemoryBuffer1D<float, Stride1D.Dense> Sin)? _tables;
    MemoryBuffer1D<float, Stride1D.Dense>? _scratch;   // [n_heads, seq, seq] scores of the GEMM attention when no pattern is asked for

    public IlgpuAttention(IlgpuBackend backend, IlgpuLinear linear)
    {
        _b = backend;
        _linear = linear;
        var acc = backend.Acc;
        _rotary = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(
            AttentionKernels.Rotary);
        _causal = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float,
            ArrayView<float>, int>(AttentionKernels.Causal);
        _causalSoftmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int>(AttentionKernels.CausalSoftmax);
    }

    public AttentionVariant Kind { get; set; }

    public string Variant => Kind.ToString().ToLowerInvariant();

    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase)
    {
        int half = rotaryDim / 2;
        if (half == 0) return;
        if (rotaryDim > dHead) throw new ArgumentException($"Rotary: rotary dims {rotaryDim} exceed d_head {dHead}");
        if (_tables is not { } t || t.Seq != seq || t.RotaryDim != rotaryDim || t.Base != rotaryBase)
        {
            var inv = Reference.AttentionReference.InverseFrequencies(rotaryDim, rotaryBase);
            var cos = new float[seq * half];
            var sin = new float[seq * half];
            for (int p = 0; p < seq; p++)
                for (int j = 0; j < half; j++)
                {
                    float angle = p * inv[j];
                    cos[p * half + j] = MathF.Cos(angle);
                    sin[p * half + j] = MathF.Sin(angle);
                }
            _b.Acc.Synchronize();
            if (_tables is { } old) { old.Cos.Dispose(); old.Sin.Dispose(); }
            _tables = (seq, rotaryDim, rotaryBase, _b.Acc.Allocate1D(cos), _b.Acc.Allocate1D(sin));
        }
        var tables = _tables.Value;
        long count = (long)batch * seq * nHeads * dHead;
        var xb = IlgpuBackend.Of(x, count, "x", "Rotary");
        var yb = IlgpuBackend.Of(y, count, "y", "Rotary");
        if (!ReferenceEquals(x, y)) xb.View.SubView(0, count).CopyTo(yb.View.SubView(0, count));
        _rotary(batch * seq * nHeads * half, yb.View, yb.View, tables.Cos.View, tables.Sin.View, seq, nHeads, dHead, rotaryDim);
    }

    public void Causal(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null)
    {
        long n = (long)batch * seq * nHeads * dHead;
        var (qb, kb, vb, zb) = (IlgpuBackend.Of(q, n, "q", "CausalAttention"), IlgpuBackend.Of(k, n, "k", "CausalAttention"),
            IlgpuBackend.Of(v, n, "v", "CausalAttention"), IlgpuBackend.Of(z, n, "z", "CausalAttention"));
        var pb = pattern is null ? null : IlgpuBackend.Of(pattern, (long)batch * nHeads * seq * seq, "pattern", "CausalAttention");
        if (batch * seq == 0) return;
        if (Kind == AttentionVariant.Fused)
        {
            _causal(batch * nHeads * seq, qb.View, kb.View, vb.View, zb.View, seq, nHeads, dHead, scale, pb is null ? _b.Dummy.View : pb.View, pb is null ? 0 : 1);
            return;
        }
        // Per batch item, heads as the GEMM batch (stride d_head inside a [seq, n_heads·d_head] row-major block). Column-major
        // views: Q_h, K_h, V_h, Z_h are d_head × seq with leading dimension n_heads·d_head; scores S_h are seq × seq (ld seq),
        // S_hᵀ[s, t] = scale·Σ_i K_h[s, i]·Q_h[t, i]  →  C = alpha·op(A)·op(B) with A = K (T), B = Q (N);
        // Z_hᵀ[i, t] = Σ_s V_h[s, i]·P_h[t, s]          →  C = op(A)·op(B) with A = V (N), B = P (N).
        int ld = nHeads * dHead;
        long block = (long)seq * ld, scoreBlock = (long)nHeads * seq * seq;
        DeviceBuffer scores = pb ?? new IlgpuBackend.Buffer(_b.Grow(ref _scratch, scoreBlock), 0, scoreBlock, owner: false);
        var scoresView = IlgpuBackend.Of(scores).View;
        for (int b = 0; b < batch; b++)
        {
            long so = pb is null ? 0 : b * scoreBlock;
            _linear.StridedBatched(true, false, seq, seq, dHead, scale, kb, b * block, ld, dHead, qb, b * block, ld, dHead, 0f, scores, so, seq, (long)seq * seq, nHeads);
            _causalSoftmax(nHeads * seq, scoresView.SubView(so, scoreBlock), seq);
            _linear.StridedBatched(false, false, dHead, seq, seq, 1f, vb, b * block, ld, dHead, scores, so, seq, (long)seq * seq, 0f, zb, b * block, ld, dHead, nHeads);
        }
    }

    public void Dispose()
    {
        _scratch?.Dispose();
        if (_tables is { } t) { t.Cos.Dispose(); t.Sin.Dispose(); }
    }
}

using ILGPU;
using ILGPU.Algorithms;

namespace PolyEngine.Kernels.Cuda;

// Attention ILGPU kernels. Layout [batch, seq, n_heads, d_head] as on the CPU (scalar references: Cpu.Attention.*Reference).
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

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PolyEngine.Kernels.Cpu;

// GEMM: C[M, N] = A[M, K] · B[K, N] (+ bias[N]), fp32 with fp32 accumulation.
//   Pack      — B repacked once at load into 16-column panels, k-major: panel p holds B[k, 16p .. 16p+15] for every k,
//               zero-padded past N. A weight is packed once and reused by every call.
//   Multiply  — BLIS-style loops: K blocks of KC, M blocks of MC, panels split across threads, a 6×16 register-tile
//               micro-kernel (12 Vector256 accumulators) with FMA where the CPU has it; Vector<T> kernel otherwise.
//   Reference — the plain triple loop (double accumulation), the ground truth for tests.
public static class Gemm
{
    public const int NR = 16;  // panel width (two Vector256<float>)
    public const int MR = 6;   // micro-kernel rows
    const int KC = 256;        // K block: a 16-wide panel slice is 16 KiB, stays in L1
    const int MC = 72;         // M block: an MC×KC slice of A is 72 KiB, stays in L2

    /// <summary>A [K, N] matrix packed into 16-column panels (see file header).</summary>
    public sealed class Packed
    {
        internal Packed(int k, int n, float[] data) { K = k; N = n; Data = data; }
        public int K { get; }
        public int N { get; }
        public int Panels => (N + NR - 1) / NR;
        /// <summary>[Panels, K, 16], pinned.</summary>
        internal float[] Data { get; }
    }

    /// <summary>Packs <paramref name="w"/> given as [k, n] (<see cref="WeightLayout.InOut"/>) or [n, k] (<see cref="WeightLayout.OutIn"/>).</summary>
    public static Packed Pack(ReadOnlySpan<float> w, int k, int n, WeightLayout layout)
    {
        if (k <= 0 || n <= 0) throw new ArgumentException($"GEMM weight must be non-empty, got [{k}, {n}]");
        if (w.Length != (long)k * n) throw new ArgumentException($"GEMM weight has {w.Length} values, expected {k}×{n}");
        int panels = (n + NR - 1) / NR;
        var data = GC.AllocateUninitializedArray<float>(checked(panels * k * NR), pinned: true);
        Array.Clear(data);
        for (int p = 0; p < panels; p++)
        {
            int j0 = p * NR, width = Math.Min(NR, n - j0);
            var panel = data.AsSpan(p * k * NR, k * NR);
            if (layout == WeightLayout.InOut)
                for (int kk = 0; kk < k; kk++)
                    w.Slice(kk * n + j0, width).CopyTo(panel.Slice(kk * NR, width));
            else
                for (int j = 0; j < width; j++)
                {
                    var row = w.Slice((j0 + j) * k, k);  // output j0+j, all inputs
                    for (int kk = 0; kk < k; kk++) panel[kk * NR + j] = row[kk];
                }
        }
        return new Packed(k, n, data);
    }

    /// <summary>C[m, N] = A[m, K] · B + bias, using up to <paramref name="threads"/> threads.</summary>
    public static unsafe void Multiply(ReadOnlySpan<float> a, Packed b, ReadOnlySpan<float> bias, Span<float> c, int m, int threads)
    {
        int k = b.K, n = b.N;
        if (a.Length < (long)m * k) throw new ArgumentException($"GEMM input has {a.Length} values, expected {m}×{k}");
        if (c.Length < (long)m * n) throw new ArgumentException($"GEMM output has {c.Length} values, expected {m}×{n}");
        if (!bias.IsEmpty && bias.Length != n) throw new ArgumentException($"GEMM bias has {bias.Length} values, expected {n}");
        if (m == 0) return;
        // C starts as the bias (or zero); every K block accumulates into it.
        for (int i = 0; i < m; i++)
        {
            var row = c.Slice(i * n, n);
            if (bias.IsEmpty) row.Clear(); else bias.CopyTo(row);
        }
        fixed (float* pa = a) fixed (float* pc = c) fixed (float* pb = b.Data)
        {
            var job = new Job(pa, pb, pc, m, n, k);
            int workers = Math.Max(1, Math.Min(threads, b.Panels));
            // Splitting over panels keeps each thread on its own columns of C: no write sharing.
            if (workers == 1) job.Run(0, b.Panels);
            else
                Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
                {
                    int p0 = (int)((long)b.Panels * w / workers), p1 = (int)((long)b.Panels * (w + 1) / workers);
                    job.Run(p0, p1);
                });
        }
    }

    readonly unsafe struct Job(float* a, float* b, float* c, int m, int n, int k)
    {
        public void Run(int p0, int p1)
        {
            float* tile = stackalloc float[MR * NR];
            for (int k0 = 0; k0 < k; k0 += KC)
            {
                int kc = Math.Min(KC, k - k0);
                for (int i0 = 0; i0 < m; i0 += MC)
                {
                    int mc = Math.Min(MC, m - i0);
                    for (int p = p0; p < p1; p++)
                    {
                        float* bp = b + (long)p * k * NR + (long)k0 * NR;
                        int j0 = p * NR, width = Math.Min(NR, n - j0);
                        for (int i = i0; i < i0 + mc; i += MR)
                        {
                            int mr = Math.Min(MR, i0 + mc - i);
                            float* ap = a + (long)i * k + k0;
                            float* cp = c + (long)i * n + j0;
                            if (mr == MR && width == NR) Kernel6x16(ap, k, bp, cp, n, kc);
                            else
                            {
                                // Edge tile: compute a full 6×16 tile into scratch, add the valid part.
                                new Span<float>(tile, MR * NR).Clear();
                                for (int r = 0; r < mr; r++) KernelRow(ap + (long)r * k, bp, tile + r * NR, kc);
                                for (int r = 0; r < mr; r++)
                                    for (int j = 0; j < width; j++) cp[(long)r * n + j] += tile[r * NR + j];
                            }
                        }
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel6x16(float* a, int lda, float* b, float* c, int ldc, int kc)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            for (int r = 0; r < MR; r++) KernelRowPortable(a + (long)r * lda, b, c + (long)r * ldc, kc);
            return;
        }
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        float* a0 = a, a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda;
        for (int kk = 0; kk < kc; kk++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            b += NR;
            var x = Vector256.Create(a0[kk]);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00); c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            x = Vector256.Create(a1[kk]);
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            x = Vector256.Create(a2[kk]);
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            x = Vector256.Create(a3[kk]);
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
            x = Vector256.Create(a4[kk]);
            c40 = Vector256.MultiplyAddEstimate(x, b0, c40); c41 = Vector256.MultiplyAddEstimate(x, b1, c41);
            x = Vector256.Create(a5[kk]);
            c50 = Vector256.MultiplyAddEstimate(x, b0, c50); c51 = Vector256.MultiplyAddEstimate(x, b1, c51);
        }
        Accumulate(c, c00, c01); c += ldc;
        Accumulate(c, c10, c11); c += ldc;
        Accumulate(c, c20, c21); c += ldc;
        Accumulate(c, c30, c31); c += ldc;
        Accumulate(c, c40, c41); c += ldc;
        Accumulate(c, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Accumulate(float* c, Vector256<float> lo, Vector256<float> hi)
    {
        Vector256.Store(Vector256.Load(c) + lo, c);
        Vector256.Store(Vector256.Load(c + 8) + hi, c + 8);
    }

    /// <summary>One row of A against one 16-wide panel: c[0..16) += a[0..kc) · panel.</summary>
    static unsafe void KernelRow(float* a, float* b, float* c, int kc)
    {
        if (!Vector256.IsHardwareAccelerated) { KernelRowPortable(a, b, c, kc); return; }
        Vector256<float> lo = default, hi = default;
        for (int kk = 0; kk < kc; kk++, b += NR)
        {
            var x = Vector256.Create(a[kk]);
            lo = Vector256.MultiplyAddEstimate(x, Vector256.Load(b), lo);
            hi = Vector256.MultiplyAddEstimate(x, Vector256.Load(b + 8), hi);
        }
        Accumulate(c, lo, hi);
    }

    /// <summary>Portable Vector&lt;T&gt; row kernel for CPUs without 256-bit SIMD.</summary>
    static unsafe void KernelRowPortable(float* a, float* b, float* c, int kc)
    {
        int vw = System.Numerics.Vector<float>.Count;
        Span<float> acc = stackalloc float[NR];
        for (int kk = 0; kk < kc; kk++, b += NR)
        {
            float x = a[kk];
            if (NR % vw == 0)
                for (int j = 0; j < NR; j += vw)
                {
                    var bv = new System.Numerics.Vector<float>(new ReadOnlySpan<float>(b + j, vw));
                    var av = new System.Numerics.Vector<float>(acc.Slice(j, vw));
                    (av + bv * x).CopyTo(acc.Slice(j, vw));
                }
            else
                for (int j = 0; j < NR; j++) acc[j] += x * b[j];
        }
        for (int j = 0; j < NR; j++) c[j] += acc[j];
    }

    /// <summary>Scalar reference: C = A·W + bias with W given in <paramref name="layout"/>, accumulated in double.</summary>
    public static void Reference(ReadOnlySpan<float> a, ReadOnlySpan<float> w, WeightLayout layout, ReadOnlySpan<float> bias,
        Span<float> c, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = bias.IsEmpty ? 0 : bias[j];
                for (int kk = 0; kk < k; kk++)
                    s += (double)a[i * k + kk] * (layout == WeightLayout.InOut ? w[kk * n + j] : w[j * k + kk]);
                c[i * n + j] = (float)s;
            }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PolyEngine.Kernels.Cpu;

// GEMM: C[M, N] = A[M, K] · B[K, N] (+ bias[N]), fp32 with fp32 accumulation.
//   Pack      — B repacked once at load into 16-column panels, k-major: panel p holds B[k, 16p .. 16p+15] for every k,
//               zero-padded past N. A weight is packed once and reused by every call.
//   Multiply  — BLIS-style: C tiles of (≤ 64 panels × 96 rows) taken by threads as they finish; inside a tile, K blocks
//               of ≤ 768 (the first stores bias + product, later ones accumulate), A packed in MR-row strips, and an
//               MR×16 register-tile micro-kernel: 12×16 in 12 Vector512 accumulators where the CPU has AVX-512 (one B load
//               and twelve broadcast FMAs per k step), else 6×16 in 12 Vector256 accumulators (FMA where the CPU has it;
//               Vector<T> otherwise). POLYENGINE_GEMM=avx2 forces the 6×16 kernel (to measure one against the other).
//   Scalar reference: Reference/LinearReference (the plain triple loop, double accumulation).
public static class Gemm
{
    public const int NR = 16;  // panel width (two Vector256<float>, one Vector512<float>)
    /// <summary>True when the 12×16 Vector512 micro-kernel runs (AVX-512 and not POLYENGINE_GEMM=avx2).</summary>
    public static readonly bool Wide = Vector512.IsHardwareAccelerated && Environment.GetEnvironmentVariable("POLYENGINE_GEMM") != "avx2";

    const int KCMax = 768;     // K block: K split into equal blocks of at most 768 (panel slice ≤ 48 KiB, A strip ≤ 18 KiB)
    const int MC = 96;         // M block: an MC×KC slice of A is at most 288 KiB (L2 is 512 KiB per core on the dev VM)
    const int NCP = 64;        // panels per N chunk: a KC×(64·16) slice of B is ≤ 3 MiB, stays in L3

    /// <summary>A [K, N] matrix packed into 16-column panels (see file header).</summary>
    public sealed class Packed
    {
        internal Packed(int k, int n, float[] data, int offset) { K = k; N = n; Data = data; Offset = offset; }
        public int K { get; }
        public int N { get; }
        public int Panels => (N + NR - 1) / NR;
        /// <summary>[Panels, K, 16] starting at <see cref="Offset"/>, pinned, 64-byte aligned (no cache-line-split loads).</summary>
        internal float[] Data { get; }
        internal int Offset { get; }
    }

    /// <summary>Packs <paramref name="w"/> given as [k, n] (<see cref="WeightLayout.InOut"/>) or [n, k] (<see cref="WeightLayout.OutIn"/>).</summary>
    public static Packed Pack(ReadOnlySpan<float> w, int k, int n, WeightLayout layout)
    {
        if (k <= 0 || n <= 0) throw new ArgumentException($"GEMM weight must be non-empty, got [{k}, {n}]");
        if (w.Length != (long)k * n) throw new ArgumentException($"GEMM weight has {w.Length} values, expected {k}×{n}");
        int panels = (n + NR - 1) / NR;
        var data = GC.AllocateArray<float>(checked(panels * k * NR + 16), pinned: true);
        int offset = AlignmentOffset(data);
        for (int p = 0; p < panels; p++)
        {
            int j0 = p * NR, width = Math.Min(NR, n - j0);
            var panel = data.AsSpan(offset + p * k * NR, k * NR);
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
        return new Packed(k, n, data, offset);
    }

    /// <summary>Wᵀ packed as the B operand of the input gradient (dx = dy·Wᵀ: inner dimension N, output K), from the panels of
    /// <paramref name="p"/> (the original weight need not be kept).</summary>
    public static Packed Transpose(Packed p)
    {
        var w = new float[(long)p.K * p.N];   // [K, N]
        for (int n = 0; n < p.N; n++)
            for (int k = 0; k < p.K; k++) w[(long)k * p.N + n] = p.Data[p.Offset + (n / NR) * p.K * NR + k * NR + n % NR];
        return Pack(w, p.N, p.K, WeightLayout.OutIn);   // OutIn: w is [out = K, in = N]
    }

    /// <summary>Elements to skip so that a pinned array's data starts on a 64-byte boundary.</summary>
    static unsafe int AlignmentOffset(float[] pinned)
    {
        fixed (float* p = pinned) return (int)((64 - ((nint)p & 63)) & 63) / sizeof(float);
    }

    /// <summary>C[m, N] = A[m, K] · B + bias, using up to <paramref name="threads"/> threads.</summary>
    public static void Multiply(ReadOnlySpan<float> a, Packed b, ReadOnlySpan<float> bias, Span<float> c, int m, int threads) =>
        Multiply(a, b, bias, c, m, threads, Wide);

    /// <summary><see cref="Multiply(ReadOnlySpan{float}, Packed, ReadOnlySpan{float}, Span{float}, int, int)"/> with the
    /// micro-kernel chosen: 12×16 Vector512 when <paramref name="wide"/> (AVX-512 only), else 6×16.</summary>
    internal static unsafe void Multiply(ReadOnlySpan<float> a, Packed b, ReadOnlySpan<float> bias, Span<float> c, int m, int threads, bool wide)
    {
        if (wide && !Vector512.IsHardwareAccelerated) throw new ArgumentException("the 12×16 GEMM kernel needs AVX-512");
        int k = b.K, n = b.N;
        if (a.Length < (long)m * k) throw new ArgumentException($"GEMM input has {a.Length} values, expected {m}×{k}");
        if (c.Length < (long)m * n) throw new ArgumentException($"GEMM output has {c.Length} values, expected {m}×{n}");
        if (!bias.IsEmpty && bias.Length != n) throw new ArgumentException($"GEMM bias has {bias.Length} values, expected {n}");
        if (m == 0) return;
        // The first K block stores bias + A·B into C (no separate pass over C); later blocks accumulate.
        // The bias is zero-padded to whole panels so the micro-kernel can always read 16 values.
        var biasPadded = System.Buffers.ArrayPool<float>.Shared.Rent(b.Panels * NR);
        try
        {
            Array.Clear(biasPadded, 0, b.Panels * NR);
            bias.CopyTo(biasPadded);
            fixed (float* pa = a) fixed (float* pc = c) fixed (float* pb0 = b.Data) fixed (float* pbias = biasPadded)
            {
                // Work items are (N chunk, M block) tiles of C, chunk-major so that threads working at the same time share
                // the chunk's B panels in cache; threads take the next tile as they finish (shared vCPUs run unevenly).
                // Chunks shrink (down to 4 panels) when there would otherwise be fewer than two tiles per thread.
                int mBlocks = (m + MC - 1) / MC, wantChunks = Math.Max(1, (2 * threads + mBlocks - 1) / mBlocks);
                int ncp = Math.Clamp((b.Panels + wantChunks - 1) / wantChunks, 4, NCP);
                int chunks = (b.Panels + ncp - 1) / ncp, items = chunks * mBlocks;
                var job = new Job(pa, pb0 + b.Offset, pc, pbias, m, n, k, b.Panels, mBlocks, ncp, wide ? 12 : 6);
                int workers = Math.Max(1, Math.Min(threads, items));
                if (workers == 1) job.Run(new StrongBox<int>(0), items);
                else
                {
                    var next = new StrongBox<int>(0);
                    Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ => job.Run(next, items));
                }
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(biasPadded); }
    }

    /// <summary>Per-thread packed-A scratch (pinned, reused across calls).</summary>
    [ThreadStatic] static float[]? t_apack;

    /// <param name="MR">Micro-kernel rows: 12 (the Vector512 kernel) or 6.</param>
    readonly unsafe struct Job(float* a, float* b, float* c, float* bias, int m, int n, int k, int panels, int mBlocks, int ncp, int MR)
    {
        /// <summary>Computes tiles until none is left; <paramref name="next"/> is the shared tile counter.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Run(StrongBox<int> next, int items)
        {
            float* tile = stackalloc float[12 * NR];
            float* zeros = stackalloc float[NR];
            new Span<float>(zeros, NR).Clear();
            // A slice packed MR rows at a time, k-major: apack[(i / MR)][kk][r] — the micro-kernel reads it contiguously.
            var apack = t_apack ??= GC.AllocateUninitializedArray<float>(MC * KCMax + 16, pinned: true);
            fixed (float* apBase = apack)
            {
                float* ap0 = apBase + AlignmentOffset(apack);
                int kBlocks = (k + KCMax - 1) / KCMax, kcFull = (k + kBlocks - 1) / kBlocks;
                for (int item; (item = Interlocked.Increment(ref next.Value) - 1) < items;)
                {
                    int pc = item / mBlocks * ncp, p1 = Math.Min(pc + ncp, panels);
                    int i0 = item % mBlocks * MC, mc = Math.Min(MC, m - i0);
                    for (int k0 = 0; k0 < k; k0 += kcFull)
                    {
                        int kc = Math.Min(kcFull, k - k0);
                        PackA(a + (long)i0 * k + k0, k, mc, kc, ap0);
                        for (int p = pc; p < p1; p++)
                        {
                            float* bp = b + (long)p * k * NR + (long)k0 * NR;
                            int j0 = p * NR, width = Math.Min(NR, n - j0);
                            for (int i = 0; i < mc; i += MR)
                            {
                                int mr = Math.Min(MR, mc - i);
                                float* ap = ap0 + (long)i * kc;
                                float* cp = c + (long)(i0 + i) * n + j0;
                                float* first = k0 == 0 ? bias + j0 : null;
                                if (mr == MR && width == NR) Kernel(MR, ap, bp, cp, n, kc, first);
                                else
                                {
                                    // Edge tile: a full MR×16 tile into scratch (packed A is zero-padded), then the valid part.
                                    Kernel(MR, ap, bp, tile, NR, kc, zeros);
                                    for (int r = 0; r < mr; r++)
                                        for (int j = 0; j < width; j++)
                                            cp[(long)r * n + j] = (first is null ? cp[(long)r * n + j] : first[j]) + tile[r * NR + j];
                                }
                            }
                        }
                    }
                }
            }
        }

        /// <summary>Packs A[0..mc, 0..kc) (row stride lda) as MR-row strips, k-major, zero-padding the last strip.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void PackA(float* a, int lda, int mc, int kc, float* dst)
        {
            for (int i = 0; i < mc; i += MR)
            {
                int mr = Math.Min(MR, mc - i);
                float* strip = dst + (long)i * kc;
                for (int r = 0; r < MR; r++)
                {
                    float* row = a + (long)(i + r) * lda;
                    if (r < mr) for (int kk = 0; kk < kc; kk++) strip[kk * MR + r] = row[kk];
                    else for (int kk = 0; kk < kc; kk++) strip[kk * MR + r] = 0f;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Kernel(int mr, float* a, float* b, float* c, int ldc, int kc, float* first)
    {
        if (mr == 12) Kernel12x16(a, b, c, ldc, kc, first);
        else Kernel6x16(a, b, c, ldc, kc, first);
    }

    /// <summary>c[12, 16] (row stride ldc) += packed A strip [kc, 12] · packed B panel slice [kc, 16], one Vector512 per row;
    /// when <paramref name="first"/> is not null (first K block) c is not read: c = first[0..16) (per column) + the product.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel12x16(float* a, float* b, float* c, int ldc, int kc, float* first)
    {
        if (first is null && System.Runtime.Intrinsics.X86.Sse.IsSupported)
            for (int r = 0; r < 12; r++) System.Runtime.Intrinsics.X86.Sse.Prefetch0(c + (long)r * ldc);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        Vector512<float> c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        // Two k steps per iteration: fewer loop-control µops per FMA.
        int k2 = kc & ~1;
        for (int kk = 0; kk < k2; kk += 2, a += 24, b += 2 * NR)
        {
            Step12(a, b, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11);
            Step12(a + 12, b + NR, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11);
        }
        if (k2 < kc) Step12(a, b, ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, ref c8, ref c9, ref c10, ref c11);
        // First K block: C = first-row (bias or zeros) + tile; later blocks accumulate into C.
        var f = first is null ? default : Vector512.Load(first);
        Finish(c, c0, f, first is null); c += ldc;
        Finish(c, c1, f, first is null); c += ldc;
        Finish(c, c2, f, first is null); c += ldc;
        Finish(c, c3, f, first is null); c += ldc;
        Finish(c, c4, f, first is null); c += ldc;
        Finish(c, c5, f, first is null); c += ldc;
        Finish(c, c6, f, first is null); c += ldc;
        Finish(c, c7, f, first is null); c += ldc;
        Finish(c, c8, f, first is null); c += ldc;
        Finish(c, c9, f, first is null); c += ldc;
        Finish(c, c10, f, first is null); c += ldc;
        Finish(c, c11, f, first is null);
    }

    /// <summary>One k step of the 12×16 tile: one B vector, twelve A broadcasts, twelve FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Step12(float* a, float* b, ref Vector512<float> c0, ref Vector512<float> c1, ref Vector512<float> c2, ref Vector512<float> c3,
        ref Vector512<float> c4, ref Vector512<float> c5, ref Vector512<float> c6, ref Vector512<float> c7, ref Vector512<float> c8,
        ref Vector512<float> c9, ref Vector512<float> c10, ref Vector512<float> c11)
    {
        var bv = Vector512.Load(b);
        c0 = Vector512.MultiplyAddEstimate(Vector512.Create(a[0]), bv, c0);
        c1 = Vector512.MultiplyAddEstimate(Vector512.Create(a[1]), bv, c1);
        c2 = Vector512.MultiplyAddEstimate(Vector512.Create(a[2]), bv, c2);
        c3 = Vector512.MultiplyAddEstimate(Vector512.Create(a[3]), bv, c3);
        c4 = Vector512.MultiplyAddEstimate(Vector512.Create(a[4]), bv, c4);
        c5 = Vector512.MultiplyAddEstimate(Vector512.Create(a[5]), bv, c5);
        c6 = Vector512.MultiplyAddEstimate(Vector512.Create(a[6]), bv, c6);
        c7 = Vector512.MultiplyAddEstimate(Vector512.Create(a[7]), bv, c7);
        c8 = Vector512.MultiplyAddEstimate(Vector512.Create(a[8]), bv, c8);
        c9 = Vector512.MultiplyAddEstimate(Vector512.Create(a[9]), bv, c9);
        c10 = Vector512.MultiplyAddEstimate(Vector512.Create(a[10]), bv, c10);
        c11 = Vector512.MultiplyAddEstimate(Vector512.Create(a[11]), bv, c11);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Finish(float* c, Vector512<float> acc, Vector512<float> first, bool accumulate) =>
        Vector512.Store(accumulate ? Vector512.Load(c) + acc : acc + first, c);

    /// <summary>c[6, 16] (row stride ldc) += packed A strip [kc, 6] · packed B panel slice [kc, 16]; when <paramref name="first"/>
    /// is not null (first K block) c is not read: c = first[0..16) (per column) + the product.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel6x16(float* a, float* b, float* c, int ldc, int kc, float* first)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            KernelPortable(a, b, c, ldc, kc, first);
            return;
        }
        if (first is null && System.Runtime.Intrinsics.X86.Sse.IsSupported)
            // The C tile is read only after kc steps: start pulling its six 64-byte rows in now.
            for (int r = 0; r < 6; r++) System.Runtime.Intrinsics.X86.Sse.Prefetch0(c + (long)r * ldc);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        // Two k steps per iteration: fewer loop-control µops per FMA.
        int k2 = kc & ~1;
        for (int kk = 0; kk < k2; kk += 2, a += 2 * 6, b += 2 * NR)
        {
            Step(a, b, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31, ref c40, ref c41, ref c50, ref c51);
            Step(a + 6, b + NR, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31, ref c40, ref c41, ref c50, ref c51);
        }
        if (k2 < kc)
            Step(a, b, ref c00, ref c01, ref c10, ref c11, ref c20, ref c21, ref c30, ref c31, ref c40, ref c41, ref c50, ref c51);
        if (first is not null)
        {
            // First K block: C = first-row (bias or zeros) + tile.
            var f0 = Vector256.Load(first);
            var f1 = Vector256.Load(first + 8);
            Store(c, c00 + f0, c01 + f1); c += ldc;
            Store(c, c10 + f0, c11 + f1); c += ldc;
            Store(c, c20 + f0, c21 + f1); c += ldc;
            Store(c, c30 + f0, c31 + f1); c += ldc;
            Store(c, c40 + f0, c41 + f1); c += ldc;
            Store(c, c50 + f0, c51 + f1);
            return;
        }
        Accumulate(c, c00, c01); c += ldc;
        Accumulate(c, c10, c11); c += ldc;
        Accumulate(c, c20, c21); c += ldc;
        Accumulate(c, c30, c31); c += ldc;
        Accumulate(c, c40, c41); c += ldc;
        Accumulate(c, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store(float* c, Vector256<float> lo, Vector256<float> hi)
    {
        Vector256.Store(lo, c);
        Vector256.Store(hi, c + 8);
    }

    /// <summary>One k step of the 6×16 tile: two B vectors, six A broadcasts, twelve FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Step(float* a, float* b, ref Vector256<float> c00, ref Vector256<float> c01, ref Vector256<float> c10,
        ref Vector256<float> c11, ref Vector256<float> c20, ref Vector256<float> c21, ref Vector256<float> c30, ref Vector256<float> c31,
        ref Vector256<float> c40, ref Vector256<float> c41, ref Vector256<float> c50, ref Vector256<float> c51)
    {
        var b0 = Vector256.Load(b);
        var b1 = Vector256.Load(b + 8);
        var x = Vector256.Create(a[0]);
        c00 = Vector256.MultiplyAddEstimate(x, b0, c00); c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
        x = Vector256.Create(a[1]);
        c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
        x = Vector256.Create(a[2]);
        c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
        x = Vector256.Create(a[3]);
        c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
        x = Vector256.Create(a[4]);
        c40 = Vector256.MultiplyAddEstimate(x, b0, c40); c41 = Vector256.MultiplyAddEstimate(x, b1, c41);
        x = Vector256.Create(a[5]);
        c50 = Vector256.MultiplyAddEstimate(x, b0, c50); c51 = Vector256.MultiplyAddEstimate(x, b1, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Accumulate(float* c, Vector256<float> lo, Vector256<float> hi)
    {
        Vector256.Store(Vector256.Load(c) + lo, c);
        Vector256.Store(Vector256.Load(c + 8) + hi, c + 8);
    }

    /// <summary>Portable Vector&lt;T&gt; micro-kernel for CPUs without 256-bit SIMD (same contract as <see cref="Kernel6x16"/>).</summary>
    static unsafe void KernelPortable(float* a, float* b, float* c, int ldc, int kc, float* first)
    {
        int vw = System.Numerics.Vector<float>.Count;
        Span<float> acc = stackalloc float[6 * NR];
        for (int kk = 0; kk < kc; kk++, a += 6, b += NR)
            for (int r = 0; r < 6; r++)
            {
                float x = a[r];
                var row = acc.Slice(r * NR, NR);
                if (NR % vw == 0)
                    for (int j = 0; j < NR; j += vw)
                    {
                        var bv = new System.Numerics.Vector<float>(new ReadOnlySpan<float>(b + j, vw));
                        (new System.Numerics.Vector<float>(row.Slice(j, vw)) + bv * x).CopyTo(row.Slice(j, vw));
                    }
                else
                    for (int j = 0; j < NR; j++) row[j] += x * b[j];
            }
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < NR; j++) c[(long)r * ldc + j] = (first is null ? c[(long)r * ldc + j] : first[j]) + acc[r * NR + j];
    }
}

/// <summary>The linear family on the CPU: the packed GEMM above; the input gradient through a second packing of Wᵀ made on
/// first use (<see cref="CpuBackend.Weight.Transposed"/>).</summary>
sealed class CpuLinear(CpuBackend backend) : ILinearOps
{
    public void Backward(DeviceBuffer dy, PackedWeight w, DeviceBuffer dx, int rows)
    {
        var transposed = w is CpuBackend.Weight cw ? cw.Transposed : throw new ArgumentException("weight does not belong to the CPU backend");
        Gemm.Multiply(CpuBackend.Span(dy), transposed, default, CpuBackend.Span(dx), rows, backend.Threads);
    }

    public void Forward(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows)
    {
        var packed = w is CpuBackend.Weight cw ? cw.Packed : throw new ArgumentException("weight does not belong to the CPU backend");
        Gemm.Multiply(CpuBackend.Span(x), packed, bias is null ? default : CpuBackend.Span(bias), CpuBackend.Span(y), rows, backend.Threads);
    }
}

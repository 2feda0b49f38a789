using ILGPU;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// GEMM ILGPU kernels: y[rows, N] = x[rows, K] · W[K, N] + bias. On a real GPU cuBLAS does the GEMMs (CuBlas.cs); these
// serve the emulated path (ILGPU's CPU accelerator) and GPUs without cuBLAS. Scalar reference: Reference/LinearReference.
//   Naive — V1: one thread per output element, fp32 accumulation in k order (the slow twin).
//   Tiled — V2: 16×16 groups, A and W tiles staged in shared memory, barriers between tile loads.
//   SetRows — y[r, :] = bias (cuBLAS then accumulates with beta = 1).
//   StridedBatched — cublasSgemmStridedBatched's exact column-major contract (op(A) m×k, op(B) k×n, leading dimensions,
//                    element strides between batch items, C not read when beta = 0), one thread per output element: the
//                    GEMM attention runs through it on the emulated path, so its cuBLAS arguments are checked without a GPU.
public static class GemmKernels
{
    public const int Tile = 16;

    [GpuKernel]
    public static void Naive(Index1D i, ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, int k, int n,
        ArrayView<float> y)
    {
        int r = i / n, j = i % n;
        float acc = hasBias != 0 ? bias[j] : 0f;
        long xo = (long)r * k;
        for (int kk = 0; kk < k; kk++) acc += x[xo + kk] * w[(long)kk * n + j];
        y[i] = acc;
    }

    /// <summary>Grid (⌈N/16⌉, ⌈rows/16⌉), group (16, 16): one thread per output element of a 16×16 tile of y.</summary>
    [GpuKernel(Explicit = true)]
    public static void Tiled(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, int rows, int k, int n,
        ArrayView<float> y)
    {
        var tileX = SharedMemory.Allocate1D<float>(Tile * Tile);   // [ty][kk]
        var tileW = SharedMemory.Allocate1D<float>(Tile * Tile);   // [kk][tx]
        int tx = Group.IdxX, ty = Group.IdxY;
        int col = Grid.IdxX * Tile + tx, row = Grid.IdxY * Tile + ty;
        float acc = 0f;
        for (int k0 = 0; k0 < k; k0 += Tile)
        {
            int kx = k0 + tx, kw = k0 + ty;
            tileX[ty * Tile + tx] = row < rows && kx < k ? x[(long)row * k + kx] : 0f;
            tileW[ty * Tile + tx] = kw < k && col < n ? w[(long)kw * n + col] : 0f;
            Group.Barrier();
            for (int kk = 0; kk < Tile; kk++) acc += tileX[ty * Tile + kk] * tileW[kk * Tile + tx];
            Group.Barrier();
        }
        if (row < rows && col < n) y[(long)row * n + col] = acc + (hasBias != 0 ? bias[col] : 0f);
    }

    /// <summary>Thread i computes element (r, c) = (i mod m, i / m mod n) of C_batch, batch = i / (m·n), column-major:
    /// C[r + c·ldc] = alpha·Σ_l op(A)[r, l]·op(B)[l, c] + beta·C, op(A)[r, l] = A[r + l·lda] (N) or A[l + r·lda] (T).</summary>
    [GpuKernel]
    public static void StridedBatched(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, StridedGemmArgs g)
    {
        int mn = g.M * g.N;
        int batch = i / mn, rem = i % mn;
        int r = rem % g.M, col = rem / g.M;
        long ao = batch * g.StrideA, bo = batch * g.StrideB;
        float acc = 0f;
        for (int l = 0; l < g.K; l++)
        {
            float av = g.TransA == 0 ? a[ao + r + (long)l * g.Lda] : a[ao + l + (long)r * g.Lda];
            float bv = g.TransB == 0 ? b[bo + l + (long)col * g.Ldb] : b[bo + col + (long)l * g.Ldb];
            acc += av * bv;
        }
        long co = batch * g.StrideC + r + (long)col * g.Ldc;
        c[co] = g.Beta == 0f ? g.Alpha * acc : g.Alpha * acc + g.Beta * c[co];
    }

    [GpuKernel]
    public static void SetRows(Index1D i, ArrayView<float> bias, int n, ArrayView<float> y) => y[i] = bias[i % n];
}

/// <summary>The scalar arguments of cublasSgemmStridedBatched (column-major; TransA/TransB 1 for a transposed operand).</summary>
public struct StridedGemmArgs
{
    public int TransA, TransB, M, N, K, Lda, Ldb, Ldc;
    public long StrideA, StrideB, StrideC;
    public float Alpha, Beta;
}

/// <summary>
/// The linear family on ILGPU: the GEMM through cuBLAS on a GPU that has it (bias set first, then a beta = 1 GEMM), else
/// the tiled kernel, or the naive one for checks (<see cref="IlgpuBackend.Gemm"/>); and the strided-batched GEMM the
/// attention family runs its two products through.
/// </summary>
sealed class IlgpuLinear : ILinearOps
{
    readonly IlgpuBackend _b;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, ArrayView<float>> _tiled;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>> _naive;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<float>> _setRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedGemmArgs> _stridedBatched;

    public IlgpuLinear(IlgpuBackend backend)
    {
        _b = backend;
        var acc = backend.Acc;
        _tiled = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, ArrayView<float>>(GemmKernels.Tiled);
        _naive = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>>(GemmKernels.Naive);
        _setRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(GemmKernels.SetRows);
        _stridedBatched = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedGemmArgs>(GemmKernels.StridedBatched);
    }

    public void Forward(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows)
    {
        var pw = w as IlgpuBackend.Weight ?? throw new ArgumentException("weight does not belong to the ILGPU backend");
        if (rows == 0) return;
        var xb = IlgpuBackend.Of(x, (long)rows * w.K, "x", "Linear");
        var yb = IlgpuBackend.Of(y, (long)rows * w.N, "y", "Linear");
        var (biasView, hasBias) = _b.Optional(bias, w.N, "bias", "Linear");
        if (_b.Gemm == GemmVariant.Naive)
        {
            _naive(checked((int)((long)rows * w.N)), xb.View, pw.W.View, biasView, hasBias, w.K, w.N, yb.View);
            return;
        }
        if (_b.Gemm == GemmVariant.CuBlas && _b.Blas is { } blas)
        {
            if (bias is not null) SetRows(bias, w.N, y, rows);
            blas.Gemm(xb.Ptr, pw.W.Ptr, yb.Ptr, rows, w.N, w.K, bias is null ? 0f : 1f);
            return;
        }
        var grid = new Index2D((w.N + GemmKernels.Tile - 1) / GemmKernels.Tile, (rows + GemmKernels.Tile - 1) / GemmKernels.Tile);
        _tiled(new KernelConfig(grid, new Index2D(GemmKernels.Tile, GemmKernels.Tile)), xb.View, pw.W.View, biasView, hasBias, rows, w.K, w.N, yb.View);
    }

    /// <summary>dx[rows, K] = dy[rows, N]·Wᵀ as one column-major GEMM: dxᵀ (K × rows) = op(W) · dyᵀ, W read transposed in
    /// place (cuBLAS on a GPU, the strided-batched kernel elsewhere).</summary>
    public void Backward(DeviceBuffer dy, PackedWeight w, DeviceBuffer dx, int rows)
    {
        var pw = w as IlgpuBackend.Weight ?? throw new ArgumentException("weight does not belong to the ILGPU backend");
        if (rows == 0) return;
        StridedBatched(transA: true, transB: false, m: w.K, n: rows, k: w.N, alpha: 1f, pw.W, 0, lda: w.N, strideA: 0,
            dy, 0, ldb: w.N, strideB: 0, beta: 0f, dx, 0, ldc: w.K, strideC: 0, batch: 1);
    }

    /// <summary>y[r, :] = bias[0..n) for r &lt; rows.</summary>
    public void SetRows(DeviceBuffer bias, int n, DeviceBuffer y, int rows)
    {
        if (rows * n > 0) _setRows(rows * n, IlgpuBackend.Of(bias, n, "bias", "SetRows").View, n, IlgpuBackend.Of(y, (long)rows * n, "y", "SetRows").View);
    }

    /// <summary>cublasSgemmStridedBatched's column-major contract on buffers at element offsets: through cuBLAS when
    /// <see cref="IlgpuBackend.Gemm"/> is CuBlas, else through the <see cref="GemmKernels.StridedBatched"/> kernel. Bounds are
    /// checked against what the last batch item reads and writes.</summary>
    public void StridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, long aOffset, int lda, long strideA,
        DeviceBuffer b, long bOffset, int ldb, long strideB, float beta, DeviceBuffer c, long cOffset, int ldc, long strideC, int batch)
    {
        if ((long)m * n * batch == 0) return;
        long Span(int rows, int cols, int ld2) => (long)(cols - 1) * ld2 + rows;   // elements one column-major item spans
        var ab = IlgpuBackend.Of(a, aOffset + (batch - 1) * strideA + (transA ? Span(k, m, lda) : Span(m, k, lda)), "A", "StridedBatched");
        var bb = IlgpuBackend.Of(b, bOffset + (batch - 1) * strideB + (transB ? Span(n, k, ldb) : Span(k, n, ldb)), "B", "StridedBatched");
        var cb = IlgpuBackend.Of(c, cOffset + (batch - 1) * strideC + Span(m, n, ldc), "C", "StridedBatched");
        if (_b.Gemm == GemmVariant.CuBlas && _b.Blas is { } blas)
        {
            blas.StridedBatched(transA, transB, m, n, k, alpha, ab.Ptr + (nint)(aOffset * 4), lda, strideA,
                bb.Ptr + (nint)(bOffset * 4), ldb, strideB, beta, cb.Ptr + (nint)(cOffset * 4), ldc, strideC, batch);
            return;
        }
        _stridedBatched(checked(m * n * batch), ab.View.SubView(aOffset), bb.View.SubView(bOffset), cb.View.SubView(cOffset), new StridedGemmArgs
        {
            TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc,
            StrideA = strideA, StrideB = strideB, StrideC = strideC, Alpha = alpha, Beta = beta,
        });
    }
}

using ILGPU;

namespace PolyEngine.Kernels.Cuda;

// GEMM ILGPU kernels: y[rows, N] = x[rows, K] · W[K, N] + bias. On a real GPU cuBLAS does the GEMMs (CuBlas.cs); these
// serve the emulated path (ILGPU's CPU accelerator) and GPUs without cuBLAS. Scalar reference: Cpu.Gemm.Reference.
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

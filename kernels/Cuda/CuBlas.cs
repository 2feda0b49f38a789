using System.Reflection;
using System.Runtime.InteropServices;

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// Our own cuBLAS binding (ILGPU's wrapper binds only CUDA 10–12 and lacks GemmEx and strided-batched GEMM):
/// <c>libcublas.so.13</c>, then <c>.12</c>, resolved at first use. Row-major C[M, N] = A[M, K]·B[K, N] is issued as the
/// column-major product Cᵀ = Bᵀ·Aᵀ, so no transposes are materialised. TF32 tensor-core math is an explicit option
/// (<see cref="UseTf32"/>), off by default: fp32 results are the reference.
/// </summary>
public sealed partial class CuBlas : IDisposable
{
    const string Lib = "polyengine_cublas";   // resolved by the DllImportResolver below
    static readonly string[] Candidates = ["libcublas.so.13", "libcublas.so.12", "libcublas.so", "cublas64_13.dll", "cublas64_12.dll"];
    static string? s_loadedFrom;

    static CuBlas() => NativeLibrary.SetDllImportResolver(typeof(CuBlas).Assembly, Resolve);

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Lib) return IntPtr.Zero;
        foreach (var candidate in Candidates)
            if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle))
            {
                s_loadedFrom = candidate;
                return handle;
            }
        throw new PolyEngineKernelException($"cuBLAS not found (probed {string.Join(", ", Candidates)}); install the CUDA toolkit's libcublas or add its folder to LD_LIBRARY_PATH");
    }

    enum Status { Success = 0 }
    const int OpN = 0, OpT = 1;
    const int CudaR32F = 0;              // cudaDataType CUDA_R_32F
    const int ComputeR32F = 68;          // cublasComputeType_t CUBLAS_COMPUTE_32F
    const int ComputeR32FFastTf32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32
    const int GemmDefault = -1;          // CUBLAS_GEMM_DEFAULT

    [LibraryImport(Lib, EntryPoint = "cublasCreate_v2")] private static partial int Create(out IntPtr handle);
    [LibraryImport(Lib, EntryPoint = "cublasDestroy_v2")] private static partial int Destroy(IntPtr handle);
    [LibraryImport(Lib, EntryPoint = "cublasSetStream_v2")] private static partial int SetStream(IntPtr handle, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cublasSgemm_v2")]
    private static partial int Sgemm(IntPtr handle, int transa, int transb, int m, int n, int k, ref float alpha,
        IntPtr a, int lda, IntPtr b, int ldb, ref float beta, IntPtr c, int ldc);

    [LibraryImport(Lib, EntryPoint = "cublasGemmEx")]
    private static partial int GemmEx(IntPtr handle, int transa, int transb, int m, int n, int k, ref float alpha,
        IntPtr a, int aType, int lda, IntPtr b, int bType, int ldb, ref float beta, IntPtr c, int cType, int ldc, int computeType, int algo);

    [LibraryImport(Lib, EntryPoint = "cublasSgemmStridedBatched")]
    private static partial int SgemmStridedBatched(IntPtr handle, int transa, int transb, int m, int n, int k, ref float alpha,
        IntPtr a, int lda, long strideA, IntPtr b, int ldb, long strideB, ref float beta, IntPtr c, int ldc, long strideC, int batchCount);

    readonly IntPtr _handle;

    /// <param name="stream">The CUstream the GEMMs run on (the accelerator's stream, so they order with the kernels).</param>
    public CuBlas(IntPtr stream)
    {
        Check(Create(out _handle), "cublasCreate");
        Check(SetStream(_handle, stream), "cublasSetStream");
    }

    /// <summary>Where cuBLAS was loaded from (after the first call).</summary>
    public static string? LoadedFrom => s_loadedFrom;

    /// <summary>Use TF32 tensor cores for fp32 GEMMs (faster on sm_80+, ~1e-3 relative error); off by default.</summary>
    public bool UseTf32 { get; set; }

    /// <summary>Row-major C[m, n] = A[m, k]·B[k, n] + beta·C (device pointers, fp32).</summary>
    public void Gemm(IntPtr a, IntPtr b, IntPtr c, int m, int n, int k, float beta)
    {
        float alpha = 1f;
        if (UseTf32)
            Check(GemmEx(_handle, OpN, OpN, n, m, k, ref alpha, b, CudaR32F, n, a, CudaR32F, k, ref beta, c, CudaR32F, n, ComputeR32FFastTf32, GemmDefault), "cublasGemmEx");
        else
            Check(Sgemm(_handle, OpN, OpN, n, m, k, ref alpha, b, n, a, k, ref beta, c, n), "cublasSgemm");
    }

    /// <summary>cublasSgemmStridedBatched as cuBLAS defines it (column-major: C_i[m, n] = alpha·op(A_i)·op(B_i) + beta·C_i,
    /// element strides between batch items); <see cref="GemmKernels.StridedBatched"/> is its twin on the emulated path.</summary>
    public void StridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, IntPtr a, int lda, long strideA,
        IntPtr b, int ldb, long strideB, float beta, IntPtr c, int ldc, long strideC, int batch) =>
        Check(SgemmStridedBatched(_handle, transA ? OpT : OpN, transB ? OpT : OpN, m, n, k, ref alpha, a, lda, strideA, b, ldb, strideB,
            ref beta, c, ldc, strideC, batch), "cublasSgemmStridedBatched");

    static void Check(int status, string what)
    {
        if (status != (int)Status.Success)
            throw new PolyEngineKernelException(status == 3
                ? $"{what}: cuBLAS could not allocate GPU memory (CUBLAS_STATUS_ALLOC_FAILED); use a smaller batch"
                : $"{what} failed with cuBLAS status {status}");
    }

    public void Dispose() => Destroy(_handle);
}

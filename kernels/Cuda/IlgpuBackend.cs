using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// The GPU-style backend: every op an ILGPU kernel, launched on an ILGPU accelerator. On a CUDA device this is the CUDA
/// backend; on ILGPU's CPU accelerator (warp size 32) it is the emulated CUDA path (<c>--device cuda-emulated</c>) that CI
/// uses to check the kernels without a GPU — slow by design, tiny shapes only. This class keeps the context, the device
/// memory and the families; each family lives beside its kernels, loads them once and validates before it launches:
/// <see cref="IlgpuLinear"/> (GemmKernels.cs), <see cref="IlgpuNorm"/> (LayerNormKernels.cs), <see cref="IlgpuActivations"/>
/// and <see cref="IlgpuRows"/> (ElementwiseKernels.cs), <see cref="IlgpuAttention"/> (AttentionKernels.cs),
/// <see cref="IlgpuReductions"/> (LogitKernels.cs), <see cref="IlgpuSae"/> (SaeKernels.cs).
/// </summary>
public sealed class IlgpuBackend : IBackend
{
    readonly Context _context;
    readonly IlgpuLinear _linear;
    readonly IlgpuNorm _norm;
    readonly IlgpuActivations _activations;
    readonly IlgpuAttention _attention;
    readonly IlgpuRows _rows;
    readonly IlgpuReductions _reductions;
    readonly IlgpuSae _sae;

    IlgpuBackend(Context context, Accelerator acc, string name, CuBlas? cublas = null)
    {
        Blas = cublas;
        Gemm = cublas is null ? GemmVariant.Tiled : GemmVariant.CuBlas;
        _context = context;
        Acc = acc;
        DeviceName = name;
        Dummy = acc.Allocate1D<float>(1);
        _linear = new IlgpuLinear(this);
        _norm = new IlgpuNorm(this);
        _activations = new IlgpuActivations(this);
        _attention = new IlgpuAttention(this, _linear) { Kind = cublas is null ? AttentionVariant.Fused : AttentionVariant.Gemm };
        _rows = new IlgpuRows(this);
        _sae = new IlgpuSae(this);
        _reductions = new IlgpuReductions(this, _sae);
    }

    /// <summary>ILGPU's CPU accelerator shaped like an NVIDIA SM (warp 32, 8 warps: groups up to 256 lanes, as the 16×16 GEMM
    /// tiles need): the kernels run as they would on a GPU, every lane an OS thread.</summary>
    public static IlgpuBackend CreateEmulated()
    {
        var context = Context.Create(b => b.CPU(new CPUDevice(32, 8, 1)).EnableAlgorithms().Math(MathMode.Default));
        try
        {
            var acc = context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
            return new IlgpuBackend(context, acc, "cuda-emulated (ILGPU CPU accelerator, warp 32)");
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The first CUDA device; a <see cref="PolyEngineKernelException"/> when there is none or no driver.</summary>
    public static IlgpuBackend CreateCuda(int index = 0)
    {
        Context context;
        try { context = Context.Create(b => b.Cuda().EnableAlgorithms().Math(MathMode.Default)); }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or CudaException or NotSupportedException)
        {
            throw new PolyEngineKernelException($"the CUDA driver (libcuda.so.1) could not be used ({e.Message}); install the NVIDIA driver or use --device cpu");
        }
        var devices = context.GetCudaDevices();
        if (devices.Count <= index)
        {
            context.Dispose();
            throw new PolyEngineKernelException(devices.Count == 0
                ? "no CUDA device found (the driver reports none); use --device cpu"
                : $"CUDA device {index} does not exist ({devices.Count} found)");
        }
        var dev = devices[index];
        if (dev.Architecture is not { } cc || cc.Major < 6)
        {
            string found = dev.Architecture is { } a ? $"{a.Major}.{a.Minor}" : "unknown";
            context.Dispose();
            throw new PolyEngineKernelException($"CUDA device {index} ({dev.Name}) has compute capability {found}; PolyEngine needs 6.0 or newer — use --device cpu");
        }
        var acc = dev.CreateCudaAccelerator(context);
        CuBlas? cublas = null;
        string gemm;
        try
        {
            cublas = new CuBlas(((CudaStream)acc.DefaultStream).StreamPtr);
            gemm = $"cuBLAS {CuBlas.LoadedFrom}";
        }
        catch (Exception e) when (e is PolyEngineKernelException or DllNotFoundException or EntryPointNotFoundException)
        {
            gemm = $"ILGPU tiled GEMM (no cuBLAS: {e.Message.Split('\n')[0]})";
        }
        return new IlgpuBackend(context, acc,
            $"cuda:{index} ({dev.Name}, sm_{dev.Architecture?.Major}{dev.Architecture?.Minor}, {dev.MemorySize / (1 << 20):N0} MiB, {gemm})", cublas);
    }

    /// <summary>One line per CUDA device (index, name, compute capability, memory); empty with <paramref name="why"/> when none.</summary>
    public static IReadOnlyList<string> DescribeCudaDevices(out string? why)
    {
        try
        {
            using var context = Context.Create(b => b.Cuda());
            var list = new List<string>();
            var devices = context.GetCudaDevices();
            for (int i = 0; i < devices.Count; i++)
            {
                var d = devices[i];
                list.Add($"cuda:{i}  {d.Name}  sm_{d.Architecture?.Major}{d.Architecture?.Minor}  {d.MemorySize / (1 << 20):N0} MiB");
            }
            why = list.Count == 0 ? "the CUDA driver reports no device" : null;
            return list;
        }
        catch (Exception e)
        {
            why = $"no usable CUDA driver: {e.Message.Split('\n')[0]}";
            return [];
        }
    }

    /// <summary>True when the machine has a usable CUDA driver and at least one device.</summary>
    public static bool CudaAvailable()
    {
        try
        {
            using var context = Context.Create(b => b.Cuda());
            return context.GetCudaDevices().Count > 0;
        }
        catch (Exception)
        {
            return false;
        }
    }

    public string DeviceName { get; }
    public int HostThreads => 1;

    internal Accelerator Acc { get; }
    /// <summary>Stands in for taps and optional inputs that are not given (a kernel argument must be some view).</summary>
    internal MemoryBuffer1D<float, Stride1D.Dense> Dummy { get; }
    /// <summary>cuBLAS on a real GPU; null on the emulated path or when libcublas is missing.</summary>
    internal CuBlas? Blas { get; }

    /// <summary>Which GEMM the linear family uses: cuBLAS when loaded, else the tiled kernel; Naive is the slow twin for checks.</summary>
    public GemmVariant Gemm { get; set; }

    public bool HasCuBlas => Blas is not null;

    /// <summary>How causal attention runs here (see <see cref="IlgpuAttention"/>): GEMM when cuBLAS is loaded, else fused.</summary>
    public AttentionVariant AttentionKind { get => _attention.Kind; set => _attention.Kind = value; }

    public ILinearOps Linear => _linear;
    public INormOps Norm => _norm;
    public IActivationOps Activations => _activations;
    public IAttentionOps Attention => _attention;
    public IRowOps Rows => _rows;
    public IReductionOps Reductions => _reductions;
    public ISaeOps Sae => _sae;

    /// <summary>Device memory, or a view of elements [Offset, Offset + Length) of it (a view frees nothing).</summary>
    internal sealed class Buffer(MemoryBuffer1D<float, Stride1D.Dense> mem, long offset, long length, bool owner) : DeviceBuffer(length)
    {
        public readonly MemoryBuffer1D<float, Stride1D.Dense> Mem = mem;
        public readonly long Offset = offset;
        public ArrayView<float> View => Mem.View.SubView(Offset, Length);
        /// <summary>The device address of the first element (for cuBLAS).</summary>
        public nint Ptr => Mem.NativePtr + (nint)(Offset * sizeof(float));
        protected override DeviceBuffer CreateView(long offset, long length) => new Buffer(Mem, Offset + offset, length, owner: false);
        public override void Dispose() { if (owner) Mem.Dispose(); }
    }

    internal sealed class Weight(Buffer w, int k, int n) : PackedWeight(k, n)
    {
        public readonly Buffer W = w;   // [K, N] row-major
        public override void Dispose() => W.Dispose();
    }

    internal static Buffer Of(DeviceBuffer b) => b as Buffer
        ?? throw new ArgumentException($"buffer of type {b.GetType().Name} does not belong to the ILGPU backend");

    /// <summary>The launchers validate what a kernel would otherwise read or write out of bounds (the ILGPU.Algorithms pattern).</summary>
    internal static Buffer Of(DeviceBuffer b, long needed, string what, string op)
    {
        var buf = Of(b);
        if (needed > buf.Length) throw new ArgumentException($"{op}: {what} holds {buf.Length} floats, the launch needs {needed}");
        return buf;
    }

    /// <summary>The view of an optional buffer (checked against <paramref name="needed"/>), or the dummy, with the flag a kernel takes.</summary>
    internal (ArrayView<float> View, int Given) Optional(DeviceBuffer? b, long needed, string what, string op) =>
        b is null ? (Dummy.View, 0) : (Of(b, needed, what, op).View, 1);

    public DeviceBuffer Allocate(long length)
    {
        var mem = Alloc<float>(length);
        mem.MemSetToZero();
        return new Buffer(mem, 0, length, owner: true);
    }

    /// <summary>Device allocation with an error that says how much was asked for, of how much, and what to do.</summary>
    internal unsafe MemoryBuffer1D<T, Stride1D.Dense> Alloc<T>(long length) where T : unmanaged
    {
        try { return Acc.Allocate1D<T>(Math.Max(1, length)); }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException or CudaException)
        {
            throw new PolyEngineKernelException(
                $"out of device memory: {length * (double)sizeof(T) / (1 << 20):N1} MiB requested on {DeviceName} ({Acc.MemorySize / (1 << 20):N0} MiB in all); use a smaller --batch or --seq ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>A scratch buffer of at least <paramref name="n"/> elements, replacing <paramref name="buffer"/> when smaller.</summary>
    internal MemoryBuffer1D<T, Stride1D.Dense> Grow<T>(ref MemoryBuffer1D<T, Stride1D.Dense>? buffer, long n) where T : unmanaged
    {
        if (buffer is not null && buffer.Length >= n) return buffer;
        Acc.Synchronize();
        buffer?.Dispose();
        return buffer = Alloc<T>(n);
    }

    public DeviceBuffer Upload(ReadOnlySpan<float> data)
    {
        var mem = Alloc<float>(data.Length);
        if (data.Length > 0) mem.View.SubView(0, data.Length).CopyFromCPU(data.ToArray());
        return new Buffer(mem, 0, data.Length, owner: true);
    }

    public DeviceBuffer? TryWrapHost(float[] host) => null;

    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0)
    {
        if (dst.Length == 0) return;
        var tmp = new float[dst.Length];
        Of(src).View.SubView(srcOffset, dst.Length).CopyToCPU(tmp);
        tmp.CopyTo(dst);
    }

    public void Copy(DeviceBuffer src, DeviceBuffer dst)
    {
        if (src.Length != dst.Length) throw new ArgumentException($"Copy: {src.Length} floats into {dst.Length}");
        if (src.Length > 0) Of(src).View.CopyTo(Of(dst).View);
    }

    public PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout)
    {
        if (w.Length != (long)k * n) throw new ArgumentException($"weight has {w.Length} values, expected {k}×{n}");
        var kn = new float[(long)k * n];
        if (layout == WeightLayout.InOut) w.CopyTo(kn);
        else
            for (int j = 0; j < n; j++)
                for (int kk = 0; kk < k; kk++) kn[(long)kk * n + j] = w[j * k + kk];
        return new Weight((Buffer)Upload(kn), k, n);
    }

    /// <summary>y[r, :] = bias[0..n) for r &lt; rows (the cuBLAS path's bias, before a beta = 1 GEMM).</summary>
    public void SetRows(DeviceBuffer bias, int n, DeviceBuffer y, int rows) => _linear.SetRows(bias, n, y, rows);

    /// <summary>cublasSgemmStridedBatched's column-major contract on buffers at element offsets (see <see cref="IlgpuLinear.StridedBatched"/>).</summary>
    public void StridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, long aOffset, int lda, long strideA,
        DeviceBuffer b, long bOffset, int ldb, long strideB, float beta, DeviceBuffer c, long cOffset, int ldc, long strideC, int batch) =>
        _linear.StridedBatched(transA, transB, m, n, k, alpha, a, aOffset, lda, strideA, b, bOffset, ldb, strideB, beta, c, cOffset, ldc, strideC, batch);

    public void Synchronize() => Acc.Synchronize();

    public void Dispose()
    {
        Acc.Synchronize();
        _attention.Dispose();
        _rows.Dispose();
        _reductions.Dispose();
        _sae.Dispose();
        Dummy.Dispose();
        Blas?.Dispose();
        Acc.Dispose();
        _context.Dispose();
    }
}

public enum GemmVariant { CuBlas, Tiled, Naive }

/// <summary>How the ILGPU backend runs causal attention (<see cref="IlgpuBackend.AttentionKind"/>).</summary>
public enum AttentionVariant { Fused, Gemm }

/// <summary>A device problem the user can act on (no driver, no device, out of memory); the engine turns it into its error.</summary>
public sealed class PolyEngineKernelException(string message) : Exception(message);

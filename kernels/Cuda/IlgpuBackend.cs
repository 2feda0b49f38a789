using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// The GPU-style backend: every op an ILGPU kernel (see the *Kernels files), launched on an ILGPU accelerator.
/// On a CUDA device this is the CUDA backend; on ILGPU's CPU accelerator (warp size 32) it is the emulated CUDA path
/// (<c>--device cuda-emulated</c>) that CI uses to check the kernels without a GPU — slow by design, tiny shapes only.
/// Weights are uploaded once as [K, N] device matrices; activations live in device buffers.
/// </summary>
public sealed class IlgpuBackend : IBackend
{
    readonly Context _context;
    readonly Accelerator _acc;
    readonly MemoryBuffer1D<float, Stride1D.Dense> _dummy;   // stands in for taps that are not written
    MemoryBuffer1D<int, Stride1D.Dense>? _ids;
    (int Seq, int RotaryDim, float Base, MemoryBuffer1D<float, Stride1D.Dense> Cos, MemoryBuffer1D<float, Stride1D.Dense> Sin)? _rotary;

    readonly Action<Index1D, ArrayView<int>, ArrayView<float>, int, ArrayView<float>> _gather;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _add;
    readonly Action<Index1D, ArrayView<float>, int, int, int, ArrayView<float>> _copyColumns;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> _activate;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, ArrayView<float>, int, ArrayView<float>, int> _layerNorm;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, ArrayView<float>, int, ArrayView<float>, int> _addLayerNorm;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> _rotaryKernel;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float, ArrayView<float>, int> _causal;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, ArrayView<float>> _gemmTiled;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<float>> _setRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>> _gemmNaive;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>, int> _normalizeRows;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>> _countFiring;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<int>, ArrayView<float>> _compact;
    readonly Action<Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<float>> _topK;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedGemmArgs> _stridedBatched;
    readonly Action<Index1D, ArrayView<float>, int> _causalSoftmax;
    readonly Action<Index1D, ArrayView<float>, int, int, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<int>> _editRows;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<float>> _logSumExp;
    MemoryBuffer1D<int, Stride1D.Dense>? _editFrom;     // EditRows' first positions, grown on demand
    MemoryBuffer1D<float, Stride1D.Dense>? _lse;        // TopLogits' log-sum-exp per row
    MemoryBuffer1D<float, Stride1D.Dense>? _attnScratch;   // [n_heads, seq, seq] scores of the GEMM attention when no pattern is asked for
    MemoryBuffer1D<int, Stride1D.Dense>? _sparseCells, _sparseIndex;   // Sparsify scratch, grown on demand
    MemoryBuffer1D<float, Stride1D.Dense>? _sparseValue;
    readonly CuBlas? _cublas;   // GEMMs on a real GPU; null on the emulated path or when libcublas is missing

    IlgpuBackend(Context context, Accelerator acc, string name, CuBlas? cublas = null)
    {
        _cublas = cublas;
        Gemm = cublas is null ? GemmVariant.Tiled : GemmVariant.CuBlas;
        _context = context;
        _acc = acc;
        DeviceName = name;
        _dummy = acc.Allocate1D<float>(1);
        _gather = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, int, ArrayView<float>>(ElementwiseKernels.Gather);
        _add = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.Add);
        _copyColumns = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, int, ArrayView<float>>(ElementwiseKernels.CopyColumns);
        _activate = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(ElementwiseKernels.Activate);
        _layerNorm = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float,
            ArrayView<float>, int, ArrayView<float>, int>(LayerNormKernels.Forward);
        _addLayerNorm = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int, float, ArrayView<float>, int, ArrayView<float>, int>(LayerNormKernels.AddForward);
        _rotaryKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(
            AttentionKernels.Rotary);
        _causal = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float,
            ArrayView<float>, int>(AttentionKernels.Causal);
        _gemmTiled = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, ArrayView<float>>(GemmKernels.Tiled);
        _gemmNaive = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>>(GemmKernels.Naive);
        _setRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(GemmKernels.SetRows);
        _normalizeRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<float>, int>(SaeKernels.NormalizeRows);
        _countFiring = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>>(SaeKernels.CountFiring);
        _compact = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<int>,
            ArrayView<float>>(SaeKernels.Compact);
        _topK = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<float>>(SaeKernels.TopK);
        _stridedBatched = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, StridedGemmArgs>(GemmKernels.StridedBatched);
        _causalSoftmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int>(AttentionKernels.CausalSoftmax);
        _editRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<int>>(
            EditKernels.EditRows);
        _logSumExp = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(LogitKernels.LogSumExp);
        Attention = cublas is null ? AttentionVariant.Fused : AttentionVariant.Gemm;
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

    /// <summary>Which GEMM <see cref="Linear"/> uses: cuBLAS when loaded, else the tiled kernel; Naive is the slow twin for checks.</summary>
    public GemmVariant Gemm { get; set; }

    public bool HasCuBlas => _cublas is not null;

    sealed class Buffer(MemoryBuffer1D<float, Stride1D.Dense> mem) : DeviceBuffer(mem.Length)
    {
        public readonly MemoryBuffer1D<float, Stride1D.Dense> Mem = mem;
        public ArrayView<float> View => Mem.View;
        public override void Dispose() => Mem.Dispose();
    }

    sealed class Weight(Buffer w, int k, int n) : PackedWeight(k, n)
    {
        public readonly Buffer W = w;   // [K, N] row-major
        public override void Dispose() => W.Dispose();
    }

    static Buffer Of(DeviceBuffer b) => b as Buffer
        ?? throw new ArgumentException($"buffer of type {b.GetType().Name} does not belong to the ILGPU backend");

    /// <summary>The launchers validate what a kernel would otherwise read or write out of bounds (the ILGPU.Algorithms pattern).</summary>
    static Buffer Of(DeviceBuffer b, long needed, string what, string op)
    {
        var buf = Of(b);
        if (needed > buf.Length) throw new ArgumentException($"{op}: {what} holds {buf.Length} floats, the launch needs {needed}");
        return buf;
    }

    public DeviceBuffer Allocate(long length)
    {
        var mem = Alloc(length);
        mem.MemSetToZero();
        return new Buffer(mem);
    }

    /// <summary>Device allocation with an error that says how much was asked for, of how much, and what to do.</summary>
    MemoryBuffer1D<float, Stride1D.Dense> Alloc(long length) => Alloc<float>(length);

    unsafe MemoryBuffer1D<T, Stride1D.Dense> Alloc<T>(long length) where T : unmanaged
    {
        try { return _acc.Allocate1D<T>(Math.Max(1, length)); }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException or CudaException)
        {
            throw new PolyEngineKernelException(
                $"out of device memory: {length * (double)sizeof(T) / (1 << 20):N1} MiB requested on {DeviceName} ({_acc.MemorySize / (1 << 20):N0} MiB in all); use a smaller --batch or --seq ({e.Message.Split('\n')[0]})");
        }
    }

    public DeviceBuffer Upload(ReadOnlySpan<float> data)
    {
        var mem = Alloc(data.Length);
        if (data.Length > 0) mem.View.SubView(0, data.Length).CopyFromCPU(data.ToArray());
        return new Buffer(mem);
    }

    public DeviceBuffer? TryWrapHost(float[] host) => null;

    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0)
    {
        if (dst.Length == 0) return;
        var tmp = new float[dst.Length];
        Of(src).Mem.View.SubView(srcOffset, dst.Length).CopyToCPU(tmp);
        tmp.CopyTo(dst);
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

    public void Linear(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows)
    {
        var pw = w as Weight ?? throw new ArgumentException("weight does not belong to the ILGPU backend");
        if (rows == 0) return;
        if (Gemm == GemmVariant.Naive)
        {
            _gemmNaive(checked((int)((long)rows * w.N)), Of(x, (long)rows * w.K, "x", "Linear").View, pw.W.View,
                bias is null ? _dummy.View : Of(bias, w.N, "bias", "Linear").View, bias is null ? 0 : 1, w.K, w.N, Of(y, (long)rows * w.N, "y", "Linear").View);
            return;
        }
        if (Gemm == GemmVariant.CuBlas && _cublas is not null)
        {
            if (bias is not null) SetRows(bias, w.N, y, rows);
            _cublas.Gemm(Of(x, (long)rows * w.K, "x", "Linear").Mem.NativePtr, pw.W.Mem.NativePtr,
                Of(y, (long)rows * w.N, "y", "Linear").Mem.NativePtr, rows, w.N, w.K, bias is null ? 0f : 1f);
            return;
        }
        var grid = new Index2D((w.N + GemmKernels.Tile - 1) / GemmKernels.Tile, (rows + GemmKernels.Tile - 1) / GemmKernels.Tile);
        _gemmTiled(new KernelConfig(grid, new Index2D(GemmKernels.Tile, GemmKernels.Tile)), Of(x, (long)rows * w.K, "x", "Linear").View, pw.W.View,
            bias is null ? _dummy.View : Of(bias, w.N, "bias", "Linear").View, bias is null ? 0 : 1, rows, w.K, w.N, Of(y, (long)rows * w.N, "y", "Linear").View);
    }

    /// <summary>y[r, :] = bias[0..n) for r &lt; rows (the cuBLAS path's bias, before a beta = 1 GEMM).</summary>
    public void SetRows(DeviceBuffer bias, int n, DeviceBuffer y, int rows)
    {
        if (rows * n > 0) _setRows(rows * n, Of(bias, n, "bias", "SetRows").View, n, Of(y, (long)rows * n, "y", "SetRows").View);
    }

    public void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null) =>
        _layerNorm(rows, Of(x, (long)rows * d, "x", "LayerNorm").View, Of(gamma, d, "gamma", "LayerNorm").View, Of(beta, d, "beta", "LayerNorm").View,
            Of(y, (long)rows * d, "y", "LayerNorm").View, d, eps,
            normalized is null ? _dummy.View : Of(normalized, (long)rows * d, "normalized", "LayerNorm").View, normalized is null ? 0 : 1,
            scale is null ? _dummy.View : Of(scale, rows, "scale", "LayerNorm").View, scale is null ? 0 : 1);

    public void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y,
        int rows, int d, float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        long n = (long)rows * d;
        _addLayerNorm(rows, Of(a, n, "a", "AddLayerNorm").View, Of(b, n, "b", "AddLayerNorm").View, Of(sum, n, "sum", "AddLayerNorm").View,
            Of(gamma, d, "gamma", "AddLayerNorm").View, Of(beta, d, "beta", "AddLayerNorm").View, Of(y, n, "y", "AddLayerNorm").View, d, eps,
            normalized is null ? _dummy.View : Of(normalized, n, "normalized", "AddLayerNorm").View, normalized is null ? 0 : 1,
            scale is null ? _dummy.View : Of(scale, rows, "scale", "AddLayerNorm").View, scale is null ? 0 : 1);
    }

    public void Activate(DeviceBuffer x, DeviceBuffer y, long n, Activation activation)
    {
        if (n > 0) _activate(checked((int)n), Of(x, n, "x", "Activate").View, Of(y, n, "y", "Activate").View, (int)activation);
    }

    public void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n)
    {
        if (n > 0) _add(checked((int)n), Of(a, n, "a", "Add").View, Of(b, n, "b", "Add").View, Of(y, n, "y", "Add").View);
    }

    public void Gather(ReadOnlySpan<int> ids, DeviceBuffer table, int d, DeviceBuffer y)
    {
        long rowsInTable = table.Length / d;
        foreach (int id in ids)
            if ((uint)id >= rowsInTable) throw new ArgumentOutOfRangeException(nameof(ids), $"row {id} outside a table of {rowsInTable} rows");
        if (ids.Length == 0) return;
        if (_ids is null || _ids.Length < ids.Length)
        {
            _acc.Synchronize();
            _ids?.Dispose();
            _ids = _acc.Allocate1D<int>(ids.Length);
        }
        _ids.View.SubView(0, ids.Length).CopyFromCPU(ids.ToArray());
        _gather(ids.Length * d, _ids.View, Of(table).View, d, Of(y, (long)ids.Length * d, "y", "Gather").View);
    }

    public void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst)
    {
        if (colOffset < 0 || colOffset + width > srcWidth) throw new ArgumentException($"CopyColumns: columns [{colOffset}, {colOffset + width}) outside a width of {srcWidth}");
        if (rows * width > 0)
            _copyColumns(rows * width, Of(src, (long)rows * srcWidth, "src", "CopyColumns").View, srcWidth, colOffset, width,
                Of(dst, (long)rows * width, "dst", "CopyColumns").View);
    }

    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase)
    {
        int half = rotaryDim / 2;
        if (half == 0) return;
        if (_rotary is not { } r || r.Seq != seq || r.RotaryDim != rotaryDim || r.Base != rotaryBase)
        {
            // cos/sin of t·inv_freq in float32, exactly as the CPU backend and HF compute them.
            var inv = Cpu.Attention.InverseFrequencies(rotaryDim, rotaryBase);
            var cos = new float[seq * half];
            var sin = new float[seq * half];
            for (int t = 0; t < seq; t++)
                for (int j = 0; j < half; j++)
                {
                    float angle = t * inv[j];
                    cos[t * half + j] = MathF.Cos(angle);
                    sin[t * half + j] = MathF.Sin(angle);
                }
            _acc.Synchronize();
            if (_rotary is { } old) { old.Cos.Dispose(); old.Sin.Dispose(); }
            var cb = _acc.Allocate1D(cos);
            var sb = _acc.Allocate1D(sin);
            _rotary = (seq, rotaryDim, rotaryBase, cb, sb);
        }
        var tables = _rotary.Value;
        long count = (long)batch * seq * nHeads * dHead;
        if (rotaryDim > dHead) throw new ArgumentException($"Rotary: rotary dims {rotaryDim} exceed d_head {dHead}");
        Of(x, count, "x", "Rotary");
        Of(y, count, "y", "Rotary");
        if (!ReferenceEquals(x, y)) Of(x).Mem.View.SubView(0, (long)batch * seq * nHeads * dHead).CopyTo(Of(y).Mem.View.SubView(0, (long)batch * seq * nHeads * dHead));
        _rotaryKernel(batch * seq * nHeads * half, Of(y).View, Of(y).View, tables.Cos.View, tables.Sin.View, seq, nHeads, dHead, rotaryDim);
    }

    /// <summary>How <see cref="CausalAttention"/> runs: as two strided-batched GEMMs around a softmax kernel (cuBLAS on a
    /// GPU, the <see cref="GemmKernels.StridedBatched"/> twin elsewhere), or as the fused V1 kernel. Gemm when cuBLAS is
    /// loaded, else Fused.</summary>
    public AttentionVariant Attention { get; set; }

    public void CausalAttention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null)
    {
        long n = (long)batch * seq * nHeads * dHead;
        Buffer qb = Of(q, n, "q", "CausalAttention"), kb = Of(k, n, "k", "CausalAttention"), vb = Of(v, n, "v", "CausalAttention"),
            zb = Of(z, n, "z", "CausalAttention");
        var pb = pattern is null ? null : Of(pattern, (long)batch * nHeads * seq * seq, "pattern", "CausalAttention");
        if (batch * seq == 0) return;
        if (Attention == AttentionVariant.Fused)
        {
            _causal(batch * nHeads * seq, qb.View, kb.View, vb.View, zb.View, seq, nHeads, dHead, scale, pb is null ? _dummy.View : pb.View, pb is null ? 0 : 1);
            return;
        }
        // Per batch item, heads as the GEMM batch (stride d_head inside a [seq, n_heads·d_head] row-major block). Column-major
        // views: Q_h, K_h, V_h, Z_h are d_head × seq with leading dimension n_heads·d_head; scores S_h are seq × seq (ld seq),
        // S_hᵀ[s, t] = scale·Σ_i K_h[s, i]·Q_h[t, i]  →  C = alpha·op(A)·op(B) with A = K (T), B = Q (N);
        // Z_hᵀ[i, t] = Σ_s V_h[s, i]·P_h[t, s]          →  C = op(A)·op(B) with A = V (N), B = P (N).
        int ld = nHeads * dHead;
        long block = (long)seq * ld, scoreBlock = (long)nHeads * seq * seq;
        var scores = pb ?? new Buffer(Grow(ref _attnScratch, scoreBlock));   // a view of the scratch; the backend owns it
        for (int b = 0; b < batch; b++)
        {
            long so = pb is null ? 0 : b * scoreBlock;
            StridedBatched(true, false, seq, seq, dHead, scale, kb, b * block, ld, dHead, qb, b * block, ld, dHead, 0f, scores, so, seq, (long)seq * seq, nHeads);
            _causalSoftmax(nHeads * seq, scores.View.SubView(so, scoreBlock), seq);
            StridedBatched(false, false, dHead, seq, seq, 1f, vb, b * block, ld, dHead, scores, so, seq, (long)seq * seq, 0f, zb, b * block, ld, dHead, nHeads);
        }
    }

    /// <summary>cublasSgemmStridedBatched's column-major contract on buffers at element offsets: through cuBLAS when
    /// <see cref="Gemm"/> is CuBlas, else through the <see cref="GemmKernels.StridedBatched"/> kernel. Bounds are checked
    /// against what the last batch item reads and writes.</summary>
    public void StridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, DeviceBuffer a, long aOffset, int lda, long strideA,
        DeviceBuffer b, long bOffset, int ldb, long strideB, float beta, DeviceBuffer c, long cOffset, int ldc, long strideC, int batch)
    {
        if ((long)m * n * batch == 0) return;
        long Span(int rows, int cols, int ld2) => (long)(cols - 1) * ld2 + rows;   // elements one column-major item spans
        var ab = Of(a, aOffset + (batch - 1) * strideA + (transA ? Span(k, m, lda) : Span(m, k, lda)), "A", "StridedBatched");
        var bb = Of(b, bOffset + (batch - 1) * strideB + (transB ? Span(n, k, ldb) : Span(k, n, ldb)), "B", "StridedBatched");
        var cb = Of(c, cOffset + (batch - 1) * strideC + Span(m, n, ldc), "C", "StridedBatched");
        if (Gemm == GemmVariant.CuBlas && _cublas is not null)
        {
            _cublas.StridedBatched(transA, transB, m, n, k, alpha, ab.Mem.NativePtr + (nint)(aOffset * 4), lda, strideA,
                bb.Mem.NativePtr + (nint)(bOffset * 4), ldb, strideB, beta, cb.Mem.NativePtr + (nint)(cOffset * 4), ldc, strideC, batch);
            return;
        }
        _stridedBatched(checked(m * n * batch), ab.View.SubView(aOffset), bb.View.SubView(bOffset), cb.View.SubView(cOffset), new StridedGemmArgs
        {
            TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc,
            StrideA = strideA, StrideB = strideB, StrideC = strideC, Alpha = alpha, Beta = beta,
        });
    }

    public void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract)
    {
        if (rows > 0)
            _normalizeRows(rows, Of(x, (long)rows * d, "x", "NormalizeRows").View, Of(y, (long)rows * d, "y", "NormalizeRows").View, d, (int)norm,
                center ? 1 : 0, subtract is null ? _dummy.View : Of(subtract, d, "subtract", "NormalizeRows").View, subtract is null ? 0 : 1);
    }

    public SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule)
    {
        var p = Of(pre, (long)rows * width, "pre", "Sparsify").View;
        if (rows == 0 || width == 0) return SparseRows.FromRows(width, new (int[], float[])[rows].Select(_ => (Array.Empty<int>(), Array.Empty<float>())).ToList());
        if (rule.Activation == SparseActivation.TopK)
        {
            int k = Math.Min(rule.K, width);
            if (k < 1 || k > SaeKernels.MaxTopK) throw new ArgumentException($"Sparsify: TopK k = {rule.K} is outside 1..{SaeKernels.MaxTopK}, what the device kernel keeps");
            int n = checked(rows * k);
            var idx = Grow(ref _sparseIndex, n);
            var val = Grow(ref _sparseValue, n);
            _topK(rows, p, width, k, idx.View, val.View);
            var hi = new int[n];
            var hv = new float[n];
            idx.View.SubView(0, n).CopyToCPU(hi);
            val.View.SubView(0, n).CopyToCPU(hv);
            var perRow = new (int[], float[])[rows];
            for (int r = 0; r < rows; r++)
            {
                var kept = Enumerable.Range(r * k, k).Where(i => hi[i] >= 0 && hv[i] > 0f).OrderBy(i => hi[i]).ToArray();
                perRow[r] = (kept.Select(i => hi[i]).ToArray(), kept.Select(i => hv[i]).ToArray());
            }
            return SparseRows.FromRows(width, perRow);
        }
        bool jump = rule.Activation == SparseActivation.JumpRelu;
        ArrayView<float> threshold = !jump ? _dummy.View
            : Of(rule.Threshold ?? throw new ArgumentException("Sparsify: JumpReLU needs a threshold"), width, "threshold", "Sparsify").View;
        int segments = (width + SaeKernels.Segment - 1) / SaeKernels.Segment;
        int cells = checked(rows * segments);
        var cellBuf = Grow(ref _sparseCells, cells);
        _countFiring(cells, p, threshold, jump ? 1 : 0, width, segments, cellBuf.View);
        var counts = new int[cells];
        cellBuf.View.SubView(0, cells).CopyToCPU(counts);
        var rowStart = new int[rows + 1];
        int total = 0;
        for (int c = 0; c < cells; c++)   // exclusive scan: counts become each cell's output offset
        {
            if (c % segments == 0) rowStart[c / segments] = total;
            int count = counts[c];
            counts[c] = total;
            total = checked(total + count);
        }
        rowStart[rows] = total;
        var index = new int[total];
        var value = new float[total];
        if (total > 0)
        {
            cellBuf.View.SubView(0, cells).CopyFromCPU(counts);
            var idx = Grow(ref _sparseIndex, total);
            var val = Grow(ref _sparseValue, total);
            _compact(cells, p, threshold, jump ? 1 : 0, width, segments, cellBuf.View, idx.View, val.View);
            idx.View.SubView(0, total).CopyToCPU(index);
            val.View.SubView(0, total).CopyToCPU(value);
        }
        return new SparseRows(rows, width, rowStart, index, value);
    }

    public void EditRows(DeviceBuffer x, int batch, int seq, int width, RowEdit edit)
    {
        long n = (long)batch * seq * width, per = (edit.PerPosition ? (long)batch * seq : batch) * width;
        var xb = Of(x, n, "x", "EditRows");
        var mul = edit.Mul is null ? null : Of(edit.Mul, per, "mul", "EditRows");
        var add = edit.Add is null ? null : Of(edit.Add, per, "add", "EditRows");
        if (edit.From.Length < batch) throw new ArgumentException($"EditRows: from has {edit.From.Length} entries, {batch} needed");
        if (n == 0) return;
        var from = Grow(ref _editFrom, batch);
        from.View.SubView(0, batch).CopyFromCPU(edit.From.AsSpan(0, batch).ToArray());
        _editRows(checked((int)n), xb.View, seq, width, mul is null ? _dummy.View : mul.View, mul is null ? 0 : 1, add is null ? _dummy.View : add.View,
            add is null ? 0 : 1, edit.PerPosition ? 1 : 0, from.View);
    }

    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        var l = Of(logits, (long)rows * vocab, "logits", "TopLogits").View;
        k = Math.Min(k, vocab);
        if (k < 1 || k > SaeKernels.MaxTopK) throw new ArgumentException($"TopLogits: k = {k} is outside 1..{SaeKernels.MaxTopK}, what the device kernel keeps");
        int n = checked(rows * k);
        var idx = Grow(ref _sparseIndex, n);
        var val = Grow(ref _sparseValue, n);
        var lse = Grow(ref _lse, rows);
        _topK(rows, l, vocab, k, idx.View, val.View);
        _logSumExp(rows, l, vocab, lse.View);
        var ids = new int[n];
        var top = new float[n];
        var sums = new float[rows];
        idx.View.SubView(0, n).CopyToCPU(ids);
        val.View.SubView(0, n).CopyToCPU(top);
        lse.View.SubView(0, rows).CopyToCPU(sums);
        for (int r = 0; r < rows; r++)   // the heap's order → descending logits, ties to the lower id
        {
            var order = Enumerable.Range(r * k, k).OrderByDescending(i => top[i]).ThenBy(i => ids[i]).ToArray();
            var (ri, rv) = (order.Select(i => ids[i]).ToArray(), order.Select(i => top[i]).ToArray());
            ri.CopyTo(ids, r * k);
            rv.CopyTo(top, r * k);
        }
        return new TopLogitRows(rows, k, ids, top, sums);
    }

    /// <summary>A scratch buffer of at least <paramref name="n"/> elements, replacing <paramref name="buffer"/> when smaller.</summary>
    MemoryBuffer1D<T, Stride1D.Dense> Grow<T>(ref MemoryBuffer1D<T, Stride1D.Dense>? buffer, long n) where T : unmanaged
    {
        if (buffer is not null && buffer.Length >= n) return buffer;
        _acc.Synchronize();
        buffer?.Dispose();
        return buffer = Alloc<T>(n);
    }

    public void Synchronize() => _acc.Synchronize();

    public void Dispose()
    {
        _acc.Synchronize();
        _ids?.Dispose();
        _sparseCells?.Dispose();
        _attnScratch?.Dispose();
        _editFrom?.Dispose();
        _lse?.Dispose();
        _sparseIndex?.Dispose();
        _sparseValue?.Dispose();
        if (_rotary is { } r) { r.Cos.Dispose(); r.Sin.Dispose(); }
        _dummy.Dispose();
        _cublas?.Dispose();
        _acc.Dispose();
        _context.Dispose();
    }
}

public enum GemmVariant { CuBlas, Tiled, Naive }

/// <summary>How the ILGPU backend runs causal attention (<see cref="IlgpuBackend.Attention"/>).</summary>
public enum AttentionVariant { Fused, Gemm }

/// <summary>A device problem the user can act on (no driver, no device, out of memory); the engine turns it into its error.</summary>
public sealed class PolyEngineKernelException(string message) : Exception(message);

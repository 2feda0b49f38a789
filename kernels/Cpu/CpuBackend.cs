using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PolyEngine.Kernels.Cpu;

/// <summary>
/// The managed SIMD backend: host float arrays (a buffer is an array, a view an offset and length into one), weights
/// packed once for the GEMM, ops parallel over rows or heads. Its families live beside their code: <see cref="CpuLinear"/>
/// (Gemm.cs), <see cref="CpuNorm"/> (LayerNorm.cs), <see cref="CpuActivations"/>, <see cref="CpuAttention"/>,
/// <see cref="CpuRows"/> (Rows.cs), <see cref="CpuReductions"/> (LogitReductions.cs), <see cref="CpuSae"/> (SparseEncode.cs).
/// </summary>
public sealed class CpuBackend : IBackend
{
    /// <param name="threads">Worker threads; 0 = all logical cores.</param>
    public CpuBackend(int threads = 0)
    {
        if (threads < 0) throw new ArgumentOutOfRangeException(nameof(threads), threads, "--threads must be 0 (all cores) or positive");
        Threads = threads == 0 ? Environment.ProcessorCount : threads;
        string simd = (Avx2.IsSupported && Fma.IsSupported ? "AVX2+FMA" : Vector256.IsHardwareAccelerated ? "Vector256" : "Vector<T>") +
            (Gemm.Wide ? ", AVX-512 GEMM" : "");
        DeviceName = $"cpu ({Threads} thread{(Threads == 1 ? "" : "s")}, {simd})";
        Linear = new CpuLinear(this);
        Norm = new CpuNorm(this);
        Activations = new CpuActivations(this);
        Attention = new CpuAttention(this);
        Rows = new CpuRows();
        Reductions = new CpuReductions(this);
        Sae = new CpuSae(this);
    }

    public int Threads { get; }
    public int HostThreads => Threads;
    public string DeviceName { get; }

    public ILinearOps Linear { get; }
    public INormOps Norm { get; }
    public IActivationOps Activations { get; }
    public IAttentionOps Attention { get; }
    public IRowOps Rows { get; }
    public IReductionOps Reductions { get; }
    public ISaeOps Sae { get; }

    /// <summary>A host array, or a view of elements [Offset, Offset + Length) of one.</summary>
    internal sealed class Buffer(float[] data, int offset, int length) : DeviceBuffer(length)
    {
        public readonly float[] Data = data;
        public readonly int Offset = offset;
        public Span<float> Span => Data.AsSpan(Offset, (int)Length);
        public ArraySegment<float> Segment => new(Data, Offset, (int)Length);
        protected override DeviceBuffer CreateView(long offset, long length) => new Buffer(Data, Offset + (int)offset, (int)length);
        public override void Dispose() { }
    }

    internal sealed class Weight(Gemm.Packed packed) : PackedWeight(packed.K, packed.N)
    {
        public readonly Gemm.Packed Packed = packed;
        Gemm.Packed? _transposed;
        /// <summary>Wᵀ packed for the input gradient, made on first use (a second copy of the weight).</summary>
        public Gemm.Packed Transposed => LazyInitializer.EnsureInitialized(ref _transposed, () => Gemm.Transpose(Packed));
        public override void Dispose() { }
    }

    static Buffer Of(DeviceBuffer b) => b as Buffer
        ?? throw new ArgumentException($"buffer of type {b.GetType().Name} does not belong to the CPU backend");

    /// <summary>The buffer's (or view's) elements.</summary>
    internal static Span<float> Span(DeviceBuffer b) => Of(b).Span;

    /// <summary>The buffer's elements as a segment, for work split over threads (a span cannot enter a lambda).</summary>
    internal static ArraySegment<float> Seg(DeviceBuffer b) => Of(b).Segment;

    public DeviceBuffer Allocate(long length)
    {
        if (length > Array.MaxLength)
            throw new OutOfMemoryException($"a single tensor of {length:N0} floats exceeds the CPU backend's limit of {Array.MaxLength:N0}; use a smaller batch");
        return new Buffer(GC.AllocateArray<float>((int)length, pinned: true), 0, (int)length);
    }

    public DeviceBuffer Upload(ReadOnlySpan<float> data)
    {
        var b = GC.AllocateUninitializedArray<float>(data.Length, pinned: true);
        data.CopyTo(b);
        return new Buffer(b, 0, b.Length);
    }

    public DeviceBuffer? TryWrapHost(float[] host) => new Buffer(host, 0, host.Length);

    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0) => Span(src).Slice((int)srcOffset, dst.Length).CopyTo(dst);

    public void Copy(DeviceBuffer src, DeviceBuffer dst)
    {
        if (src.Length != dst.Length) throw new ArgumentException($"Copy: {src.Length} floats into {dst.Length}");
        Span(src).CopyTo(Span(dst));
    }

    public PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout) => new Weight(Gemm.Pack(w, k, n, layout));

    public void Synchronize() { }

    /// <summary>Runs <paramref name="body"/> for 0..count−1 on the backend's threads (inline for one thread or one item).</summary>
    internal void ForRows(int count, Action<int> body)
    {
        if (Threads == 1 || count < 2) { for (int i = 0; i < count; i++) body(i); return; }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Threads }, body);
    }

    public void Dispose() { }
}

using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PolyEngine.Kernels.Cpu;

/// <summary>The managed SIMD backend: host float arrays, packed-weight GEMM, ops parallel over rows/heads.</summary>
public sealed class CpuBackend : IBackend
{
    /// <param name="threads">Worker threads; 0 = all logical cores.</param>
    public CpuBackend(int threads = 0)
    {
        if (threads < 0) throw new ArgumentOutOfRangeException(nameof(threads), threads, "--threads must be 0 (all cores) or positive");
        Threads = threads == 0 ? Environment.ProcessorCount : threads;
        string simd = Avx2.IsSupported && Fma.IsSupported ? "AVX2+FMA" : Vector256.IsHardwareAccelerated ? "Vector256" : "Vector<T>";
        DeviceName = $"cpu ({Threads} thread{(Threads == 1 ? "" : "s")}, {simd})";
    }

    public int Threads { get; }

    public string DeviceName { get; }

    sealed class Buffer(float[] data) : DeviceBuffer(data.LongLength)
    {
        public readonly float[] Data = data;
        public override void Dispose() { }
    }

    sealed class Weight(Gemm.Packed packed) : PackedWeight(packed.K, packed.N)
    {
        public readonly Gemm.Packed Packed = packed;
        public override void Dispose() { }
    }

    static float[] Of(DeviceBuffer b) => b is Buffer cb ? cb.Data
        : throw new ArgumentException($"buffer of type {b.GetType().Name} does not belong to the CPU backend");

    public DeviceBuffer Allocate(long length)
    {
        if (length > Array.MaxLength)
            throw new OutOfMemoryException($"a single tensor of {length:N0} floats exceeds the CPU backend's limit of {Array.MaxLength:N0}; use a smaller batch");
        return new Buffer(GC.AllocateArray<float>((int)length, pinned: true));
    }

    public DeviceBuffer Upload(ReadOnlySpan<float> data)
    {
        var b = GC.AllocateUninitializedArray<float>(data.Length, pinned: true);
        data.CopyTo(b);
        return new Buffer(b);
    }

    public DeviceBuffer? TryWrapHost(float[] host) => new Buffer(host);

    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0) => Of(src).AsSpan((int)srcOffset, dst.Length).CopyTo(dst);

    public PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout) => new Weight(Gemm.Pack(w, k, n, layout));

    public void Linear(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows)
    {
        var packed = w is Weight cw ? cw.Packed : throw new ArgumentException("weight does not belong to the CPU backend");
        Gemm.Multiply(Of(x), packed, bias is null ? default : Of(bias), Of(y), rows, Threads);
    }

    public void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        float[] xs = Of(x), g = Of(gamma), bt = Of(beta), ys = Of(y);
        float[]? ns = normalized is null ? null : Of(normalized), ss = scale is null ? null : Of(scale);
        ForRows(rows, r => Kernels.Cpu.LayerNorm.Row(xs.AsSpan(r * d, d), g.AsSpan(0, d), bt.AsSpan(0, d), ys.AsSpan(r * d, d), eps,
            ns is null ? default : ns.AsSpan(r * d, d), ss is null ? default : ss.AsSpan(r, 1)));
    }

    public void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y,
        int rows, int d, float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null)
    {
        float[] av = Of(a), bv = Of(b), sv = Of(sum), g = Of(gamma), bt = Of(beta), ys = Of(y);
        float[]? ns = normalized is null ? null : Of(normalized), ss = scale is null ? null : Of(scale);
        ForRows(rows, r =>
        {
            var row = sv.AsSpan(r * d, d);
            System.Numerics.Tensors.TensorPrimitives.Add(av.AsSpan(r * d, d), bv.AsSpan(r * d, d), row);
            Kernels.Cpu.LayerNorm.Row(row, g.AsSpan(0, d), bt.AsSpan(0, d), ys.AsSpan(r * d, d), eps,
                ns is null ? default : ns.AsSpan(r * d, d), ss is null ? default : ss.AsSpan(r, 1));
        });
    }

    public void Activate(DeviceBuffer x, DeviceBuffer y, long n, Activation activation)
    {
        float[] xs = Of(x), ys = Of(y);
        const int Chunk = 16384;
        int chunks = (int)((n + Chunk - 1) / Chunk);
        ForRows(chunks, c =>
        {
            int o = c * Chunk, len = (int)Math.Min(Chunk, n - o);
            Activations.Apply(xs.AsSpan(o, len), ys.AsSpan(o, len), activation);
        });
    }

    public void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n) =>
        System.Numerics.Tensors.TensorPrimitives.Add(Of(a).AsSpan(0, (int)n), Of(b).AsSpan(0, (int)n), Of(y).AsSpan(0, (int)n));

    public void Gather(ReadOnlySpan<int> ids, DeviceBuffer table, int d, DeviceBuffer y)
    {
        float[] t = Of(table), ys = Of(y);
        long rowsInTable = t.LongLength / d;
        for (int r = 0; r < ids.Length; r++)
        {
            if ((uint)ids[r] >= rowsInTable) throw new ArgumentOutOfRangeException(nameof(ids), $"row {ids[r]} outside a table of {rowsInTable} rows");
            t.AsSpan(ids[r] * d, d).CopyTo(ys.AsSpan(r * d, d));
        }
    }

    public void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst)
    {
        float[] s = Of(src), dd = Of(dst);
        for (int r = 0; r < rows; r++) s.AsSpan(r * srcWidth + colOffset, width).CopyTo(dd.AsSpan(r * width, width));
    }

    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase) =>
        Attention.Rotary(Of(x), Of(y), batch, seq, nHeads, dHead, rotaryDim, rotaryBase);

    public void CausalAttention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null)
    {
        float[] qs = Of(q), ks = Of(k), vs = Of(v), zs = Of(z);
        float[]? ps = pattern is null ? null : Of(pattern);
        ForRows(batch * nHeads, bh => Attention.Causal(qs, ks, vs, zs, batch, seq, nHeads, dHead, scale,
            ps is null ? default : ps.AsSpan(), bh / nHeads, bh % nHeads));
    }

    public void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract)
    {
        float[] xs = Of(x), ys = Of(y);
        var sub = subtract is null ? null : Of(subtract);
        if ((long)rows * d > Math.Min(xs.Length, ys.Length) || (sub is not null && sub.Length < d))
            throw new ArgumentException($"NormalizeRows: buffers too small for {rows}×{d}");
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = Threads }, r =>
        {
            var row = ys.AsSpan(r * d, d);
            if (!ReferenceEquals(xs, ys)) xs.AsSpan(r * d, d).CopyTo(row);
            SparseEncode.Normalize(row, norm, center, sub is null ? default : sub.AsSpan(0, d), out _, out _);
        });
    }

    public SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule)
    {
        var p = Of(pre);
        if ((long)rows * width > p.Length) throw new ArgumentException($"Sparsify: pre holds {p.Length} floats, {rows}×{width} needed");
        var threshold = rule.Threshold is null ? null : Of(rule.Threshold);
        if (rule.Activation == SparseActivation.JumpRelu && (threshold is null || threshold.Length < width))
            throw new ArgumentException($"Sparsify: JumpReLU needs a threshold of {width} values");
        return SparseEncode.Sparsify(p, rows, width, rule.Activation, rule.K, threshold, Threads);
    }

    public void EditRows(DeviceBuffer x, int batch, int seq, int width, RowEdit edit)
    {
        var xs = Of(x);
        long n = (long)batch * seq * width, per = (edit.PerPosition ? (long)batch * seq : batch) * width;
        var mul = edit.Mul is null ? null : Of(edit.Mul);
        var add = edit.Add is null ? null : Of(edit.Add);
        if (n > xs.Length || mul?.Length < per || add?.Length < per || edit.From.Length < batch)
            throw new ArgumentException($"EditRows: buffers too small for {batch}×{seq}×{width} (mul/add need {per} floats, from {batch} entries)");
        RowEdits.Apply(xs, batch, seq, width, mul, add, edit.PerPosition, edit.From);
    }

    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        var l = Of(logits);
        if ((long)rows * vocab > l.Length) throw new ArgumentException($"TopLogits: logits hold {l.Length} floats, {rows}×{vocab} needed");
        if (k < 1) throw new ArgumentException($"TopLogits: k must be positive, got {k}");
        return LogitReductions.Top(l, rows, vocab, k, Threads);
    }

    public void Synchronize() { }

    void ForRows(int count, Action<int> body)
    {
        if (Threads == 1 || count < 2) { for (int i = 0; i < count; i++) body(i); return; }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Threads }, body);
    }

    public void Dispose() { }
}

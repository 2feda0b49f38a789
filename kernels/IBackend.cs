namespace PolyEngine.Kernels;

/// <summary>Element-wise activation functions used by the MLPs of the supported model families.</summary>
public enum Activation
{
    /// <summary>HF <c>gelu_new</c>: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (GPT-2).</summary>
    GeluTanh,
    /// <summary>HF <c>gelu</c>: exact 0.5·x·(1 + erf(x/√2)) (GPT-NeoX / Pythia).</summary>
    GeluErf,
    /// <summary>max(x, 0).</summary>
    Relu,
}

/// <summary>How a weight matrix is laid out on disk.</summary>
public enum WeightLayout
{
    /// <summary>[in, out] — HF <c>Conv1D</c> (GPT-2): y = x·W + b.</summary>
    InOut,
    /// <summary>[out, in] — <c>nn.Linear</c> (GPT-NeoX) and embedding matrices used as heads: y = x·Wᵀ + b.</summary>
    OutIn,
}

/// <summary>
/// A float32 buffer owned by a backend (host memory on the CPU, device memory on a GPU), or a view of part of one:
/// <see cref="Slice"/> addresses elements [offset, offset + length) without a copy — rows r0..r1 of an activation,
/// positions ≥ t, one layer's saved state — and every op takes a view wherever it takes a buffer.
/// </summary>
public abstract class DeviceBuffer : IDisposable
{
    protected DeviceBuffer(long length) => Length = length;

    /// <summary>Number of float32 elements.</summary>
    public long Length { get; }

    /// <summary>A view of elements [<paramref name="offset"/>, offset + <paramref name="length"/>) of this buffer, sharing its
    /// memory (a write through either is seen by both). Disposing a view frees nothing; it must not outlive the buffer.</summary>
    public DeviceBuffer Slice(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"slice [{offset}, {offset + length}) outside a buffer of {Length} floats");
        return CreateView(offset, length);
    }

    /// <summary>The backend's view of [offset, offset + length) (bounds already checked).</summary>
    protected abstract DeviceBuffer CreateView(long offset, long length);

    public abstract void Dispose();
}

/// <summary>A weight matrix [in = K, out = N] repacked once at load for the backend's GEMM.</summary>
public abstract class PackedWeight : IDisposable
{
    protected PackedWeight(int k, int n) { K = k; N = n; }

    /// <summary>Input width (reduction dimension).</summary>
    public int K { get; }

    /// <summary>Output width.</summary>
    public int N { get; }

    public abstract void Dispose();
}

/// <summary>
/// A compute device: its memory (allocate, upload, download, pack weights) and its ops, grouped in families
/// (<see cref="ILinearOps"/>, <see cref="INormOps"/>, <see cref="IActivationOps"/>, <see cref="IAttentionOps"/>,
/// <see cref="IRowOps"/>, <see cref="IReductionOps"/>, <see cref="ISaeOps"/>), each family with its forward ops and room for
/// their backward twins. The engine never asks which backend it has. Buffers are row-major; "rows" is batch·pos flattened.
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>Short device description, e.g. "cpu (2 threads, AVX2+FMA)".</summary>
    string DeviceName { get; }

    /// <summary>Host threads the backend computes with (the CPU backend's workers; 1 for a device, which has its own).</summary>
    int HostThreads { get; }

    /// <summary>A zero-filled buffer of <paramref name="length"/> floats.</summary>
    DeviceBuffer Allocate(long length);

    DeviceBuffer Upload(ReadOnlySpan<float> data);

    /// <summary>Copies <c>dst.Length</c> floats starting at <paramref name="srcOffset"/> to the host.</summary>
    void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0);

    /// <summary>Copies <paramref name="src"/> into <paramref name="dst"/> (same length; views of one buffer must not overlap).</summary>
    void Copy(DeviceBuffer src, DeviceBuffer dst);

    /// <summary>A buffer over <paramref name="host"/> itself when the backend computes in host memory (no copy; results
    /// written to it appear in the array), otherwise null — then allocate and <see cref="Download"/>.</summary>
    DeviceBuffer? TryWrapHost(float[] host);

    /// <summary>Repacks a weight matrix given in <paramref name="layout"/> as a [k, n] operator.</summary>
    PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout);

    ILinearOps Linear { get; }
    INormOps Norm { get; }
    IActivationOps Activations { get; }
    IAttentionOps Attention { get; }
    IRowOps Rows { get; }
    IReductionOps Reductions { get; }
    ISaeOps Sae { get; }

    /// <summary>Waits for queued work (no-op on the CPU).</summary>
    void Synchronize();
}

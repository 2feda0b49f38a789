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

/// <summary>A float32 buffer owned by a backend (host memory on the CPU, device memory on a GPU).</summary>
public abstract class DeviceBuffer : IDisposable
{
    protected DeviceBuffer(long length) => Length = length;

    /// <summary>Number of float32 elements.</summary>
    public long Length { get; }

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
/// The ops the engine needs from a compute device. The engine never asks which backend it has.
/// Shapes are given explicitly; buffers are row-major. "rows" is batch·pos flattened.
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>Short device description, e.g. "cpu (2 threads, AVX2+FMA)".</summary>
    string DeviceName { get; }

    /// <summary>A zero-filled buffer of <paramref name="length"/> floats.</summary>
    DeviceBuffer Allocate(long length);

    DeviceBuffer Upload(ReadOnlySpan<float> data);

    /// <summary>Copies <c>dst.Length</c> floats starting at <paramref name="srcOffset"/> to the host.</summary>
    void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0);

    /// <summary>A buffer over <paramref name="host"/> itself when the backend computes in host memory (no copy; results
    /// written to it appear in the array), otherwise null — then allocate and <see cref="Download"/>.</summary>
    DeviceBuffer? TryWrapHost(float[] host);

    /// <summary>Repacks a weight matrix given in <paramref name="layout"/> as a [k, n] operator.</summary>
    PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout);

    /// <summary>y[rows, N] = x[rows, K] · W + bias (bias may be null).</summary>
    void Linear(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows);

    /// <summary>y[rows, d] = (x − mean)/√(var + eps)·gamma + beta (biased variance). Optional taps:
    /// <paramref name="normalized"/> [rows, d] before gain/bias, <paramref name="scale"/> [rows] = √(var + eps).</summary>
    void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null);

    /// <summary>The residual add fused with the layer norm that reads it: sum = a + b (sum may alias a or b), then
    /// y = LayerNorm(sum) with the same taps as <see cref="LayerNorm"/>. One pass over the rows instead of two.</summary>
    void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d,
        float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null);

    /// <summary>y[i] = act(x[i]) for i &lt; n (y may alias x).</summary>
    void Activate(DeviceBuffer x, DeviceBuffer y, long n, Activation activation);

    /// <summary>y[i] = a[i] + b[i] for i &lt; n (y may alias a or b).</summary>
    void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n);

    /// <summary>y[r, :] = table[ids[r], :] for each of ids.Length rows of width d.</summary>
    void Gather(ReadOnlySpan<int> ids, DeviceBuffer table, int d, DeviceBuffer y);

    /// <summary>Copies columns [colOffset, colOffset + width) of src[rows, srcWidth] into dst[rows, width].</summary>
    void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst);

    /// <summary>Rotary embedding (rotate-half convention) on the first <paramref name="rotaryDim"/> dims of every head:
    /// y[b, t, h, :] from x[b, t, h, :] at position t (y may alias x).</summary>
    void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase);

    /// <summary>Causal attention per (batch, head): z[b, t, h, :] = Σ_s≤t softmax_s(scale·q·k)·v[b, s, h, :].
    /// q, k, v, z are [batch, seq, nHeads, dHead]; <paramref name="pattern"/> [batch, nHeads, seq, seq] is written when not null.</summary>
    void CausalAttention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null);

    /// <summary>An SAE's input processing, per row of x[rows, d]: centre (x − mean) when <paramref name="center"/>, then
    /// <paramref name="norm"/>, then subtract <paramref name="subtract"/> [d] when not null; y may alias x.</summary>
    void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract);

    /// <summary>Applies <paramref name="rule"/> to pre[rows, width] and returns the nonzeros, per row in ascending column order:
    /// the only part of an SAE encoding that reaches the host on a device.</summary>
    SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule);

    /// <summary>Applies <paramref name="edit"/> in place to x [batch, seq, width] (a hook's activation).</summary>
    void EditRows(DeviceBuffer x, int batch, int seq, int width, RowEdit edit);

    /// <summary>The k largest logits of each row of logits [rows, vocab] and the rows' log-sum-exp (<see cref="TopLogitRows"/>).</summary>
    TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k);

    /// <summary>Waits for queued work (no-op on the CPU).</summary>
    void Synchronize();
}

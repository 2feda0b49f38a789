using System.Diagnostics;

namespace PolyEngine.Kernels;

/// <summary>
/// Wraps a backend and accumulates wall time per op (after <see cref="IBackend.Synchronize"/> on the inner backend, so
/// device ops are timed too). For `bench forward --profile`: measure before optimising.
/// </summary>
public sealed class ProfilingBackend(IBackend inner) : IBackend
{
    readonly Dictionary<string, (double Seconds, long Calls)> _times = new();

    public IReadOnlyDictionary<string, (double Seconds, long Calls)> Times => _times;

    public void Reset() => _times.Clear();

    void Time(string op, Action f)
    {
        var sw = Stopwatch.StartNew();
        f();
        Record(op, sw);
    }

    /// <summary>Adds the time since <paramref name="started"/> (after the inner backend synchronised) to <paramref name="op"/>.</summary>
    void Record(string op, Stopwatch started)
    {
        inner.Synchronize();
        var (s, c) = _times.GetValueOrDefault(op);
        _times[op] = (s + started.Elapsed.TotalSeconds, c + 1);
    }

    public string DeviceName => inner.DeviceName;
    public DeviceBuffer Allocate(long length) => inner.Allocate(length);
    public DeviceBuffer Upload(ReadOnlySpan<float> data) => inner.Upload(data);
    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0)
    {
        var sw = Stopwatch.StartNew();   // spans cannot enter a lambda: timed inline
        inner.Download(src, dst, srcOffset);
        Record("Download", sw);
    }
    public DeviceBuffer? TryWrapHost(float[] host) => inner.TryWrapHost(host);
    public PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout) => inner.PackWeight(w, k, n, layout);
    public void Linear(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows) =>
        Time($"Linear {w.K}→{w.N}", () => inner.Linear(x, w, bias, y, rows));
    public void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null) =>
        Time("LayerNorm", () => inner.LayerNorm(x, gamma, beta, y, rows, d, eps, normalized, scale));
    public void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y,
        int rows, int d, float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null) =>
        Time("AddLayerNorm", () => inner.AddLayerNorm(a, b, sum, gamma, beta, y, rows, d, eps, normalized, scale));
    public void Activate(DeviceBuffer x, DeviceBuffer y, long n, Activation activation) => Time($"Activate {activation}", () => inner.Activate(x, y, n, activation));
    public void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n) => Time("Add", () => inner.Add(a, b, y, n));
    public void Gather(ReadOnlySpan<int> ids, DeviceBuffer table, int d, DeviceBuffer y)
    {
        var sw = Stopwatch.StartNew();
        inner.Gather(ids, table, d, y);
        Record("Gather", sw);
    }
    public void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst) =>
        Time("CopyColumns", () => inner.CopyColumns(src, rows, srcWidth, colOffset, width, dst));
    public void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase) =>
        Time("Rotary", () => inner.Rotary(x, y, batch, seq, nHeads, dHead, rotaryDim, rotaryBase));
    public void CausalAttention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null) =>
        Time("CausalAttention", () => inner.CausalAttention(q, k, v, z, batch, seq, nHeads, dHead, scale, pattern));
    public void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract) =>
        Time("NormalizeRows", () => inner.NormalizeRows(x, y, rows, d, norm, center, subtract));
    public SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule)
    {
        SparseRows? result = null;
        Time($"Sparsify {rule.Activation}", () => result = inner.Sparsify(pre, rows, width, rule));
        return result!;
    }
    public void EditRows(DeviceBuffer x, int batch, int seq, int width, RowEdit edit) =>
        Time("EditRows", () => inner.EditRows(x, batch, seq, width, edit));
    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        TopLogitRows? result = null;
        Time("TopLogits", () => result = inner.TopLogits(logits, rows, vocab, k));
        return result!;
    }
    public void Synchronize() => inner.Synchronize();
    public void Dispose() => inner.Dispose();
}

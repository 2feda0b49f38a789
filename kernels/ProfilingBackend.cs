using System.Diagnostics;
using System.Reflection;
using System.Runtime.ExceptionServices;

namespace PolyEngine.Kernels;

/// <summary>
/// Wraps a backend and accumulates wall time per op (after <see cref="IBackend.Synchronize"/> on the inner backend, so
/// device ops are timed too), for `bench forward --profile`: measure before optimising. Every op of every family is timed
/// by one generic proxy (<see cref="DispatchProxy"/>), so a new op is profiled without a line here; names are
/// "Family.Op" plus the weight shape, activation or SAE rule when the op has one.
/// </summary>
public sealed class ProfilingBackend : IBackend
{
    readonly IBackend _inner;
    readonly Dictionary<string, (double Seconds, long Calls)> _times = new();

    public ProfilingBackend(IBackend inner)
    {
        _inner = inner;
        Linear = Timed(inner.Linear, "Linear");
        Norm = Timed(inner.Norm, "Norm");
        Activations = Timed(inner.Activations, "Activations");
        Attention = Timed(inner.Attention, "Attention");
        Rows = Timed(inner.Rows, "Rows");
        Reductions = Timed(inner.Reductions, "Reductions");
        Sae = Timed(inner.Sae, "Sae");
    }

    public IReadOnlyDictionary<string, (double Seconds, long Calls)> Times => _times;

    public void Reset() => _times.Clear();

    /// <summary>Adds the time since <paramref name="started"/> (after the inner backend synchronised) to <paramref name="op"/>.</summary>
    void Record(string op, Stopwatch started)
    {
        _inner.Synchronize();
        var (s, c) = _times.GetValueOrDefault(op);
        _times[op] = (s + started.Elapsed.TotalSeconds, c + 1);
    }

    T Timed<T>(T target, string family) where T : class
    {
        var proxy = DispatchProxy.Create<T, TimingProxy>();
        var timing = (TimingProxy)(object)proxy;
        timing.Target = target;
        timing.Family = family;
        timing.Owner = this;
        return proxy;
    }

    /// <summary>Times every method of one family interface around the real call.</summary>
    public class TimingProxy : DispatchProxy
    {
        internal object Target = null!;
        internal string Family = "";
        internal ProfilingBackend Owner = null!;

        protected override object? Invoke(MethodInfo? method, object?[]? args)
        {
            ArgumentNullException.ThrowIfNull(method);
            if (method.IsSpecialName) return Call(method, args);   // a property (e.g. the attention variant): not an op
            var sw = Stopwatch.StartNew();
            try { return Call(method, args); }
            finally { Owner.Record(Name(method, args ?? []), sw); }
        }

        object? Call(MethodInfo method, object?[]? args)
        {
            try { return method.Invoke(Target, args); }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }

        string Name(MethodInfo method, object?[] args)
        {
            string detail = args.FirstOrDefault(a => a is PackedWeight or Activation or SparseRule) switch
            {
                PackedWeight w => $" {w.K}→{w.N}",
                Activation a => $" {a}",
                SparseRule r => $" {r.Activation}",
                _ => "",
            };
            return $"{Family}.{method.Name}{detail}";
        }
    }

    public string DeviceName => _inner.DeviceName;
    public int HostThreads => _inner.HostThreads;
    public ILinearOps Linear { get; }
    public INormOps Norm { get; }
    public IActivationOps Activations { get; }
    public IAttentionOps Attention { get; }
    public IRowOps Rows { get; }
    public IReductionOps Reductions { get; }
    public ISaeOps Sae { get; }

    public DeviceBuffer Allocate(long length) => _inner.Allocate(length);
    public DeviceBuffer Upload(ReadOnlySpan<float> data) => _inner.Upload(data);
    public DeviceBuffer? TryWrapHost(float[] host) => _inner.TryWrapHost(host);
    public PackedWeight PackWeight(ReadOnlySpan<float> w, int k, int n, WeightLayout layout) => _inner.PackWeight(w, k, n, layout);

    public void Download(DeviceBuffer src, Span<float> dst, long srcOffset = 0)
    {
        var sw = Stopwatch.StartNew();
        _inner.Download(src, dst, srcOffset);
        Record("Memory.Download", sw);
    }

    public void Copy(DeviceBuffer src, DeviceBuffer dst)
    {
        var sw = Stopwatch.StartNew();
        _inner.Copy(src, dst);
        Record("Memory.Copy", sw);
    }

    public void Synchronize() => _inner.Synchronize();
    public void Dispose() => _inner.Dispose();
}

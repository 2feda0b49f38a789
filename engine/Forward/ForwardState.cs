using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine;

/// <summary>
/// A forward pass held on the backend (<see cref="RunResult.State"/>): where it stopped, and what it kept.
/// <list type="bullet">
/// <item>Stopped at hook <see cref="At"/> (<see cref="RunOptions.StopAt"/>): the pass's workspace just before At's edits —
/// the residual there and every activation a later step reads — so <see cref="Model.Resume"/> continues it from At for the
/// same rows or fanned out to many (one clean prefix, thousands of edited continuations), bit for bit as the full pass would
/// have gone; <see cref="Read"/>(At) is At's value.</item>
/// <item>Kept hooks (<see cref="Kept"/>): copies taken as the pass used them (after their edits) — the K and V of every layer
/// that ran before the stop (<see cref="RunOptions.KeepKv"/>), or what a backward pass needs per layer
/// (<see cref="RunOptions.KeepForBackward"/>).</item>
/// </list>
/// The buffers live on the model's backend until <see cref="Dispose"/>; a state is valid only with the model that made it.
/// </summary>
public sealed class ForwardState : IDisposable
{
    readonly IBackend _backend;
    readonly object _lock;   // the model's: a state is read or freed between passes, never during one
    readonly ModelSpec _spec;
    readonly Dictionary<HookName, DeviceBuffer> _kept;
    readonly Dictionary<string, DeviceBuffer> _workspace;   // workspace buffer name → copy [batch·pos, width]
    readonly string? _atBuffer;
    bool _disposed;

    internal ForwardState(Forward.Transformer owner, object modelLock, IBackend backend, ModelSpec spec, HookName? at, int[] ids, int batch, int seq,
        int[] lengths, Dictionary<string, DeviceBuffer> workspace, string? atBuffer, bool normedReady, Dictionary<HookName, DeviceBuffer> kept)
    {
        Owner = owner; _lock = modelLock; _backend = backend; _spec = spec; At = at; InputIds = ids; Batch = batch; Seq = seq; Lengths = lengths;
        _workspace = workspace; _atBuffer = atBuffer; NormedReady = normedReady; _kept = kept;
    }

    /// <summary>The hook point the pass stopped at (its value is before At's edits, which belong to the resumed pass); null
    /// when the pass ran to its end and the state only holds kept hooks.</summary>
    public HookName? At { get; }

    /// <summary>[batch, pos]: the ids that ran (right-padded with 0).</summary>
    public int[] InputIds { get; }
    public int Batch { get; }
    public int Seq { get; }
    /// <summary>[batch]: each row's real length.</summary>
    public int[] Lengths { get; }

    /// <summary>The hooks kept on the backend, in forward order.</summary>
    public IReadOnlyList<HookName> Kept => _kept.Keys.Order().ToList();

    /// <summary>Device memory the state holds, in bytes.</summary>
    public long Bytes => 4 * (_kept.Values.Sum(b => b.Length) + _workspace.Values.Sum(b => b.Length));

    /// <summary>The value of hook <paramref name="name"/> — <see cref="At"/> (before its edits) or a kept hook — copied to
    /// the host with the hook's shape; padded positions read zero.</summary>
    public Tensor Read(HookName name)
    {
        var shape = name.ShapeFor(_spec, Batch, Seq);
        var data = new float[shape.Aggregate(1L, (x, y) => x * y)];
        lock (_lock)
        {
            if (Owner.Disposed) throw new PolyEngineException("the model that made this forward state was disposed; read the state before disposing its model");
            _backend.Download(Buffer(name), data);
        }
        RunResult.ClearPadding(data, Batch, Seq, Lengths, name.Point == HookPoint.AttnPattern ? _spec.NHeads : 1);
        return new Tensor(data, shape);
    }

    /// <summary>Hook <paramref name="name"/>'s buffer on the backend ([batch·pos, width]; the pattern [batch, head, query,
    /// key]), for device-side consumers such as a backward pass. Valid until <see cref="Dispose"/>.</summary>
    public DeviceBuffer Buffer(HookName name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_kept.TryGetValue(name, out var kept)) return kept;
        if (name == At && _atBuffer is not null) return _workspace[_atBuffer];
        throw new PolyEngineException($"hook '{name}' is not held by this forward state (it holds {Describe()}); " +
            "keep it with RunOptions.KeepForBackward / KeepKv, or stop at it with RunOptions.StopAt");
    }

    internal Forward.Transformer Owner { get; }
    internal bool NormedReady { get; }
    internal bool Disposed => _disposed;

    /// <summary>The workspace copies, by workspace buffer name (empty for a pass that ran to its end).</summary>
    internal IReadOnlyDictionary<string, DeviceBuffer> Workspace => _workspace;

    string Describe()
    {
        var held = (At is { } at ? [at] : Array.Empty<HookName>()).Concat(Kept).Distinct().Select(h => h.ToString()).ToList();
        return held.Count == 0 ? "no hooks" : held.Count <= 6 ? string.Join(", ", held) : $"{string.Join(", ", held.Take(6))} and {held.Count - 6} more";
    }

    /// <summary>Frees the state's device memory (waiting for no pass: passes and this take the model's lock). After its
    /// model was disposed, the buffers are dropped without touching the backend again.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            if (Owner.Disposed) return;
            _backend.Synchronize();
            foreach (var b in _kept.Values) Owner.Spare.Return(b);   // the next pass that keeps state reuses them
            foreach (var b in _workspace.Values) b.Dispose();
        }
    }
}

using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>
/// What one pass does at its hook points, per <see cref="RunOptions"/>: an editable hook gets its edits in place, then its
/// taps (device reads, and a copy to the host for the <see cref="ActivationCache"/>), then its replacements; a read-only
/// hook (layer-norm taps, the pattern) gets its taps. A hook in the keep set is also copied on the backend, as the pass
/// used it, for a <see cref="ForwardState"/>. Hooks nobody reads cost nothing.
/// </summary>
sealed class HookDispatch : IDisposable
{
    readonly IBackend _b;
    readonly BufferPool _spare;
    readonly ModelSpec _s;
    readonly RunOptions _options;
    readonly int _batch, _seq;
    readonly HashSet<HookName> _download, _want, _keep;
    readonly ILookup<HookName, (HookEdit Edit, int Width, bool PerPosition)> _edits;
    readonly List<DeviceBuffer> _uploads = [];   // the edits' Mul/Add on the backend, freed after the pass
    Dictionary<HookName, DeviceBuffer>? _kept = [];

    /// <param name="compute">Hooks computed beyond those the options read (the taps a stop leaves in flight).</param>
    /// <param name="keep">Hooks copied on the backend as the pass used them (<see cref="TakeKept"/>).</param>
    /// <param name="spare">Where kept copies are rented from (they are overwritten whole).</param>
    public HookDispatch(IBackend b, ModelSpec s, RunOptions options, int batch, int seq, IEnumerable<HookName> compute, IEnumerable<HookName> keep, BufferPool spare)
    {
        (_b, _s, _options, _batch, _seq, _spare) = (b, s, options, batch, seq, spare);
        _download = new(options.Hooks);
        _keep = new(keep);
        _want = new(_download.Concat(options.DeviceTaps.Select(t => t.Hook)).Concat(compute).Concat(_keep));
        _edits = options.Edits.Select(e => { var (width, perPosition) = e.Check(s, batch, seq); return (e, width, perPosition); }).ToLookup(x => x.e.Hook);
    }

    public ActivationCache Cache { get; } = new();

    /// <summary>True when hook <paramref name="h"/> is read (its value must be computed).</summary>
    public bool Wants(HookName h) => _want.Contains(h);

    /// <summary>An editable hook point: its edits in place, then its taps, then its replacements. True when the buffer was
    /// changed (a norm fused before it is stale).</summary>
    public bool Edit(HookName name, DeviceBuffer buf)
    {
        bool edited = false;
        foreach (var (e, width, perPosition) in _edits[name])
        {
            _b.Rows.Edit(buf, _batch, _seq, width, new RowEdit(Up(e.Mul, width), Up(e.Add, width), perPosition, e.From ?? new int[_batch]));
            edited = true;
        }
        Record(name, buf);
        foreach (var rep in _options.Replacements)
            if (rep.Hook == name) { rep.Replace(buf, _batch, _seq); edited = true; }
        Keep(name, buf);
        return edited;
    }

    /// <summary>A read-only hook point: its taps.</summary>
    public void Tap(HookName name, DeviceBuffer buf)
    {
        Record(name, buf);
        Keep(name, buf);
    }

    /// <summary>The kept copies, handed to the caller (who frees them from now on).</summary>
    public Dictionary<HookName, DeviceBuffer> TakeKept()
    {
        var kept = _kept ?? throw new InvalidOperationException("kept buffers already taken");
        _kept = null;
        return kept;
    }

    /// <summary>Hands <paramref name="buf"/> to the hook's device taps and downloads it to the cache when recorded.</summary>
    public void Record(HookName name, DeviceBuffer buf)
    {
        if (!_want.Contains(name)) return;
        foreach (var t in _options.DeviceTaps) if (t.Hook == name) t.Read(buf);
        if (!_download.Contains(name)) return;
        var shape = name.ShapeFor(_s, _batch, _seq);
        var data = HostArray(shape.Aggregate(1L, (x, y) => x * y));
        _b.Download(buf, data);
        Cache.Set(name, new Tensor(data, shape));
    }

    void Keep(HookName name, DeviceBuffer buf)
    {
        if (!_keep.Contains(name) || _kept is null) return;
        long n = name.ShapeFor(_s, _batch, _seq).Aggregate(1L, (x, y) => x * y);
        var copy = _spare.Rent(n);
        _kept[name] = copy;
        _b.Copy(buf.Length == n ? buf : buf.Slice(0, n), copy);
    }

    DeviceBuffer? Up(float[]? values, int width)
    {
        if (HookEdit.Expand(values, _batch, width) is not { } rows) return null;
        var u = _b.Upload(rows);
        _uploads.Add(u);
        return u;
    }

    /// <summary>A host array that the next download overwrites whole: not zeroed first (a 200 MB logits array would
    /// otherwise be written twice).</summary>
    public static float[] HostArray(long length) => GC.AllocateUninitializedArray<float>(checked((int)length));

    /// <summary>Frees the edits' uploads and any kept copies not taken; call after the backend finished the pass.</summary>
    public void Dispose()
    {
        foreach (var u in _uploads) u.Dispose();
        if (_kept is not null) foreach (var k in _kept.Values) _spare.Return(k);
    }
}

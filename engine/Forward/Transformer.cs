using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>
/// The forward pass of both families on any <see cref="IBackend"/>, from its parts: <see cref="ModelWeights"/> (uploaded and
/// packed once), a <see cref="WorkspacePool"/> (activation buffers per pass shape, reused across calls), a
/// <see cref="HookDispatch"/> per pass (edits, taps, replacements, kept copies) and a <see cref="Pass"/> (the steps between
/// hook points). <see cref="Run"/> walks a pass from its first hook point, <see cref="Resume"/> from a
/// <see cref="ForwardState"/>'s; either walks to its end and runs the LM head, or stops at <see cref="RunOptions.StopAt"/>.
/// </summary>
sealed class Transformer(IBackend backend, ModelSpec spec, ModelParams p) : IDisposable
{
    readonly ModelWeights _weights = new(backend, p);

    /// <summary>The weights on the backend (the backward pass reads them).</summary>
    internal ModelWeights Weights => _weights;
    readonly WorkspacePool _pool = new(backend, spec);

    /// <summary>Buffers of backward passes and their forward states, reused across layers and calls (at most 1 GiB held).</summary>
    internal BufferPool Spare { get; } = new(backend, 1L << 28);

    /// <summary>Held by every pass, and by a <see cref="ForwardState"/> while it reads or frees its buffers: one use of the
    /// backend's workspace and of a state at a time.</summary>
    public object Lock { get; } = new();

    /// <summary>True once the model is disposed (its states then only drop their buffers).</summary>
    public bool Disposed { get; private set; }

    /// <summary>Runs <paramref name="ids"/> [batch, seq] (already validated by the caller); <paramref name="lengths"/> [batch]
    /// are the rows' real lengths when they were right-padded (null: every row is <paramref name="seq"/> long).</summary>
    public RunResult Run(int[] ids, int batch, int seq, RunOptions options, int[]? lengths = null)
    {
        lengths ??= Enumerable.Repeat(seq, batch).ToArray();
        return Walk(_pool.For(batch, seq), ids, lengths, options, Pass.First, normedReady: false, start: pass => pass.Embed(ids));
    }

    /// <summary>Continues <paramref name="state"/> (validated by the caller) from its stop hook, its rows fanned out to
    /// <paramref name="copies"/> copies on the backend: copy c is rows [c·batch, (c + 1)·batch). With a
    /// <paramref name="prefix"/>, only positions [p, seq) are continued (the window), attending to the prefix's K/V before p.</summary>
    public RunResult Resume(ForwardState state, RunOptions options, int copies, KvPrefix? prefix = null)
    {
        int p = prefix?.Positions ?? 0, seq = state.Seq, win = seq - p;
        var ws = _pool.For(state.Batch * copies, win);
        foreach (var (name, buf) in state.Workspace)
        {
            if (p == 0)
            {
                backend.Rows.Broadcast(buf, buf.Length, copies, ws.ByName(name));
                continue;
            }
            // The window's positions of each row, then fanned out.
            int width = (int)(buf.Length / ((long)state.Batch * seq));
            using var window = backend.Allocate((long)state.Batch * win * width);
            backend.Rows.CopyColumns(buf, state.Batch, seq * width, p * width, win * width, window);
            backend.Rows.Broadcast(window, window.Length, copies, ws.ByName(name));
            backend.Synchronize();   // before the window buffer is freed
        }
        var ids = Repeat(state.InputIds.Chunk(seq).SelectMany(r => r[p..]).ToArray(), copies);
        var kv = prefix is null ? null : new Pass.KvWindow(p, seq, copies, prefix);
        return Walk(ws, ids, Repeat(state.Lengths.Select(n => n - p).ToArray(), copies), options, state.At!.Value, state.NormedReady, start: null, kv);
    }

    RunResult Walk(Workspace ws, int[] ids, int[] lengths, RunOptions options, HookName from, bool normedReady, Action<Pass>? start,
        Pass.KvWindow? window = null)
    {
        int batch = ws.Batch, seq = ws.Seq;
        // A stop at a hook changes nothing before it: the steps run as in the full pass (fusing the norms a full pass fuses).
        bool withHead = options.StopAtLayer is null;
        int lastLayer = options.StopAtLayer ?? spec.NLayers - 1;
        using var hooks = new HookDispatch(backend, spec, options, batch, seq, InFlight(options.StopAt), Keep(options, lastLayer, withHead), Spare);
        try
        {
            var pass = new Pass(backend, spec, _weights, ws, hooks, lastLayer, withHead, window, LastPositionOnly(options, withHead, lastLayer, lengths, seq))
                { NormedReady = normedReady };
            start?.Invoke(pass);
            for (HookName? h = from; h is { } at; h = pass.Step(at))
                if (at == options.StopAt)
                {
                    var buffer = pass.BufferOf(at);
                    hooks.Record(at, buffer);   // its value before its edits, which belong to the resumed pass
                    return new RunResult(ids, batch, seq, null, hooks.Cache, null, lengths, Capture(ws, at, buffer, ids, lengths, pass.NormedReady, hooks));
                }
            var (logits, top) = pass.Seq == seq ? Head(ws, seq, lengths, options) : Head(ws, pass.Seq, Enumerable.Repeat(1, batch).ToArray(), options);
            var state = options.KeepForBackward
                ? new ForwardState(this, Lock, backend, spec, null, ids, batch, seq, lengths, [], null, false, hooks.TakeKept()) : null;
            return new RunResult(ids, batch, seq, logits, hooks.Cache, top, lengths, state);
        }
        finally
        {
            backend.Synchronize();   // the pass is done (and queued kernels no longer read the edits' buffers)
        }
    }

    /// <summary>The stopped pass: a copy of every workspace buffer it still reads (<see cref="Workspace.Live"/>).</summary>
    ForwardState Capture(Workspace ws, HookName at, DeviceBuffer atBuffer, int[] ids, int[] lengths, bool normedReady, HookDispatch hooks)
    {
        var copies = new Dictionary<string, DeviceBuffer>();
        string? atName = null;
        try
        {
            foreach (var (name, buf) in ws.Live(at))
            {
                var copy = copies[name] = backend.Allocate(buf.Length);
                backend.Copy(buf, copy);
                if (ReferenceEquals(buf, atBuffer)) atName = name;
            }
        }
        catch
        {
            backend.Synchronize();
            foreach (var c in copies.Values) c.Dispose();
            throw;
        }
        return new ForwardState(this, Lock, backend, spec, at, ids, ws.Batch, ws.Seq, lengths, copies, atName, normedReady, hooks.TakeKept());
    }

    /// <summary>The taps a stop at <paramref name="stop"/> leaves in flight: the layer-norm taps computed before the stop
    /// but read after it (ln1/ln2 of its layer, ln1 of the next, ln_final), and the stop hook itself (so the pattern is
    /// written when the stop is at it). The stopped pass computes them so that the resumed pass can read them.</summary>
    IEnumerable<HookName> InFlight(HookName? stop)
    {
        if (stop is not { } at) yield break;
        yield return at;
        foreach (int l in new[] { at.Layer, at.Layer + 1 }.Where(l => l >= 0 && l < spec.NLayers))
            foreach (var p in new[] { HookPoint.Ln1Scale, HookPoint.Ln1Normalized, HookPoint.Ln2Scale, HookPoint.Ln2Normalized })
                yield return new(p, l);
        yield return new(HookPoint.LnFinalScale);
        yield return new(HookPoint.LnFinalNormalized);
    }

    /// <summary>True when nothing reads the last layer's positions but each row's last one — the LM head at the last
    /// position only, no full logits, no stop, every row as long as the batch, and no hook, tap, edit or replacement from
    /// the last layer's attention pattern on — so the rest of that layer can run on the last positions alone.</summary>
    bool LastPositionOnly(RunOptions options, bool withHead, int lastLayer, int[] lengths, int seq)
    {
        if (!withHead || options.Logits == LogitsMode.All || options.StopAt is not null || options.KeepForBackward || lengths.Any(n => n != seq)) return false;
        var first = new HookName(HookPoint.AttnPattern, lastLayer);
        return !options.Hooks.Concat(options.DeviceTaps.Select(t => t.Hook)).Concat(options.Edits.Select(e => e.Hook))
            .Concat(options.Replacements.Select(r => r.Hook)).Any(h => h.CompareTo(first) >= 0);
    }

    /// <summary>The hooks copied for the pass's <see cref="ForwardState"/>: K and V per layer for a stop
    /// (<see cref="RunOptions.KeepKv"/>), what a backward pass reads per layer for <see cref="RunOptions.KeepForBackward"/>.</summary>
    IEnumerable<HookName> Keep(RunOptions options, int lastLayer, bool withHead)
    {
        bool rotary = spec.RotaryDim > 0;
        var q = rotary ? HookPoint.AttnRotQ : HookPoint.AttnQ;
        var k = rotary ? HookPoint.AttnRotK : HookPoint.AttnK;
        HookPoint[] points = options.KeepForBackward
            ? [HookPoint.Ln1Scale, HookPoint.Ln1Normalized, q, k, HookPoint.AttnV, HookPoint.AttnPattern, HookPoint.Ln2Scale, HookPoint.Ln2Normalized, HookPoint.MlpPre]
            : options.StopAt is not null && options.KeepKv ? [k, HookPoint.AttnV] : [];
        for (int l = 0; l <= lastLayer; l++)
            foreach (var point in points) yield return new(point, l);
        if (options.KeepForBackward && withHead)
        {
            yield return new(HookPoint.LnFinalScale);
            yield return new(HookPoint.LnFinalNormalized);
        }
    }

    /// <summary>The LM head on ln_final's output: all-position logits, or each row's last real position's logits and top-k.</summary>
    (Tensor? Logits, TopLogitRows? Top) Head(Workspace ws, int seq, int[] lengths, RunOptions options)
    {
        int batch = ws.Batch, rows = batch * seq, d = spec.DModel;
        if (options.StopAtLayer is not null) return (null, null);
        var all = options.Logits == LogitsMode.All ? new Tensor(Unembed(ws, ws.Normed, rows), batch, seq, spec.DVocab) : null;
        bool onDevice = options.TopLogits > 0 || options.LastLogits is not null;
        if (options.Logits != LogitsMode.LastPosition && !onDevice) return (all, null);
        var lastRows = Enumerable.Range(0, batch).Select(r => r * seq + lengths[r] - 1).ToArray();   // each row's last real token
        backend.Rows.Gather(lastRows, ws.Normed, d, ws.Last);
        if (!onDevice) return (new Tensor(Unembed(ws, ws.Last, batch), batch, 1, spec.DVocab), null);
        // The reductions read the logits where they are; they leave only when asked for.
        long n = (long)batch * spec.DVocab;
        var deviceLogits = ws.Logits(n);
        backend.Linear.Forward(ws.Last, _weights.Unembed, null, deviceLogits, batch);
        var top = options.TopLogits > 0 ? backend.Reductions.TopLogits(deviceLogits, batch, spec.DVocab, options.TopLogits) : null;
        if (options.LastLogits is { } read)
        {
            using var view = deviceLogits.Slice(0, n);
            read(view);
        }
        if (options.Logits != LogitsMode.LastPosition) return (all, top);
        var data = HookDispatch.HostArray((long)batch * spec.DVocab);
        backend.Download(deviceLogits, data);
        return (new Tensor(data, batch, 1, spec.DVocab), top);
    }

    /// <summary>logits[rows, d_vocab] = x · W_U into a new host array: written in place when the backend computes in host
    /// memory (no second pass over a [rows, d_vocab] array), else computed in the workspace and downloaded.</summary>
    float[] Unembed(Workspace ws, DeviceBuffer x, int rows)
    {
        var data = HookDispatch.HostArray((long)rows * spec.DVocab);
        var wrapped = backend.TryWrapHost(data);
        backend.Linear.Forward(x, _weights.Unembed, null, wrapped ?? ws.Logits(data.LongLength), rows);
        if (wrapped is null) backend.Download(ws.Logits(data.LongLength), data);
        return data;
    }

    /// <summary><paramref name="rows"/> repeated <paramref name="copies"/> times, copies-major.</summary>
    static int[] Repeat(int[] rows, int copies)
    {
        var all = new int[rows.Length * copies];
        for (int c = 0; c < copies; c++) rows.CopyTo(all, c * rows.Length);
        return all;
    }

    public void Dispose()
    {
        lock (Lock)
        {
            Disposed = true;
            _pool.Dispose();
            Spare.Dispose();
            _weights.Dispose();
        }
    }
}

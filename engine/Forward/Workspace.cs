using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>The device memory behind workspaces: every per-token buffer for up to <see cref="Rows"/> token positions, and
/// the pattern, logits and last-position buffers grown on demand. A workspace views the front of each, so one memory serves
/// any pass shape of at most <see cref="Rows"/> positions (a sweep's passes change shape with every prompt group).</summary>
sealed class WorkspaceMemory(IBackend b, ModelSpec s, long rows) : IDisposable
{
    public readonly long Rows = rows;
    public readonly DeviceBuffer Resid = b.Allocate(rows * s.DModel), Mid = b.Allocate(rows * s.DModel), Normed = b.Allocate(rows * s.DModel),
        Tmp = b.Allocate(rows * s.DModel), Scale = b.Allocate(rows), Qkv = b.Allocate(rows * 3 * s.DModel), Q = b.Allocate(rows * s.DModel),
        K = b.Allocate(rows * s.DModel), V = b.Allocate(rows * s.DModel), Z = b.Allocate(rows * s.DModel), AttnOut = b.Allocate(rows * s.DModel),
        MlpHidden = b.Allocate(rows * s.DMlp), MlpOut = b.Allocate(rows * s.DModel);
    DeviceBuffer? _pattern, _logits, _last, _keysK, _keysV;

    /// <summary>A buffer of at least <paramref name="n"/> floats in <paramref name="slot"/>, replaced by a larger one when short.</summary>
    DeviceBuffer Grow(ref DeviceBuffer? slot, long n)
    {
        if (slot is null || slot.Length < n) { slot?.Dispose(); slot = b.Allocate(n); }
        return slot;
    }

    public DeviceBuffer Pattern(long n) => Grow(ref _pattern, n);
    public DeviceBuffer Logits(long n) => Grow(ref _logits, n);
    public DeviceBuffer Last(long n) => Grow(ref _last, n);
    /// <summary>Keys and values of every position for a windowed pass (<see cref="Pass.KvWindow"/>), n floats each.</summary>
    public (DeviceBuffer K, DeviceBuffer V) Keys(long n) => (Grow(ref _keysK, n), Grow(ref _keysV, n));

    public void Dispose()
    {
        foreach (var buf in new[] { Resid, Mid, Normed, Tmp, Scale, Qkv, Q, K, V, Z, AttnOut, MlpHidden, MlpOut, _pattern, _logits, _last, _keysK, _keysV })
            buf?.Dispose();
    }
}

/// <summary>The activation buffers of one pass shape [batch, seq]: views of exactly that size into a <see cref="WorkspaceMemory"/>,
/// reused by every pass of that shape.</summary>
sealed class Workspace(ModelSpec s, int batch, int seq, WorkspaceMemory memory)
{
    public readonly int Batch = batch, Seq = seq;
    public readonly WorkspaceMemory Memory = memory;
    static DeviceBuffer View(DeviceBuffer buffer, long n) => buffer.Slice(0, n);
    public readonly DeviceBuffer Resid = View(memory.Resid, (long)batch * seq * s.DModel);         // [rows, d_model] the residual stream
    public readonly DeviceBuffer Mid = View(memory.Mid, (long)batch * seq * s.DModel);             // [rows, d_model] resid_mid (or attn_out + mlp_out)
    public readonly DeviceBuffer Normed = View(memory.Normed, (long)batch * seq * s.DModel);       // [rows, d_model] the last layer norm's output
    public readonly DeviceBuffer Tmp = View(memory.Tmp, (long)batch * seq * s.DModel);             // [rows, d_model] pos embed, ln normalized taps
    public readonly DeviceBuffer Scale = View(memory.Scale, (long)batch * seq);                     // [rows] ln scale taps
    public readonly DeviceBuffer Qkv = View(memory.Qkv, (long)batch * seq * 3 * s.DModel);         // [rows, 3·d_model]
    public readonly DeviceBuffer Q = View(memory.Q, (long)batch * seq * s.DModel);                 // [rows, n_heads, d_head]
    public readonly DeviceBuffer K = View(memory.K, (long)batch * seq * s.DModel);
    public readonly DeviceBuffer V = View(memory.V, (long)batch * seq * s.DModel);
    public readonly DeviceBuffer Z = View(memory.Z, (long)batch * seq * s.DModel);
    public readonly DeviceBuffer AttnOut = View(memory.AttnOut, (long)batch * seq * s.DModel);
    public readonly DeviceBuffer MlpHidden = View(memory.MlpHidden, (long)batch * seq * s.DMlp);   // [rows, d_mlp]
    public readonly DeviceBuffer MlpOut = View(memory.MlpOut, (long)batch * seq * s.DModel);
    DeviceBuffer? _pattern, _last;
    public DeviceBuffer Pattern => _pattern ??= View(Memory.Pattern((long)Batch * s.NHeads * Seq * Seq), (long)Batch * s.NHeads * Seq * Seq);  // [batch, n_heads, q, k]
    public bool HasPattern => _pattern is not null;
    /// <summary>At least <paramref name="n"/> floats for logits (the buffer may be longer).</summary>
    public DeviceBuffer Logits(long n) => Memory.Logits(n);
    public DeviceBuffer Last => _last ??= View(Memory.Last((long)Batch * s.DModel), (long)Batch * s.DModel);   // [batch, d_model]

    /// <summary>The buffers that can hold a pass's state between hook points, by name: all but Qkv, which is split into Q,
    /// K, V within the step that computes it, and the logits; the pattern only when asked for (after a stop, only the stop at
    /// the pattern's own hook reads it).</summary>
    public IEnumerable<(string Name, DeviceBuffer Buffer)> State(bool withPattern)
    {
        yield return (nameof(Resid), Resid);
        yield return (nameof(Mid), Mid);
        yield return (nameof(Normed), Normed);
        yield return (nameof(Tmp), Tmp);
        yield return (nameof(Scale), Scale);
        yield return (nameof(Q), Q);
        yield return (nameof(K), K);
        yield return (nameof(V), V);
        yield return (nameof(Z), Z);
        yield return (nameof(AttnOut), AttnOut);
        yield return (nameof(MlpHidden), MlpHidden);
        yield return (nameof(MlpOut), MlpOut);
        if (withPattern) yield return (nameof(Pattern), Pattern);
    }

    /// <summary>What a pass stopped at <paramref name="at"/> still reads (what a <see cref="ForwardState"/> keeps and a
    /// fan-out copies): between layers (resid_pre, resid_post) the residual stream and the next layer norm's output and taps,
    /// computed before the stop; at the embeddings the token and position embeddings; elsewhere in a layer every state buffer.
    /// The resume tests hold every hook point to this (a resumed pass equals the full pass over another pass's workspace).</summary>
    public IEnumerable<(string Name, DeviceBuffer Buffer)> Live(HookName at) => State(withPattern: at.Point == HookPoint.AttnPattern).Where(x => at.Point switch
    {
        HookPoint.Embed or HookPoint.PosEmbed => x.Name is nameof(Resid) or nameof(Tmp),
        HookPoint.ResidPre or HookPoint.ResidPost => x.Name is nameof(Resid) or nameof(Normed) or nameof(Tmp) or nameof(Scale),
        _ => true,
    });

    public DeviceBuffer ByName(string name) => State(withPattern: name == nameof(Pattern)).First(x => x.Name == name).Buffer;

}

/// <summary>Workspaces for the last few pass shapes, so alternating shapes (a clean prefix and its fanned-out resumes) keep
/// theirs. Past <see cref="Capacity"/> a new shape takes over the least recently used workspace's memory when it is large
/// enough (no allocation: passes of a sweep differ in shape group by group), else that memory is freed for a new one.</summary>
sealed class WorkspacePool(IBackend backend, ModelSpec spec) : IDisposable
{
    public const int Capacity = 2;
    readonly List<Workspace> _recent = [];   // most recent first

    public Workspace For(int batch, int seq)
    {
        var ws = _recent.FirstOrDefault(w => w.Batch == batch && w.Seq == seq);
        if (ws is null)
        {
            WorkspaceMemory? memory = null;
            if (_recent.Count == Capacity)
            {
                memory = _recent[^1].Memory;
                _recent.RemoveAt(_recent.Count - 1);
                if (memory.Rows < (long)batch * seq) { memory.Dispose(); memory = null; }
            }
            ws = new Workspace(spec, batch, seq, memory ?? new WorkspaceMemory(backend, spec, (long)batch * seq));
        }
        else _recent.Remove(ws);
        _recent.Insert(0, ws);
        return ws;
    }

    public void Dispose()
    {
        foreach (var w in _recent) w.Memory.Dispose();
        _recent.Clear();
    }
}

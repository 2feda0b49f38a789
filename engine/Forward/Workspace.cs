using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>The activation buffers of one pass shape [batch, seq], reused by every pass of that shape.</summary>
sealed class Workspace(IBackend b, ModelSpec s, int batch, int seq) : IDisposable
{
    public readonly int Batch = batch, Seq = seq;
    public readonly DeviceBuffer Resid = b.Allocate((long)batch * seq * s.DModel);     // [rows, d_model] the residual stream
    public readonly DeviceBuffer Mid = b.Allocate((long)batch * seq * s.DModel);       // [rows, d_model] resid_mid (or attn_out + mlp_out)
    public readonly DeviceBuffer Normed = b.Allocate((long)batch * seq * s.DModel);    // [rows, d_model] the last layer norm's output
    public readonly DeviceBuffer Tmp = b.Allocate((long)batch * seq * s.DModel);       // [rows, d_model] pos embed, ln normalized taps
    public readonly DeviceBuffer Scale = b.Allocate((long)batch * seq);                // [rows] ln scale taps
    public readonly DeviceBuffer Qkv = b.Allocate((long)batch * seq * 3 * s.DModel);   // [rows, 3·d_model]
    public readonly DeviceBuffer Q = b.Allocate((long)batch * seq * s.DModel);         // [rows, n_heads, d_head]
    public readonly DeviceBuffer K = b.Allocate((long)batch * seq * s.DModel);
    public readonly DeviceBuffer V = b.Allocate((long)batch * seq * s.DModel);
    public readonly DeviceBuffer Z = b.Allocate((long)batch * seq * s.DModel);
    public readonly DeviceBuffer AttnOut = b.Allocate((long)batch * seq * s.DModel);
    public readonly DeviceBuffer MlpHidden = b.Allocate((long)batch * seq * s.DMlp);   // [rows, d_mlp]
    public readonly DeviceBuffer MlpOut = b.Allocate((long)batch * seq * s.DModel);
    DeviceBuffer? _pattern, _logits, _last;
    public DeviceBuffer Pattern => _pattern ??= b.Allocate((long)Batch * s.NHeads * Seq * Seq);  // [batch, n_heads, q, k]
    public bool HasPattern => _pattern is not null;
    public DeviceBuffer Logits(long n) => _logits is not null && _logits.Length >= n ? _logits : (_logits = Replace(_logits, n));
    public DeviceBuffer Last => _last ??= b.Allocate((long)Batch * s.DModel);           // [batch, d_model]

    DeviceBuffer Replace(DeviceBuffer? old, long n) { old?.Dispose(); return b.Allocate(n); }

    /// <summary>The buffers that can hold a pass's state between hook points, by name (what a <see cref="ForwardState"/>
    /// keeps): all but Qkv, which is split into Q, K, V within the step that computes it, and the logits; the pattern only when
    /// asked for (after a stop, only the stop at the pattern's own hook reads it).</summary>
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

    public DeviceBuffer ByName(string name) => State(withPattern: name == nameof(Pattern)).First(x => x.Name == name).Buffer;

    public void Dispose()
    {
        foreach (var buf in new[] { Resid, Mid, Normed, Tmp, Scale, Qkv, Q, K, V, Z, AttnOut, MlpHidden, MlpOut, _pattern, _logits, _last })
            buf?.Dispose();
    }
}

/// <summary>Workspaces for the last few pass shapes, so alternating shapes (a clean prefix and its fanned-out resumes) keep
/// theirs; the least recently used is freed past <see cref="Capacity"/>.</summary>
sealed class WorkspacePool(IBackend backend, ModelSpec spec) : IDisposable
{
    public const int Capacity = 2;
    readonly List<Workspace> _recent = [];   // most recent first

    public Workspace For(int batch, int seq)
    {
        var ws = _recent.FirstOrDefault(w => w.Batch == batch && w.Seq == seq);
        if (ws is null)
        {
            if (_recent.Count == Capacity) { _recent[^1].Dispose(); _recent.RemoveAt(_recent.Count - 1); }
            ws = new Workspace(backend, spec, batch, seq);
        }
        else _recent.Remove(ws);
        _recent.Insert(0, ws);
        return ws;
    }

    public void Dispose()
    {
        foreach (var w in _recent) w.Dispose();
        _recent.Clear();
    }
}

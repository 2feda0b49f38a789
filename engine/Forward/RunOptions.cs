
namespace PolyEngine;

/// <summary>Which positions get logits.</summary>
public enum LogitsMode
{
    /// <summary>[batch, pos, d_vocab].</summary>
    All,
    /// <summary>[batch, 1, d_vocab]: the LM head runs on the last position of each row only.</summary>
    LastPosition,
    /// <summary>No LM head.</summary>
    None,
}

/// <summary>What one forward pass computes and records.</summary>
public sealed record RunOptions
{
    /// <summary>Hooks to record in the <see cref="ActivationCache"/>; unrecorded hooks cost nothing.</summary>
    public IReadOnlyCollection<HookName> Hooks { get; init; } = [];

    /// <summary>Run blocks 0..L only, then stop: no final layer norm and no LM head.</summary>
    public int? StopAtLayer { get; init; }

    /// <summary>Stop the pass just before this hook's edits and hand it back as <see cref="RunResult.State"/> (no logits):
    /// <see cref="Model.Resume"/> continues it from here — for the same rows or fanned out to many, with edits at this hook
    /// or after it. In the stopping pass, hooks up to and including this one can be recorded, and edits and replacements
    /// must come before it (those at or after it belong to the resumed pass).</summary>
    public HookName? StopAt { get; init; }

    /// <summary>With <see cref="StopAt"/>: the stopped state also keeps the K and V every layer before the stop fed its
    /// attention (<c>attn.hook_k</c>, or <c>attn.hook_rot_k</c> with rotary, and <c>attn.hook_v</c>). On by default.</summary>
    public bool KeepKv { get; init; } = true;

    /// <summary>Keep, per layer that runs, what a backward pass needs (<see cref="RunResult.State"/>): the layer-norm
    /// taps (<c>ln1/ln2.hook_normalized</c>, <c>hook_scale</c>, and ln_final's), q, k (after rotary), v, the attention
    /// pattern and <c>mlp.hook_pre</c>, each as the pass used it.</summary>
    public bool KeepForBackward { get; init; }

    public LogitsMode Logits { get; init; } = LogitsMode.All;

    /// <summary>Hooks read where they are computed, without a copy to the host: each tap's <see cref="DeviceTap.Read"/> gets
    /// the hook's backend buffer [batch·pos, width] during the pass (valid only during the call). The fused SAE encode
    /// reads its hook this way.</summary>
    public IReadOnlyList<DeviceTap> DeviceTaps { get; init; } = [];

    /// <summary>In-place edits of hook activations, applied in list order where each hook is computed (see <see cref="HookEdit"/>).</summary>
    public IReadOnlyList<HookEdit> Edits { get; init; } = [];

    /// <summary>Hooks rewritten on the device during the pass, after their <see cref="Edits"/> and after they are recorded:
    /// everything downstream sees the new values (an SAE spliced in: <c>SaeSplice</c>).</summary>
    public IReadOnlyList<HookReplacement> Replacements { get; init; } = [];

    /// <summary>Put the model's BOS token in front of every row of ids (TransformerLens's <c>prepend_bos</c>): BOS becomes
    /// position 0. Off by default here because ids are usually meant as given; <see cref="Model.Encode"/> prepends it to
    /// text by default, so use one or the other.</summary>
    public bool PrependBos { get; init; }

    /// <summary>When positive, the k most likely next tokens at each row's last position, reduced on the backend
    /// (<see cref="RunResult.Top"/>): no [batch, d_vocab] tensor leaves a device. Needs the LM head (no stop layer).</summary>
    public int TopLogits { get; init; }

    /// <summary>When set, gets the logits of each row's last real position, [batch, d_vocab], on the backend (valid only
    /// during the call): reductions read them where they are (the intervention metrics), and nothing [batch, d_vocab]
    /// leaves a device. Needs the LM head (no stop).</summary>
    public Action<PolyEngine.Kernels.DeviceBuffer>? LastLogits { get; init; }
}

/// <summary>A hook read on the device during a pass (<see cref="RunOptions.DeviceTaps"/>).</summary>
public sealed record DeviceTap(HookName Hook, Action<PolyEngine.Kernels.DeviceBuffer> Read);

/// <summary>A hook rewritten in place during a pass (<see cref="RunOptions.Replacements"/>): <see cref="Replace"/> gets the
/// hook's backend buffer [batch·pos, width], the batch and the padded sequence length, and overwrites the buffer.</summary>
public sealed record HookReplacement(HookName Hook, Action<PolyEngine.Kernels.DeviceBuffer, int, int> Replace);

/// <summary>The result of <see cref="Model.Run(IReadOnlyList{int[]}, RunOptions?)"/>.</summary>
public sealed class RunResult
{
    internal RunResult(int[] ids, int batch, int seq, Tensor? logits, ActivationCache cache, PolyEngine.Kernels.TopLogitRows? top, int[] lengths,
        ForwardState? state = null)
    {
        InputIds = ids; Batch = batch; Seq = seq; Logits = logits; Cache = cache; Top = top; Lengths = lengths; State = state;
    }

    /// <summary>[batch, pos]: the token ids that ran, BOS included, right-padded with 0.</summary>
    public int[] InputIds { get; }

    public int Batch { get; }
    /// <summary>Positions per row: the longest row's length (shorter rows were right-padded).</summary>
    public int Seq { get; }
    /// <summary>[batch]: each row's real length, BOS included. Positions at or past it are padding: their logits and
    /// activations are zero, and the last-position logits and <see cref="Top"/> are taken at each row's last real token.</summary>
    public int[] Lengths { get; }
    /// <summary>[batch, pos, d_vocab] (or [batch, 1, d_vocab] for <see cref="LogitsMode.LastPosition"/>); null when not computed.</summary>
    public Tensor? Logits { get; }
    public ActivationCache Cache { get; }
    /// <summary>[batch, k] next-token candidates at each row's last real position (<see cref="RunOptions.TopLogits"/>), or null.</summary>
    public PolyEngine.Kernels.TopLogitRows? Top { get; }
    /// <summary>The pass held on the backend when <see cref="RunOptions.StopAt"/> or <see cref="RunOptions.KeepForBackward"/>
    /// asked for it, else null. The caller owns it: dispose it to free its device memory.</summary>
    public ForwardState? State { get; }

    /// <summary>Zeroes this result's padded positions of <paramref name="data"/>, laid out [batch, groups, seq, width].</summary>
    internal void ClearPadding(float[] data, int groups = 1) => ClearPadding(data, Batch, Seq, Lengths, groups);

    /// <summary>Zeroes the padded positions of <paramref name="data"/>, laid out [batch, groups, seq, width] (width inferred).</summary>
    internal static void ClearPadding(float[] data, int batch, int seq, int[] lengths, int groups = 1)
    {
        if (lengths.All(n => n == seq)) return;
        long width = data.LongLength / ((long)batch * groups * seq);
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < groups; g++)
            {
                long row0 = ((long)b * groups + g) * seq;
                data.AsSpan(checked((int)((row0 + lengths[b]) * width)), checked((int)((seq - lengths[b]) * width))).Clear();
            }
    }
}

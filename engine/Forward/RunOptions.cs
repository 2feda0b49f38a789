using PolyEngine.Hooks;

namespace PolyEngine.Forward;

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

    public LogitsMode Logits { get; init; } = LogitsMode.All;

    /// <summary>Hooks read where they are computed, without a copy to the host: each tap's <see cref="DeviceTap.Read"/> gets
    /// the hook's backend buffer [batch·pos, width] during the pass (valid only during the call). The fused SAE encode
    /// reads its hook this way.</summary>
    public IReadOnlyList<DeviceTap> DeviceTaps { get; init; } = [];

    /// <summary>In-place edits of hook activations, applied in list order where each hook is computed (see <see cref="HookEdit"/>).</summary>
    public IReadOnlyList<HookEdit> Edits { get; init; } = [];

    /// <summary>When positive, the k most likely next tokens at each row's last position, reduced on the backend
    /// (<see cref="RunResult.Top"/>): no [batch, d_vocab] tensor leaves a device. Needs the LM head (no stop layer).</summary>
    public int TopLogits { get; init; }
}

/// <summary>A hook read on the device during a pass (<see cref="RunOptions.DeviceTaps"/>).</summary>
public sealed record DeviceTap(HookName Hook, Action<PolyEngine.Kernels.DeviceBuffer> Read);

/// <summary>The result of <see cref="Model.Run(int[][], RunOptions?)"/>.</summary>
public sealed class RunResult
{
    internal RunResult(int batch, int seq, Tensor? logits, ActivationCache cache, PolyEngine.Kernels.TopLogitRows? top = null)
    {
        Batch = batch; Seq = seq; Logits = logits; Cache = cache; Top = top;
    }

    public int Batch { get; }
    public int Seq { get; }
    /// <summary>[batch, pos, d_vocab] (or [batch, 1, d_vocab] for <see cref="LogitsMode.LastPosition"/>); null when not computed.</summary>
    public Tensor? Logits { get; }
    public ActivationCache Cache { get; }
    /// <summary>[batch, k] next-token candidates at each row's last position (<see cref="RunOptions.TopLogits"/>), or null.</summary>
    public PolyEngine.Kernels.TopLogitRows? Top { get; }
}

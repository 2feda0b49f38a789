using PolyEngine.Kernels;

namespace PolyEngine;

/// <summary>
/// The clean keys and values a windowed resume (<see cref="Model.Resume(ForwardState, RunOptions?, int, KvPrefix?)"/>)
/// attends to before its window: an edit from position <see cref="Positions"/> on leaves every earlier position as the
/// clean pass computed it, so the resumed pass computes only positions [Positions, seq) and reads the earlier positions'
/// K and V from here instead of recomputing them.
/// </summary>
/// <param name="Positions">The window's first position p (1 ≤ p &lt; seq): positions &lt; p are read from here.</param>
/// <param name="K">Per layer, the clean pass's keys as attention reads them (after rotary: the <c>hook_rot_k</c> value
/// for rotary models, <c>hook_k</c> otherwise), [batch, seq, d_model] on the model's backend for the stopped state's rows;
/// null for layers the resumed pass does not attend in.</param>
/// <param name="V">Per layer, the clean pass's values (<c>hook_v</c>), laid out as <paramref name="K"/>.</param>
public sealed record KvPrefix(int Positions, IReadOnlyList<DeviceBuffer?> K, IReadOnlyList<DeviceBuffer?> V)
{
    /// <summary>The first layer whose attention a pass resumed at <paramref name="at"/> runs (so needs K and V from here):
    /// the stop's own layer when the stop precedes that layer's attention (resid_pre, ln1), else the next one.</summary>
    public static int FirstLayer(HookName at) =>
        !at.IsBlock ? 0 : at.CompareTo(new HookName(HookPoint.Ln1Normalized, at.Layer)) <= 0 ? at.Layer : at.Layer + 1;
}

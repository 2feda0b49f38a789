namespace PolyEngine.Kernels;

/// <summary>
/// An in-place affine edit of a hook's activation x [batch, seq, width] (<see cref="IRowOps.Edit"/>): for every
/// batch row b and position t ≥ <see cref="From"/>[b], x[b, t, :] = x[b, t, :]·mul + add, with mul and add either one
/// row per batch row ([batch, width]) or one per position ([batch, seq, width]). Adding a steering vector, scaling,
/// setting or ablating a coordinate, and patching in another run's activations are all this one edit.
/// </summary>
/// <param name="Mul">Multipliers, or null for 1.</param>
/// <param name="Add">Addends, or null for 0.</param>
/// <param name="PerPosition">True when Mul and Add are [batch, seq, width]; false for [batch, width].</param>
/// <param name="From">[batch]: the first position edited in each batch row.</param>
public sealed record RowEdit(DeviceBuffer? Mul, DeviceBuffer? Add, bool PerPosition, int[] From);

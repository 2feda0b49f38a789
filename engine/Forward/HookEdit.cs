using PolyEngine.Models;

namespace PolyEngine;

/// <summary>
/// An edit of a hook's activation during a pass (<see cref="RunOptions.Edits"/>), applied in place where the hook is
/// computed — after earlier edits, before its taps read it — so everything downstream sees the edited value:
/// x[b, t, :] = x[b, t, :]·<see cref="Mul"/> + <see cref="Add"/> for every position t ≥ <see cref="From"/>[b].
/// Mul and Add are [width] (every row alike), [batch, width] (one per batch row: the batched interventions of the
/// paper, one vector or scale per row) or [batch, pos, width] (per position: activation patching); null is 1 and 0.
/// Every hook but the attention pattern and the layer-norm taps can be edited.
/// </summary>
public sealed record HookEdit(HookName Hook)
{
    public float[]? Mul { get; init; }
    public float[]? Add { get; init; }
    /// <summary>[batch]: the first position edited in each row; null edits every position.</summary>
    public int[]? From { get; init; }

    /// <summary>x += scale·vector at every position (feature steering: vector = a unit decoder row).</summary>
    public static HookEdit AddVector(HookName hook, float[] vector, float scale = 1f) =>
        new(hook) { Add = vector.Select(v => v * scale).ToArray() };

    /// <summary>Coordinate <paramref name="index"/> of a <paramref name="width"/>-wide hook times <paramref name="factor"/> (0 ablates it).</summary>
    public static HookEdit ScaleCoordinate(HookName hook, int width, int index, float factor)
    {
        var mul = Enumerable.Repeat(1f, width).ToArray();
        mul[index] = factor;
        return new(hook) { Mul = mul };
    }

    /// <summary>Coordinate <paramref name="index"/> set to <paramref name="value"/>.</summary>
    public static HookEdit SetCoordinate(HookName hook, int width, int index, float value)
    {
        var mul = Enumerable.Repeat(1f, width).ToArray();
        var add = new float[width];
        mul[index] = 0f;
        add[index] = value;
        return new(hook) { Mul = mul, Add = add };
    }

    /// <summary>The hook replaced by <paramref name="values"/> [batch, pos, width] (e.g. another run's cache).</summary>
    public static HookEdit Patch(HookName hook, float[] values) => new(hook) { Mul = new float[values.Length], Add = values };

    static readonly HashSet<HookPoint> NotEditable =
        [HookPoint.AttnPattern, HookPoint.Ln1Scale, HookPoint.Ln1Normalized, HookPoint.Ln2Scale, HookPoint.Ln2Normalized,
         HookPoint.LnFinalScale, HookPoint.LnFinalNormalized];

    /// <summary>A one-line error unless <paramref name="hook"/> can be edited or replaced in a pass.</summary>
    internal static void CheckEditable(HookName hook)
    {
        if (NotEditable.Contains(hook.Point))
            throw new PolyEngineException($"hook '{hook}' cannot be edited (the attention pattern and the layer-norm taps are read-only); edit the hook that feeds it");
    }

    /// <summary>The hook's width (its values per position) and whether Mul/Add are per position; a one-line error for an
    /// edit that does not fit the model or the batch.</summary>
    internal (int Width, bool PerPosition) Check(ModelSpec spec, int batch, int seq)
    {
        CheckEditable(Hook);
        int width = Hook.WidthFor(spec);
        bool? perPosition = null;
        foreach (var (name, values) in new[] { ("Mul", Mul), ("Add", Add) })
        {
            if (values is null) continue;
            bool? p = values.Length == width || values.Length == (long)batch * width ? false
                : values.Length == (long)batch * seq * width ? true : null;
            if (p is null)
                throw new PolyEngineException($"edit of '{Hook}': {name} has {values.Length} values; give [{width}], [batch {batch}, {width}] or [batch {batch}, pos {seq}, {width}]");
            if (perPosition is not null && perPosition != p)
                throw new PolyEngineException($"edit of '{Hook}': Mul and Add must both be per position or both not");
            perPosition = p;
        }
        if (From is not null && (From.Length != batch || From.Any(f => f < 0 || f > seq)))
            throw new PolyEngineException($"edit of '{Hook}': From must give one first position in 0..{seq} per batch row ({batch})");
        return (width, perPosition ?? false);
    }

    /// <summary>Mul or Add as the backend takes it: [batch, width] (a [width] row repeated) or [batch, pos, width].</summary>
    internal static float[]? Expand(float[]? values, int batch, int width)
    {
        if (values is null || values.Length != width || batch == 1) return values;
        var rows = new float[(long)batch * width];
        for (int b = 0; b < batch; b++) values.CopyTo(rows, b * width);
        return rows;
    }
}

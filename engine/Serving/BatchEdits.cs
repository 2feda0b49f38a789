using PolyEngine.Interventions;
using PolyEngine.Models;

namespace PolyEngine.Serving;

/// <summary>
/// Requests with different steering edits in one forward pass: each row's edits (resolved for that row alone, at its own
/// length) become batch edits over the right-padded batch [rows, seq]. Per hook, the j-th edit of every row that has one
/// goes into the j-th batch edit, and rows without it get the identity (×1, +0, or no position). The result is the
/// same as running each row alone with its own edits, because edits of one hook apply in order and edits of different
/// hooks apply where each hook is computed.
/// </summary>
public static class BatchEdits
{
    /// <param name="perRow">[rows]: each row's edits in order (<see cref="EditSpec"/>s, resolved here against the row).</param>
    /// <param name="lengths">[rows]: each row's length; the batch is padded to their maximum.</param>
    public static List<HookEdit> Merge(ModelSpec spec, IReadOnlyList<IReadOnlyList<EditSpec>> perRow, IReadOnlyList<int> lengths)
    {
        int batch = perRow.Count, seq = lengths.Max();
        var resolved = perRow.Select((edits, b) => edits.Select(e => e.Resolve(spec, 1, lengths[b], "polyengine.edits")).ToList()).ToList();
        var merged = new List<HookEdit>();
        foreach (var hook in resolved.SelectMany(r => r.Select(e => e.Hook)).Distinct())
        {
            var byRow = resolved.Select(r => r.Where(e => e.Hook == hook).ToList()).ToList();
            for (int j = 0, count = byRow.Max(r => r.Count); j < count; j++)
                merged.Add(Merge(spec, hook, [.. byRow.Select(r => j < r.Count ? r[j] : null)], lengths, seq));
        }
        return merged;
    }

    /// <summary>One batch edit of <paramref name="hook"/> from each row's edit (null: none): per row [width] with a first
    /// position, or per position [rows, seq, width] when any row edits listed positions.</summary>
    static HookEdit Merge(ModelSpec spec, HookName hook, HookEdit?[] rows, IReadOnlyList<int> lengths, int seq)
    {
        int width = hook.WidthFor(spec), batch = rows.Length;
        bool anyMul = rows.Any(r => r?.Mul is not null), anyAdd = rows.Any(r => r?.Add is not null);
        bool perPosition = rows.Any(r => r is not null && r.From is null && (r.Mul ?? r.Add)!.Length != width);
        if (!perPosition)
        {
            var mul = anyMul ? new float[batch * width] : null;
            var add = anyAdd ? new float[batch * width] : null;
            var from = new int[batch];
            for (int b = 0; b < batch; b++)
            {
                var r = rows[b];
                if (mul is not null) (r?.Mul ?? Ones(width)).CopyTo(mul, b * width);
                r?.Add?.CopyTo(add!, b * width);
                from[b] = r is null ? seq : r.From?[0] ?? 0;
            }
            return new HookEdit(hook) { Mul = mul, Add = add, From = from };
        }
        var mulAll = anyMul ? Enumerable.Repeat(1f, batch * seq * width).ToArray() : null;
        var addAll = anyAdd ? new float[batch * seq * width] : null;
        for (int b = 0; b < batch; b++)
        {
            if (rows[b] is not { } r) continue;
            int len = lengths[b];
            for (int p = 0; p < len; p++)
            {
                int dst = (b * seq + p) * width;
                if (r.Mul is null && r.Add is null) continue;
                bool rowWise = (r.Mul ?? r.Add)!.Length == width;
                if (rowWise && p < (r.From?[0] ?? 0)) continue;
                int src = rowWise ? 0 : p * width;
                if (r.Mul is not null) Array.Copy(r.Mul, src, mulAll!, dst, width);
                if (r.Add is not null) Array.Copy(r.Add, src, addAll!, dst, width);
            }
        }
        return new HookEdit(hook) { Mul = mulAll, Add = addAll };
    }

    static float[] Ones(int width) => Enumerable.Repeat(1f, width).ToArray();
}

using System.Text.Json.Serialization;
using PolyEngine.Backward;

namespace PolyEngine.Output;

/// <summary>One activation record's row of a gradient-vectors table.</summary>
public sealed class GradientVectorRow
{
    /// <summary>The record's row in the vectors file, or -1 when it gave no vector (see <see cref="Note"/>).</summary>
    [JsonPropertyName("vector")] public int Vector { get; set; }
    [JsonPropertyName("source")] public string Source { get; set; } = "";
    [JsonPropertyName("hook")] public string Hook { get; set; } = "";
    [JsonPropertyName("recipe")] public string Recipe { get; set; } = "";
    [JsonPropertyName("objective")] public string Objective { get; set; } = "";
    /// <summary>The positions (in the row that ran) whose gradients were summed.</summary>
    [JsonPropertyName("positions")] public int[] Positions { get; set; } = [];
    [JsonPropertyName("skipped")] public int Skipped { get; set; }
    /// <summary>‖Σ gradients‖ before normalising.</summary>
    [JsonPropertyName("norm")] public double Norm { get; set; }
    [JsonPropertyName("note")] public string Note { get; set; } = "";
    [JsonPropertyName("text")] public string Text { get; set; } = "";
}

/// <summary>
/// Writes token-locus vectors: <c>FILE.npy</c> [n, d_model] float32 (unit rows, the records that gave one, in record
/// order; <c>steer --vectors FILE.npy</c> reads it) and beside it <c>FILE.records.parquet</c> (or .csv), one row per
/// record saying which vector it gave, from which positions, or why none. The table is written first, the vectors last,
/// each atomically.
/// </summary>
public static class GradientVectorWriter
{
    /// <summary>The records table's path beside <paramref name="npyPath"/>.</summary>
    public static string TablePath(string npyPath, TableFormat format) =>
        Path.ChangeExtension(npyPath, null) + ".records" + TableWriter.Extension(format);

    public static int Write(string npyPath, IReadOnlyList<GradientVector> vectors, HookName hook, GradientRecipe recipe, string objective, TableFormat format)
    {
        var rows = new List<GradientVectorRow>();
        var data = new List<float>();
        int n = 0;
        foreach (var v in vectors)
        {
            rows.Add(new GradientVectorRow
            {
                Vector = v.Vector is null ? -1 : n, Source = v.Record.Source, Hook = hook.ToString(), Recipe = Name(recipe), Objective = objective,
                Positions = v.Positions, Skipped = v.Skipped, Norm = v.Norm, Note = v.Note ?? "", Text = string.Concat(v.Record.Tokens),
            });
            if (v.Vector is null) continue;
            data.AddRange(v.Vector);
            n++;
        }
        if (n == 0) throw new PolyEngineException($"no record gave a gradient vector ({string.Join("; ", vectors.Select(v => $"{v.Record.Source}: {v.Note}").Distinct().Take(3))})");
        TableWriter.Write(TablePath(npyPath, format), rows, format);
        NpzWriter.SaveNpy(npyPath, [.. data], n, data.Count / n);
        return n;
    }

    public static string Name(GradientRecipe r) => r == GradientRecipe.TransformerLens ? "tl" : "hf";
}

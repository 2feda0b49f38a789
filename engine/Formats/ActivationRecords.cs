using System.Text.Json;
using System.Text.Json.Serialization;
using Parquet.Serialization;

namespace PolyEngine.Formats;

/// <summary>One activation record of a feature: a text as tokens with the feature's activation at each, and where it is
/// strongest. From a Neuronpedia export the tokens are strings (<see cref="Ids"/> null: they are re-tokenised); from the
/// <c>features</c> verb's contexts they are the ids the feature was read on.</summary>
public sealed record ActivationRecord(string Source, string[] Tokens, int[]? Ids, float[] Values, int MaxValueTokenIndex);

/// <summary>
/// Reads a feature's activation records: a Neuronpedia feature export (JSON: an object with <c>activations</c>, or an
/// array of records, each with <c>tokens</c>, <c>values</c> and optionally <c>maxValueTokenIndex</c>), or the
/// <c>contexts.parquet</c> of <c>polyengine features</c> (the rows of one feature, by rank).
/// </summary>
public static class ActivationRecords
{
    /// <summary>The records of <paramref name="path"/>; for a contexts table, those of <paramref name="feature"/> (and of the
    /// SAE named <paramref name="sae"/> when the table holds several).</summary>
    public static IReadOnlyList<ActivationRecord> Load(string path, int? feature = null, string? sae = null)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--records {path}: file not found; give a Neuronpedia feature export (.json) or a features run's contexts.parquet");
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)) return FromContexts(path, feature, sae);
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return FromNeuronpedia(path);
        throw new PolyEngineException($"--records {path}: give a Neuronpedia feature export (.json) or a features run's contexts.parquet (run features with --format parquet)");
    }

    static IReadOnlyList<ActivationRecord> FromNeuronpedia(string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new PolyEngineException($"--records {path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using (doc)
        {
            var root = doc.RootElement;
            var list = root.ValueKind == JsonValueKind.Array ? root
                : root.ValueKind == JsonValueKind.Object && root.TryGetProperty("activations", out var a) && a.ValueKind == JsonValueKind.Array ? a
                : throw new PolyEngineException($"--records {path}: expected a Neuronpedia feature export (an object with \"activations\") or an array of records");
            var records = new List<ActivationRecord>();
            int i = 0;
            foreach (var r in list.EnumerateArray())
            {
                string where = $"--records {path}: record {i}";
                if (r.ValueKind != JsonValueKind.Object || !r.TryGetProperty("tokens", out var t) || t.ValueKind != JsonValueKind.Array
                    || !r.TryGetProperty("values", out var v) || v.ValueKind != JsonValueKind.Array)
                    throw new PolyEngineException($"{where} needs \"tokens\" (strings) and \"values\" (numbers)");
                string[] tokens;
                float[] values;
                try
                {
                    tokens = t.EnumerateArray().Select(x => x.GetString() ?? "").ToArray();
                    values = v.EnumerateArray().Select(x => x.GetSingle()).ToArray();
                }
                catch (InvalidOperationException) { throw new PolyEngineException($"{where}: \"tokens\" must be strings and \"values\" numbers"); }
                if (tokens.Length != values.Length || tokens.Length == 0)
                    throw new PolyEngineException($"{where} has {tokens.Length} tokens and {values.Length} values; they must be as many, and at least one");
                int max = !r.TryGetProperty("maxValueTokenIndex", out var m) || m.ValueKind == JsonValueKind.Null ? ArgMax(values)
                    : m.ValueKind == JsonValueKind.Number && m.TryGetInt32(out int at) ? at
                    : throw new PolyEngineException($"{where}: maxValueTokenIndex {m} is not a token index");
                if (max < 0 || max >= tokens.Length) throw new PolyEngineException($"{where}: maxValueTokenIndex {max} is outside its {tokens.Length} tokens");
                records.Add(new ActivationRecord($"record {i}", tokens, null, values, max));
                i++;
            }
            if (records.Count == 0) throw new PolyEngineException($"--records {path}: holds no activation records");
            return records;
        }
    }

    /// <summary>The columns of a features run's contexts table that a record needs.</summary>
    sealed class ContextColumns
    {
        [JsonPropertyName("sae")] public string Sae { get; set; } = "";
        [JsonPropertyName("feature")] public int Feature { get; set; }
        [JsonPropertyName("rank")] public int Rank { get; set; }
        [JsonPropertyName("max_position")] public int MaxPosition { get; set; }
        [JsonPropertyName("tokens")] public int[] Tokens { get; set; } = [];
        [JsonPropertyName("token_strings")] public string[] TokenStrings { get; set; } = [];
        [JsonPropertyName("token_activations")] public float[] TokenActivations { get; set; } = [];
    }

    /// <summary>Every feature's records in a features run's <c>contexts.parquet</c> (of the SAE named <paramref name="sae"/>
    /// when the table holds several), by feature, each feature's by rank.</summary>
    public static Dictionary<int, List<ActivationRecord>> LoadAll(string path, string? sae)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--records {path}: file not found; give a features run's contexts.parquet");
        var rows = ReadContexts(path);
        var saes = rows.Select(r => r.Sae).Distinct().ToList();
        if (sae is null && saes.Count > 1) throw new PolyEngineException($"--records {path}: holds the contexts of {saes.Count} SAEs ({string.Join(", ", saes)}); name one");
        if (sae is not null && !saes.Contains(sae)) throw new PolyEngineException($"--records {path}: has no contexts of SAE '{sae}' (it has {string.Join(", ", saes)})");
        return rows.Where(r => sae is null || r.Sae == sae).GroupBy(r => r.Feature).ToDictionary(g => g.Key,
            g => g.OrderBy(r => r.Rank).Select(r => Record(path, r, $"feature {r.Feature}, context rank {r.Rank}")).ToList());
    }

    /// <summary>A contexts row as a record, checked: as many token strings (when present) and activations as ids, and the
    /// max position among them.</summary>
    static ActivationRecord Record(string path, ContextColumns r, string source)
    {
        int n = r.Tokens.Length;
        if (r.TokenActivations.Length != n || (r.TokenStrings.Length != n && r.TokenStrings.Length != 0) || n == 0 || r.MaxPosition < 0 || r.MaxPosition >= n)
            throw new PolyEngineException($"--records {path}: feature {r.Feature}, rank {r.Rank} has {n} tokens, {r.TokenActivations.Length} activations, " +
                $"{r.TokenStrings.Length} token strings and max position {r.MaxPosition}; the table is damaged — rerun polyengine features");
        return new ActivationRecord(source, r.TokenStrings.Length == n ? r.TokenStrings : [.. r.Tokens.Select(t => $"<{t}>")], r.Tokens, r.TokenActivations, r.MaxPosition);
    }

    static IList<ContextColumns> ReadContexts(string path)
    {
        try
        {
            using var fs = File.OpenRead(path);
            return ParquetSerializer.DeserializeAsync<ContextColumns>(fs).GetAwaiter().GetResult().Data;
        }
        catch (Exception e) when (e is not PolyEngineException)
        {
            throw new PolyEngineException($"--records {path}: not a features run's contexts table ({e.Message.Split('\n')[0]})");
        }
    }

    static IReadOnlyList<ActivationRecord> FromContexts(string path, int? feature, string? sae)
    {
        if (feature is null) throw new PolyEngineException($"--records {path}: a contexts table holds many features; give --feature N");
        var rows = ReadContexts(path);
        var saes = rows.Select(r => r.Sae).Distinct().ToList();
        if (sae is null && saes.Count > 1)
            throw new PolyEngineException($"--records {path}: holds the contexts of {saes.Count} SAEs ({string.Join(", ", saes)}); pick one with --records-sae");
        if (sae is not null && !saes.Contains(sae))
            throw new PolyEngineException($"--records-sae {sae}: {path} holds {string.Join(", ", saes)}");
        var mine = rows.Where(r => r.Feature == feature && (sae is null || r.Sae == sae)).OrderBy(r => r.Rank).ToList();
        if (mine.Count == 0) throw new PolyEngineException($"--feature {feature}: {path} has no contexts for it (it never fired in that run)");
        return mine.Select(r => Record(path, r, $"context rank {r.Rank}")).ToList();
    }

    static int ArgMax(float[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}

using System.Text.Json;
using PolyEngine.Formats;

namespace PolyEngine.Experiments;

/// <summary>The experiments' other inputs: test sentences keyed by token string, and each feature's activation records.</summary>
public static class ExperimentInputs
{
    static readonly object CacheLock = new();
    static ((string Path, DateTime Written, string Sae) Key, Dictionary<int, List<ActivationRecord>> Table)? _cached;

    /// <summary><c>{"&lt;token string&gt;": ["sentence", ...]}</c>.</summary>
    public static Dictionary<string, string[]> TokenSentences(string path)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--sentences {path}: file not found");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"--sentences {path}: expected {{\"<token string>\": [\"sentence\", ...]}}");
            return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ValueKind == JsonValueKind.Array
                ? p.Value.EnumerateArray().Select(x => x.GetString() ?? "").ToArray()
                : throw new PolyEngineException($"--sentences {path}: the entry for '{p.Name}' is not a list of sentences"));
        }
        catch (JsonException e) { throw new PolyEngineException($"--sentences {path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
    }

    /// <summary>A feature's activation records: from a features run's <c>contexts.parquet</c> (the rows of that SAE and
    /// feature), or from a folder of Neuronpedia exports named <c>&lt;feature&gt;.json</c> (in a sub-folder named after the SAE
    /// when there is one). Null when the folder has no file for the feature.</summary>
    /// <remarks>A contexts table is read once per (file, SAE) and kept while the next calls ask for the same one: an
    /// experiment asks for thousands of features of it.</remarks>
    public static IReadOnlyList<ActivationRecord>? Records(string path, string sae, int feature)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
        {
            if (!File.Exists(path)) throw new PolyEngineException($"--records {path}: file not found; give a features run's contexts.parquet");
            var key = (Path.GetFullPath(path), File.GetLastWriteTimeUtc(path), sae);
            lock (CacheLock)
            {
                if (_cached is not { } c || c.Key != key) _cached = c = (key, ActivationRecords.LoadAll(path, sae));
                return c.Table.GetValueOrDefault(feature);
            }
        }
        if (!Directory.Exists(path)) throw new PolyEngineException($"--records {path}: give a features run's contexts.parquet or a folder of Neuronpedia exports (<feature>.json)");
        string folder = Directory.Exists(Path.Combine(path, sae)) ? Path.Combine(path, sae) : path;
        string file = Path.Combine(folder, $"{feature}.json");
        return File.Exists(file) ? ActivationRecords.Load(file) : null;
    }
}

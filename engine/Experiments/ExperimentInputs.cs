using System.Text.Json;
using PolyEngine.Formats;

namespace PolyEngine.Experiments;

/// <summary>The experiments' other inputs: test sentences keyed by token string, and each feature's activation records.</summary>
public static class ExperimentInputs
{
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
    public static IReadOnlyList<ActivationRecord>? Records(string path, string sae, int feature)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
        {
            try { return ActivationRecords.Load(path, feature, sae); }
            catch (PolyEngineException e) when (e.Message.Contains("has no contexts for it")) { return null; }
        }
        if (!Directory.Exists(path)) throw new PolyEngineException($"--records {path}: give a features run's contexts.parquet or a folder of Neuronpedia exports (<feature>.json)");
        string folder = Directory.Exists(Path.Combine(path, sae)) ? Path.Combine(path, sae) : path;
        string file = Path.Combine(folder, $"{feature}.json");
        return File.Exists(file) ? ActivationRecords.Load(file) : null;
    }
}

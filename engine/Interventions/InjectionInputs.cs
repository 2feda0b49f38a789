using System.Text.Json;

namespace PolyEngine.Interventions;

/// <summary>The four token sets a token-type injection draws from.</summary>
public enum InjectionCategory { Target, High, Medium, Random }

/// <summary>
/// The files of the token-type prompt injection, read as the authors wrote them:
/// <list type="bullet">
/// <item>a token-type map, <c>{"&lt;token id&gt;": "&lt;type&gt;"}</c>, or for a model known only by its strings
/// <c>{"&lt;decoded string&gt;": "&lt;type&gt;"}</c> (then each vocabulary id takes the type of its decoded string);</item>
/// <item>union token sets, <c>{"&lt;type&gt;": {"target"|"high_interference"|"medium_interference"|"random": [strings]}}</c>;</item>
/// <item>type sentences, <c>{"&lt;type&gt;": ["sentence", ...]}</c>.</item>
/// </list>
/// </summary>
public static class InjectionInputs
{
    static readonly (string Key, InjectionCategory Category)[] SetKeys =
        [("target", InjectionCategory.Target), ("high_interference", InjectionCategory.High), ("medium_interference", InjectionCategory.Medium), ("random", InjectionCategory.Random)];

    public static string Name(InjectionCategory c) => c.ToString().ToLowerInvariant();

    static JsonElement Parse(string path, string option)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"{option} {path}: file not found");
        try { using var doc = JsonDocument.Parse(File.ReadAllText(path)); return doc.RootElement.Clone(); }
        catch (JsonException e) { throw new PolyEngineException($"{option} {path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
    }

    /// <summary>Token id → type for every id of the model's vocabulary that the map types.</summary>
    public static Dictionary<int, string> TypeMap(string path, Model model) => TypeMap(path, model.Spec.DVocab, id => model.Tokenizer.Decode([id]));

    /// <summary>Token id → type for every id below <paramref name="dVocab"/> that the map types (by id, or by the id's
    /// decoded string).</summary>
    public static Dictionary<int, string> TypeMap(string path, int dVocab, Func<int, string> decode)
    {
        var entries = Entries(path);
        var map = new Dictionary<int, string>();
        if (entries.All(e => int.TryParse(e.Name, out _)))
        {
            foreach (var (name, type) in entries)
            {
                int id = int.Parse(name);
                if (id < 0 || id >= dVocab) throw new PolyEngineException($"--type-map {path}: token id {id} is outside the model's vocabulary 0..{dVocab - 1}; is the map for another model?");
                map[id] = type;
            }
            return map;
        }
        var byString = entries.GroupBy(e => e.Name).ToDictionary(g => g.Key, g => g.First().Type);
        for (int id = 0; id < dVocab; id++)
            if (byString.TryGetValue(decode(id), out var type)) map[id] = type;
        if (map.Count == 0) throw new PolyEngineException($"--type-map {path}: none of its strings is a decoded token of this model; is it for another tokenizer?");
        return map;
    }

    /// <summary>Decoded string → type, for a model known only by the strings its endpoint returns (the authors'
    /// large-model format); an id map is refused, since ids need the model's tokenizer.</summary>
    public static Dictionary<string, string> TypeMapStrings(string path)
    {
        var entries = Entries(path);
        if (entries.All(e => int.TryParse(e.Name, out _)))
            throw new PolyEngineException($"--type-map {path}: maps token ids, which need the served model's tokenizer; give --model or --tokenizer, or a map of decoded strings");
        return entries.GroupBy(e => e.Name).ToDictionary(g => g.Key, g => g.First().Type);
    }

    static List<(string Name, string Type)> Entries(string path)
    {
        var root = Parse(path, "--type-map");
        if (root.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"--type-map {path}: expected an object {{\"<token id or string>\": \"<type>\"}}");
        var entries = root.EnumerateObject().Select(p => (p.Name, Type: p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()!
            : throw new PolyEngineException($"--type-map {path}: the type of '{p.Name}' is not a string"))).ToList();
        if (entries.Count == 0) throw new PolyEngineException($"--type-map {path}: holds no tokens");
        return entries;
    }

    /// <summary>Type → category → token strings (in file order).</summary>
    public static Dictionary<string, Dictionary<InjectionCategory, string[]>> TokenSets(string path)
    {
        var root = Parse(path, "--token-sets");
        if (root.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"--token-sets {path}: expected {{\"<type>\": {{\"target\": [...], \"high_interference\": [...], ...}}}}");
        var sets = new Dictionary<string, Dictionary<InjectionCategory, string[]>>();
        foreach (var t in root.EnumerateObject())
        {
            var cats = new Dictionary<InjectionCategory, string[]>();
            foreach (var (key, category) in SetKeys)
            {
                if (t.Value.ValueKind != JsonValueKind.Object || !t.Value.TryGetProperty(key, out var list) || list.ValueKind != JsonValueKind.Array)
                    throw new PolyEngineException($"--token-sets {path}: type '{t.Name}' needs a \"{key}\" list of token strings");
                cats[category] = list.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()!
                    : throw new PolyEngineException($"--token-sets {path}: type '{t.Name}', \"{key}\" holds a non-string")).ToArray();
            }
            sets[t.Name] = cats;
        }
        return sets;
    }

    /// <summary>Type → sentences (in file order).</summary>
    public static Dictionary<string, string[]> Sentences(string path)
    {
        var root = Parse(path, "--sentences");
        if (root.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"--sentences {path}: expected {{\"<type>\": [\"sentence\", ...]}}");
        return root.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ValueKind == JsonValueKind.Array
            ? p.Value.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : throw new PolyEngineException($"--sentences {path}: type '{p.Name}' holds a non-string")).ToArray()
            : throw new PolyEngineException($"--sentences {path}: type '{p.Name}' is not a list of sentences"));
    }
}

using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>
/// The safetensors files of one model folder: <c>model.safetensors</c>, or the shards listed in
/// <c>model.safetensors.index.json</c>. Looks tensors up by name across shards.
/// </summary>
public sealed class WeightFiles : IDisposable
{
    readonly List<SafeTensorsFile> _files = [];
    readonly Dictionary<string, SafeTensorsFile> _byName = new(StringComparer.Ordinal);

    public string Folder { get; }
    public IReadOnlyList<SafeTensorsFile> Files => _files;
    public IEnumerable<string> Names => _byName.Keys;

    WeightFiles(string folder) => Folder = folder;

    public static WeightFiles Open(string folder)
    {
        var w = new WeightFiles(folder);
        try
        {
            string single = Path.Combine(folder, "model.safetensors");
            string index = Path.Combine(folder, "model.safetensors.index.json");
            if (File.Exists(single)) w.Add(SafeTensorsFile.Open(single));
            else if (File.Exists(index))
            {
                foreach (var shard in ShardsOf(index)) w.Add(SafeTensorsFile.Open(Path.Combine(folder, shard)));
            }
            else if (File.Exists(Path.Combine(folder, "pytorch_model.bin")))
                throw new PolyEngineException($"{folder}: only pytorch_model.bin found; PolyEngine reads safetensors — convert it with transformers' save_pretrained(safe_serialization=True)");
            else
                throw new PolyEngineException($"{folder}: no model.safetensors or model.safetensors.index.json; a model folder needs config.json and its safetensors weights");
            return w;
        }
        catch
        {
            w.Dispose();
            throw;
        }
    }

    static IEnumerable<string> ShardsOf(string index)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(FileLinks.ReadAllText(index)); }
        catch (JsonException e) { throw new PolyEngineException($"{index}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using (doc)
        {
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new PolyEngineException($"{index}: missing object 'weight_map'");
            var shards = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                string shard = p.Value.GetString() ?? throw new PolyEngineException($"{index}: weight_map['{p.Name}'] must be a file name");
                if (shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                    throw new PolyEngineException($"{index}: shard name '{shard}' must be a plain file name in the model folder");
                shards.Add(shard);
            }
            return shards;
        }
    }

    void Add(SafeTensorsFile f)
    {
        _files.Add(f);
        foreach (var t in f.Tensors)
        {
            if (_byName.TryGetValue(t.Name, out var other))
                throw new PolyEngineException($"{Folder}: tensor '{t.Name}' appears in both {Path.GetFileName(other.Path)} and {Path.GetFileName(f.Path)}");
            _byName[t.Name] = f;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafeTensorsFile FileOf(string name) => _byName.TryGetValue(name, out var f) ? f
        : throw new PolyEngineException($"{Folder}: missing tensor '{name}'; the weights do not match config.json (wrong or incomplete checkpoint)");

    /// <summary>Reads a tensor as float32, checking its shape against what the config implies.</summary>
    public float[] Read(string name, params long[] expectedShape)
    {
        var f = FileOf(name);
        var info = f.Info(name);
        if (!info.Shape.SequenceEqual(expectedShape))
            throw new PolyEngineException($"{f.Path}: tensor '{name}' has shape {info.ShapeText}, config.json implies [{string.Join(", ", expectedShape)}]; the weights do not match the config");
        if (info.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.F64))
            throw new PolyEngineException($"{f.Path}: tensor '{name}' has dtype {info.DType}; model weights must be F32, F16, BF16 or F64");
        return f.ReadFloat32(name);
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}

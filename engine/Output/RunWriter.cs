using PolyEngine.Formats;
using PolyEngine.Forward;

namespace PolyEngine.Output;

/// <summary>Writes a run as safetensors: <c>input_ids</c> (I64 [batch, pos]), <c>logits</c> and every recorded hook by its
/// TransformerLens name (and any extra tensors, e.g. SAE outputs), float32, atomically.</summary>
public static class RunWriter
{
    public static void Save(string path, int[] ids, RunResult result, IReadOnlyDictionary<string, string>? metadata = null,
        IEnumerable<(string Name, Tensor Tensor)>? extra = null)
    {
        var w = new SafeTensorsWriter();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) w.AddMetadata(k, v);
        w.Add("input_ids", ids.Select(i => (long)i).ToArray(), result.Batch, result.Seq);
        if (result.Logits is { } logits) w.Add("logits", logits.Data, logits.Shape);
        foreach (var name in result.Cache.Names)
        {
            var t = result.Cache[name];
            w.Add(name.ToString(), t.Data, t.Shape);
        }
        foreach (var (name, t) in extra ?? []) w.Add(name, t.Data, t.Shape);
        w.Save(path);
    }
}

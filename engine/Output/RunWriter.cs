using PolyEngine.Formats;

namespace PolyEngine.Output;

/// <summary>Writes a run, atomically, as safetensors (<c>.safetensors</c>) or NumPy (<c>.npz</c>; the metadata as a JSON string
/// in <c>__metadata__</c>: <c>json.loads(str(z["__metadata__"]))</c>): <c>input_ids</c> (int64
/// [batch, pos], right-padded with 0), <c>attention_mask</c> (int64 [batch, pos], 1 at real tokens — HF's convention),
/// <c>logits</c> and every recorded hook by its TransformerLens name (and any extra tensors, e.g. SAE outputs), float32.</summary>
public static class RunWriter
{
    /// <summary>A one-line error unless <paramref name="path"/> names a format the writer has.</summary>
    public static void CheckFormat(string path)
    {
        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is not (".safetensors" or ".npz"))
            throw new PolyEngineException($"--out {path}: unknown output format '{ext}'; name the file .safetensors (numpy/torch via safetensors) or .npz (numpy)");
    }

    public static void Save(string path, RunResult result, IReadOnlyDictionary<string, string>? metadata = null,
        IEnumerable<(string Name, Tensor Tensor)>? extra = null)
    {
        CheckFormat(path);
        var inputIds = result.InputIds.Select(i => (long)i).ToArray();
        var mask = new long[inputIds.Length];
        for (int b = 0; b < result.Batch; b++) mask.AsSpan(b * result.Seq, result.Lengths[b]).Fill(1);
        var tensors = new List<(string Name, Tensor Tensor)>();
        if (result.Logits is { } logits) tensors.Add(("logits", logits));
        foreach (var name in result.Cache.Names) tensors.Add((name.ToString(), result.Cache[name]));
        tensors.AddRange(extra ?? []);
        if (Path.GetExtension(path).Equals(".npz", StringComparison.OrdinalIgnoreCase))
        {
            var z = new NpzWriter().Add("input_ids", inputIds, result.Batch, result.Seq).Add("attention_mask", mask, result.Batch, result.Seq);
            if (metadata is { Count: > 0 })   // what safetensors keeps in __metadata__: a JSON string array here
                z.AddText("__metadata__", System.Text.Json.JsonSerializer.Serialize(metadata));
            foreach (var (name, t) in tensors) z.Add(name, t.Data, t.Shape);
            z.Save(path);
            return;
        }
        var w = new SafeTensorsWriter();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) w.AddMetadata(k, v);
        w.Add("input_ids", inputIds, result.Batch, result.Seq);
        w.Add("attention_mask", mask, result.Batch, result.Seq);
        foreach (var (name, t) in tensors) w.Add(name, t.Data, t.Shape);
        w.Save(path);
    }
}

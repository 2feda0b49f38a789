using System.Security.Cryptography;
using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// What a run computes: its input files, each named and keyed by its content (<see cref="FileHash.Xxh128"/>, so a file
/// changed in place at the same size is noticed), and the options that decide its results. A checkpoint resumes only
/// under the same key, and a finished run is finished only for the same key; when keys differ, <see cref="Difference"/>
/// names what changed.
/// </summary>
public sealed class RunKey
{
    /// <summary>How the scans read their inputs and lay out their checkpoints, in this version of PolyEngine: part of every
    /// key, and raised whenever either changes, so a checkpoint of another version is never resumed into mixed results.</summary>
    public const int ScanFormat = 5;   // 4: the interference checkpoint holds the similarity histogram; 5: feature sums in fixed point

    public RunKey(JsonObject inputs, JsonObject options)
    {
        Inputs = inputs;
        Options = options;
        if (!Options.ContainsKey("scan_format")) Options["scan_format"] = ScanFormat;
        Value = Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
            new JsonObject { ["inputs"] = inputs.DeepClone(), ["options"] = options.DeepClone() }.ToJsonString())));
    }

    /// <summary>Input name (e.g. <c>sae[0]/sae_weights.safetensors</c>) → content hash.</summary>
    public JsonObject Inputs { get; }
    public JsonObject Options { get; }
    /// <summary>The key itself: SHA-256 of the inputs and options.</summary>
    public string Value { get; }

    public override string ToString() => Value;

    /// <summary>Adds every file of <paramref name="folder"/> matching <paramref name="patterns"/> as <paramref name="prefix"/>/name.</summary>
    public static void AddFolder(JsonObject inputs, string prefix, string folder, params string[] patterns)
    {
        foreach (var file in patterns.SelectMany(p => Directory.Exists(folder) ? Directory.GetFiles(folder, p) : []).Distinct().Order(StringComparer.Ordinal))
            inputs[$"{prefix}/{Path.GetFileName(file)}"] = FileHash.Xxh128(file);
    }

    /// <summary>The model's files a run depends on (config, weights, tokenizer), as input "model".</summary>
    public static void AddModel(JsonObject inputs, Model model) =>
        AddFolder(inputs, "model", model.Folder, "config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json", "vocab.json", "merges.txt");

    /// <summary>Adds one file (when it exists) as <paramref name="name"/>.</summary>
    public static void AddFile(JsonObject inputs, string name, string? path)
    {
        if (path is not null) inputs[name] = File.Exists(path) ? FileHash.Xxh128(path) : "(missing) " + Path.GetFullPath(path);
    }

    /// <summary>The key of a corpus scan: the model's config and weights, each SAE's cfg and weights, the corpus files.</summary>
    public static RunKey ForCorpusScan(Model model, IReadOnlyList<SparseAutoencoder> saes, IReadOnlyList<string> corpusFiles, JsonObject options)
    {
        var inputs = new JsonObject();
        AddFolder(inputs, "model", model.Folder, "config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json", "vocab.json", "merges.txt");
        for (int i = 0; i < saes.Count; i++) AddFolder(inputs, $"sae[{i}]", saes[i].Config.Folder, "cfg.json", "*.safetensors");
        for (int i = 0; i < corpusFiles.Count; i++) AddFile(inputs, $"corpus[{i}]/{Path.GetFileName(corpusFiles[i])}", corpusFiles[i]);
        return new RunKey(inputs, options);
    }

    /// <summary>What differs between this key and inputs and options saved with another run, in words; null when nothing
    /// that was saved differs (or nothing was saved).</summary>
    public string? Difference(JsonObject? inputs, JsonObject? options)
    {
        var changes = new List<string>();
        if (inputs is not null)
        {
            foreach (var (name, value) in Inputs)
                if (!inputs.TryGetPropertyValue(name, out var old)) changes.Add($"{name} is new");
                else if (old?.ToJsonString() != value?.ToJsonString()) changes.Add($"{name} changed (its content differs)");
            foreach (var (name, _) in inputs)
                if (!Inputs.ContainsKey(name)) changes.Add($"{name} is gone");
        }
        if (options is not null)
            foreach (var (name, value) in Options)
                if (!JsonNode.DeepEquals(options[name], value)) changes.Add($"option {name}: {options[name]?.ToJsonString() ?? "null"} → {value?.ToJsonString() ?? "null"}");
        return changes.Count == 0 ? null : string.Join("; ", changes.Take(4)) + (changes.Count > 4 ? $"; and {changes.Count - 4} more" : "");
    }
}

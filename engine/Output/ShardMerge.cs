using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Output;

/// <summary>The shards of one run (<c>--shard i/n</c>), checked and in shard order: each folder and its manifest.</summary>
public sealed record ShardSet(string Tool, int Count, IReadOnlyList<(string Folder, JsonObject Manifest)> Shards)
{
    /// <summary>What every shard's manifest says alike: the run's identity (tool, version, inputs and their hashes, options).</summary>
    public JsonObject Identity => ShardMerge.Identity(Shards[0].Manifest);
}

/// <summary>
/// <c>polyengine merge</c>: the shards of a run into the outputs one machine would have written. The shards are checked
/// first: every folder is a finished shard (its manifest names it), all of one run (same tool, version, inputs with
/// their hashes and options), each index once and none missing — otherwise a one-line error naming the folder and what
/// differs. Then the partial results combine exactly, byte for byte what the single run writes: the scans' counts and
/// states add (ShardMerge.Scans.cs), the case lists concatenate in the single run's order and their summaries are
/// computed from them (ShardMerge.Runs.cs). The manifest is the one output with run facts: it sums the shards' counts
/// and seconds and lists the shards.
/// </summary>
public static partial class ShardMerge
{
    /// <summary>Manifest fields that differ between shards of one run (facts of each machine, not of the run).</summary>
    static readonly string[] Volatile = ["created_utc", "device", "results", "shard", "notes"];

    /// <summary>The manifest without what differs between shards: the shard (top-level for scans, in the options for the
    /// case-list verbs) and the facts of each machine.</summary>
    public static JsonObject Identity(JsonObject manifest)
    {
        var id = (JsonObject)manifest.DeepClone();
        foreach (var k in Volatile) id.Remove(k);
        (id["options"] as JsonObject)?.Remove("shard");
        return id;
    }

    /// <summary>The shard a manifest names (top-level, or in its options; 0/1 is no shard).</summary>
    static Shard? ShardOf(JsonObject m) => ((string?)m["shard"] ?? (string?)m["options"]?["shard"]) is { } s && Shard.Parse(s) is { Count: > 1 } shard ? shard : null;

    public static ShardSet Check(IReadOnlyList<string> folders)
    {
        if (folders.Count == 0) throw new PolyEngineException("merge: give the shard folders (the --out of each --shard i/n run)");
        var read = new List<(string Folder, JsonObject Manifest, Shard Shard)>();
        foreach (var folder in folders)
        {
            string path = Path.Combine(folder, "manifest.json");
            if (!File.Exists(path)) throw new PolyEngineException($"merge: {folder} has no manifest.json; the shard did not finish (rerun it with the same command to resume)");
            JsonObject m;
            try { m = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new System.Text.Json.JsonException("not an object"); }
            catch (System.Text.Json.JsonException e) { throw new PolyEngineException($"merge: {path} is not valid JSON ({e.Message.Split('\n')[0]})"); }
            if (ShardOf(m) is not { } shard)
                throw new PolyEngineException($"merge: {folder} is not a shard (its manifest names no --shard); only the outputs of --shard i/n runs merge");
            read.Add((folder, m, shard));
        }
        var (first, firstManifest, firstShard) = read[0];
        var identity = Identity(firstManifest);
        foreach (var (folder, m, shard) in read.Skip(1))
        {
            if (shard.Count != firstShard.Count)
                throw new PolyEngineException($"merge: {folder} is shard {shard} but {first} is {firstShard}: shards of one run share their count");
            var other = Identity(m);
            if (!JsonNode.DeepEquals(identity, other))
            {
                string key = identity.Select(kv => kv.Key).Concat(other.Select(kv => kv.Key)).Distinct()
                    .First(k => !JsonNode.DeepEquals(identity[k], other[k]));
                throw new PolyEngineException($"merge: {folder} is not a shard of the same run as {first}: its {key} differs " +
                    $"({Short(other[key])} vs {Short(identity[key])})");
            }
        }
        var twice = read.GroupBy(r => r.Shard.Index).FirstOrDefault(g => g.Count() > 1);
        if (twice is not null)
            throw new PolyEngineException($"merge: shard {twice.Key}/{firstShard.Count} is given twice ({string.Join(", ", twice.Select(t => t.Folder))}); give each shard once");
        var missing = Enumerable.Range(0, firstShard.Count).Except(read.Select(r => r.Shard.Index)).ToList();
        if (missing.Count > 0)
            throw new PolyEngineException($"merge: shard{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing)} of {firstShard.Count} {(missing.Count > 1 ? "are" : "is")} missing; run {(missing.Count > 1 ? "them" : "it")} with --shard i/{firstShard.Count} first");
        return new ShardSet((string?)firstManifest["tool"] ?? "unknown", firstShard.Count, [.. read.OrderBy(r => r.Shard.Index).Select(r => (r.Folder, r.Manifest))]);
    }

    static string Short(JsonNode? v)
    {
        string s = v?.ToJsonString() ?? "none";
        return s.Length > 80 ? s[..80] + "…" : s;
    }

    /// <summary>The files <see cref="Merge"/> writes for a set of shards (for the output folder's plan).</summary>
    public static IReadOnlyList<string> PlannedFiles(ShardSet set) => set.Tool switch
    {
        "polyengine coactivate" => CoactivationWriter.PlannedFiles(Format(set)),
        "polyengine inject" => [.. InjectionWriter.PlannedFiles(Format(set)), .. File.Exists(Path.Combine(set.Shards[0].Folder, "token_sets.json")) ? ["token_sets.json"] : Array.Empty<string>()],
        "polyengine experiment feature" or "polyengine experiment token" or "polyengine experiment prompt" => ExperimentWriter.PlannedFiles(Format(set)),
        "polyengine interference" => InterferenceWriter.PlannedFiles(Format(set)),
        "polyengine steer" => SteerWriter.PlannedFiles(Format(set), (string?)set.Shards[0].Manifest["options"]?["locus"] == "neuron"),
        "polyengine features" => FeatureWriter.PlannedFiles(Format(set)),
        "polyengine experiment neuron" => NeuronExperimentWriter.PlannedFiles(Format(set)),
        _ => throw new PolyEngineException($"merge: merging '{set.Tool}' runs is not supported yet (features, coactivate, interference, steer, inject and every experiment are)"),
    };

    /// <summary>The shards' table format: as their options say, else as their files are (steer's options do not say).</summary>
    static TableFormat Format(ShardSet set) =>
        TableWriter.ParseFormat((string?)set.Shards[0].Manifest["options"]?["format"]
            ?? (Directory.EnumerateFiles(set.Shards[0].Folder, "*.csv").Any() ? "csv" : "parquet"));

    /// <summary>Writes the merged outputs into <paramref name="outDir"/>; returns the files written. Parquet tables with an
    /// <c>sae</c> column (the pair table, the cases) are also written hive-partitioned by SAE (<see cref="HivePartition"/>).</summary>
    public static IReadOnlyList<string> Merge(ShardSet set, string outDir)
    {
        _ = PlannedFiles(set);
        var files = set.Tool switch
        {
            "polyengine inject" => Injection(set, outDir),
            "polyengine coactivate" => Coactivation(set, outDir),
            "polyengine interference" => Interference(set, outDir),
            "polyengine steer" => Steer(set, outDir),
            "polyengine features" => Features(set, outDir),
            "polyengine experiment neuron" => Neuron(set, outDir),
            _ => Experiment(set, outDir),
        };
        return [.. files, .. files.Where(f => f.EndsWith(".parquet")).SelectMany(f => HivePartition.Write(Path.Combine(outDir, f), outDir, "sae"))];
    }

    /// <summary>The merged manifest: the run's identity, the summed results, the shards it came from.</summary>
    static JsonObject Manifest(ShardSet set, JsonObject results)
    {
        var manifest = Identity(set.Shards[0].Manifest);
        if (manifest["options"] is JsonObject o && set.Shards[0].Manifest["options"]?["shard"] is not null) o["shard"] = "0/1";   // as one run writes it
        manifest["created_utc"] = DateTime.UtcNow.ToString("O");
        manifest["device"] = "merged from " + string.Join("; ", set.Shards.Select(s => (string?)s.Manifest["device"]).Distinct());
        manifest["results"] = results;
        manifest["merged_from"] = new JsonArray([.. set.Shards.Select(s => (JsonNode)new JsonObject
        {
            ["folder"] = Path.GetFullPath(s.Folder), ["shard"] = (s.Manifest["shard"] ?? s.Manifest["options"]?["shard"])!.DeepClone(),
            ["device"] = s.Manifest["device"]?.DeepClone(), ["seconds"] = s.Manifest["results"]?["seconds"]?.DeepClone(),
        })]);
        return manifest;
    }

    static double Seconds(ShardSet set) => set.Shards.Sum(s => (double?)s.Manifest["results"]?["seconds"] ?? 0);

    /// <summary>A file every shard has alike, copied from <paramref name="shard"/> into the merge, atomically.</summary>
    static void CopyFrom(string shard, string outDir, string name) => AtomicFile.Write(Path.Combine(outDir, name), s =>
    {
        using var src = File.OpenRead(Path.Combine(shard, name));
        src.CopyTo(s);
    });

    /// <summary>A result count of the shards, summed (0 where a shard has none, or not an integer).</summary>
    static long Sum(ShardSet set, string key) => set.Shards.Sum(s => s.Manifest["results"]?[key] is JsonValue v && v.TryGetValue(out long n) ? n : 0);

    /// <summary>Every result the shards report, summed (their counts), but <paramref name="except"/>; and the seconds.</summary>
    static JsonObject SummedResults(ShardSet set, params string[] except)
    {
        var results = new JsonObject();
        foreach (var key in set.Shards.SelectMany(s => s.Manifest["results"]?.AsObject().Select(kv => kv.Key) ?? []).Distinct())
            if (key != "seconds" && !except.Contains(key)) results[key] = Sum(set, key);
        results["seconds"] = Seconds(set);
        return results;
    }
}

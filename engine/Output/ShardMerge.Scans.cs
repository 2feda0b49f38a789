using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>The merges of the corpus scans and the interference scan: their counts, sums and states add.</summary>
public static partial class ShardMerge
{
    /// <summary>Co-activation: each SAE's pair counters and marginals add across the shards, and the pair table and the
    /// triangle are written from the sums.</summary>
    static IReadOnlyList<string> Coactivation(ShardSet set, string outDir)
    {
        var first = set.Shards[0].Manifest;
        var names = first["saes"]!.AsArray().Select(s => (string)s!["name"]!).ToList();
        var counters = new List<CoactivationCounter>();
        foreach (var name in names)
        {
            CoactivationCounter? sum = null;
            foreach (var (folder, _) in set.Shards)
            {
                using var file = SafeTensorsFile.Open(Path.Combine(folder, "coactivation.safetensors"));
                var c = CoactivationWriter.ReadCounter(file, name);
                if (sum is null) sum = c;
                else sum.Add(c);
            }
            counters.Add(sum!);
        }
        var options = first["options"]!;
        int? top = options["top"] is JsonValue tv && tv.TryGetValue(out int n) ? n : null;   // "all": every co-occurring pair
        var format = Format(set);
        long pairRows = CoactivationWriter.WriteData(outDir, names, counters, (string)options["window"]!, top, format);
        double seconds = Seconds(set);
        var manifest = Manifest(set, new JsonObject
        {
            ["tokens"] = Sum(set, "tokens"), ["context_windows"] = Sum(set, "context_windows"), ["documents"] = Sum(set, "documents"),
            ["seconds"] = seconds, ["tokens_per_second"] = Sum(set, "tokens") / Math.Max(seconds, 1e-9), ["pair_rows"] = pairRows,
            ["units"] = new JsonArray([.. counters.Select(c => (JsonNode)JsonValue.Create(c.Units)!)]),
            ["counter"] = first["results"]?["counter"]?.DeepClone(), ["counter_bytes"] = first["results"]?["counter_bytes"]?.DeepClone(),
        });
        ScanManifest.Save(outDir, manifest);
        return CoactivationWriter.PlannedFiles(format);
    }

    /// <summary>Feature statistics: counts, fixed-point sums and token counts add and maxima take the larger (exactly the
    /// single run's); each shard's contexts get the whole scan's window numbers (from every shard's windows per document)
    /// and each feature keeps the strongest top-k of all, ties to the earlier window, as one run keeps them.</summary>
    static IReadOnlyList<string> Features(ShardSet set, string outDir)
    {
        var first = set.Shards[0].Manifest;
        var saes = first["saes"]!.AsArray().Select(x => (Name: (string)x!["name"]!, DSae: (int)x["d_sae"]!)).ToList();
        int topK = (int)first["options"]!["top_k"]!;
        var format = Format(set);
        string ext = TableWriter.Extension(format);
        var merged = saes.Select(x => new FeatureStatistics(x.DSae, topK)).ToList();
        var docs = new List<SortedDictionary<long, int>>();
        foreach (var (folder, _) in set.Shards)
        {
            string path = Path.Combine(folder, FeatureWriter.ShardStats);
            if (!File.Exists(path)) throw new PolyEngineException($"merge: {folder} has no {FeatureWriter.ShardStats}; the shard did not finish (rerun it to resume)");
            var part = saes.Select(x => new FeatureStatistics(x.DSae, topK)).ToList();
            docs.Add(FeatureScan.LoadShard(path, part));
            for (int i = 0; i < saes.Count; i++) merged[i].AddCounts(part[i]);
        }
        // Window numbers: a document's windows start where the windows of the documents before it (in any shard) end.
        var globalStart = new Dictionary<long, long>();
        long next = 0;
        foreach (var (doc, count) in docs.SelectMany(d => d).OrderBy(d => d.Key)) { globalStart[doc] = next; next += count; }
        var contexts = new List<ContextRow>();
        for (int k = 0; k < set.Shards.Count; k++)
        {
            var localStart = new Dictionary<long, long>();
            long local = 0;
            foreach (var (doc, count) in docs[k]) { localStart[doc] = local; local += count; }
            foreach (var row in TableReader.Read<ContextRow>(Path.Combine(set.Shards[k].Folder, "contexts" + ext)))
            {
                if (!localStart.TryGetValue(row.Document, out long start))
                    throw new PolyEngineException($"merge: {set.Shards[k].Folder}: a context of document {row.Document} is not among the shard's documents; the shard's files do not belong together");
                row.Window = globalStart[row.Document] + (row.Window - start);
                contexts.Add(row);
            }
        }
        var order = saes.Select((x, i) => (x.Name, i)).ToDictionary(x => x.Name, x => x.i);
        var ranked = contexts.GroupBy(c => (c.Sae, c.Feature)).OrderBy(g => order[g.Key.Sae]).ThenBy(g => g.Key.Feature)
            .SelectMany(g => g.OrderByDescending(c => c.Activation).ThenBy(c => c.Window).Take(topK).Select((c, r) => { c.Rank = r; return c; })).ToList();
        var features = saes.SelectMany((x, i) => Enumerable.Range(0, x.DSae).Select(j => FeatureWriter.Row(x.Name, merged[i], j))).ToList();
        FeatureWriter.WriteTables(outDir, features, ranked, format);
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["tokens"] = Sum(set, "tokens"), ["context_windows"] = Sum(set, "context_windows"), ["seconds"] = seconds, ["tokens_per_second"] = Sum(set, "tokens") / Math.Max(seconds, 1e-9),
            ["feature_rows"] = features.Count, ["context_rows"] = ranked.Count,
        }));
        return FeatureWriter.PlannedFiles(format);
    }

    /// <summary>Interference: per SAE the shards' raw states add (counts, and the strongest partners of both), and the
    /// tables, sample and proxies are made from the sum as the single run makes them. The inputs — SAEs, explanations,
    /// feature lists, the proxies' model and co-activation run — are read again from where the manifest names them.</summary>
    static IReadOnlyList<string> Interference(ShardSet set, string outDir)
    {
        var m = set.Shards[0].Manifest;
        var opt = m["options"]!;
        string? File(JsonNode? entry) => (string?)entry?["file"];
        var sources = m["saes"]!.AsArray().Select(x => new InterferenceSource((string)x!["folder"]!, File(x["explanations"]), File(x["active"]))).ToList();
        var o = new InterferenceJobOptions
        {
            Scan = new InterferenceOptions
            {
                Taus = [.. opt["tau"]!.AsArray().Select(t => (float)(double)t!)], PartnersPerBin = (int)opt["partners"]!, TopN = (int)opt["top"]!, Tile = (int)opt["tile"]!,
            },
            Strict = (bool)opt["strict"]!, Model = (string?)m["model"]?["model"],
            Coactivation = File(m["coactivation"]) is { } c ? Path.GetDirectoryName(c) : null,
            Sample = opt["sample"] is JsonObject s ? new InterferenceSampleOptions((int)s["targets"]!, (int)s["partners_per_bin"]!, (ulong)s["seed"]!) : null,
        };
        var format = Format(set);
        var names = SaeNames.Of(sources.Select(x => x.Folder));
        var log = new QuietLog();
        using var backend = Devices.Create("cpu", 0, out string note);
        var (_, gram) = InterferenceJob.OpenLens(backend, o.Model, log);
        string work = Path.Combine(outDir, ".merge");
        Directory.CreateDirectory(work);
        try
        {
            var results = new List<string>();
            for (int k = 0; k < sources.Count; k++)
            {
                var inp = InterferenceInputs.Load(sources[k], names[k], o.Strict);
                var sum = new InterferenceState(inp.N, o.Scan.Taus.Length, inp.Embed is not null, o.Scan.PartnersPerBin, o.Scan.TopN);
                double seconds = 0;
                foreach (var (folder, _) in set.Shards)
                {
                    string path = InterferenceJob.StatePath(folder, k);
                    if (!System.IO.File.Exists(path)) throw new PolyEngineException($"merge: {folder} has no {Path.GetFileName(path)}; the shard did not finish (rerun it to resume)");
                    using var f = SafeTensorsFile.Open(path);
                    var part = new InterferenceState(inp.N, o.Scan.Taus.Length, inp.Embed is not null, o.Scan.PartnersPerBin, o.Scan.TopN);
                    part.Restore(f, "");
                    sum.Add(part);
                    seconds += double.Parse(f.Metadata.GetValueOrDefault("seconds", "0"), System.Globalization.CultureInfo.InvariantCulture);
                }
                var result = InterferenceJob.Finish(backend, gram, inp, sum, o, seconds);
                string file = Path.Combine(work, $"result.{k}.safetensors");
                var w = new SafeTensorsWriter();
                result.Save(w);
                w.Save(file);
                results.Add(file);
            }
            var written = InterferenceWriter.Write(outDir, results, o, format, "merged", sources);
            // The writer's manifest, with the merge's facts.
            var manifest = (JsonObject)JsonNode.Parse(System.IO.File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
            var merged = Manifest(set, manifest["results"]?.DeepClone() as JsonObject ?? []);
            manifest["device"] = merged["device"]!.DeepClone();
            manifest["merged_from"] = merged["merged_from"]!.DeepClone();
            ScanManifest.Save(outDir, manifest);
            return written;
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    sealed class QuietLog : IInterferenceLog
    {
        public void Info(string line) { }
        public void Progress(string sae, long tilesDone, long tiles, double pairsPerSecond) { }
    }
}

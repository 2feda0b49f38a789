using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Scans;

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
/// differs. Then the partial results combine exactly, byte for byte what the single run writes. Co-activation: the pair
/// counters and marginals add, and the pair table and triangle are written from the sums. Injection: the trials
/// concatenate in the single run's order, and the summary is computed from them. The feature, token and prompt
/// experiments: the cases concatenate in the sample's target order, and the levels and regressions are computed from
/// them. The manifest is the one output with
/// run facts: it sums the shards' counts and seconds and lists the shards.
/// </summary>
public static class ShardMerge
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

    /// <summary>Steering: the rows and best tables of the shards in prompt order (each keeps the prompts' numbers in the
    /// whole prompt file), in the single run's row groups; the vectors table is every shard's alike.</summary>
    static IReadOnlyList<string> Steer(ShardSet set, string outDir)
    {
        var format = Format(set);
        string ext = TableWriter.Extension(format);
        Directory.CreateDirectory(outDir);
        var files = PlannedFiles(set);
        TableConcat.Write([.. set.Shards.Select(s => Path.Combine(s.Folder, "rows" + ext))], Path.Combine(outDir, "rows" + ext), "prompt", SteerWriter.RowGroupRows, format);
        TableConcat.Write([.. set.Shards.Select(s => Path.Combine(s.Folder, "best" + ext))], Path.Combine(outDir, "best" + ext), "prompt", int.MaxValue, format);
        if (files.Contains("vectors" + ext)) File.Copy(Path.Combine(set.Shards[0].Folder, "vectors" + ext), Path.Combine(outDir, "vectors" + ext), overwrite: true);
        long Sum(string key) => set.Shards.Sum(s => (long?)s.Manifest["results"]?[key] ?? 0);
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["prompts"] = Sum("prompts"), ["rows"] = Sum("rows"), ["interventions"] = Sum("interventions"), ["seconds"] = seconds,
            ["interventions_per_second"] = Sum("interventions") / Math.Max(seconds, 1e-9),
        }));
        return files;
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
        long Sum(string key) => set.Shards.Sum(s => (long?)s.Manifest["results"]?[key] ?? 0);
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["tokens"] = Sum("tokens"), ["context_windows"] = Sum("context_windows"), ["seconds"] = seconds, ["tokens_per_second"] = Sum("tokens") / Math.Max(seconds, 1e-9),
            ["feature_rows"] = features.Count, ["context_rows"] = ranked.Count,
        }));
        return FeatureWriter.PlannedFiles(format);
    }

    /// <summary>The neuron experiment: the shards' cases in the whole run's unit order (unit j of shard k is unit j·n + k,
    /// as its manifest lists them), the buckets computed from them, the neurons table (every shard's alike) as is.</summary>
    static IReadOnlyList<string> Neuron(ShardSet set, string outDir)
    {
        var format = Format(set);
        string ext = TableWriter.Extension(format);
        int n = set.Count;
        var cases = new List<(long Unit, int Row, NeuronCase Case)>();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        for (int k = 0; k < n; k++)
        {
            var (folder, m) = set.Shards[k];
            var units = (m["results"]?["units"] as JsonArray ?? throw new PolyEngineException($"merge: {folder}: its manifest lists no units (an older PolyEngine wrote it); rerun the shard"))
                .Select((u, j) => ((string)u!, j)).GroupBy(x => x.Item1).ToDictionary(g => g.Key, g => g.First().j);
            foreach (var r in Report.Tables.Rows(folder, "cases", "sae", "hook", "bucket", "neuron", "degree", "cluster", "feature", "token", "token_id", "sentence", "baseline"))
            {
                double D(string c) => double.Parse(r[c], System.Globalization.NumberStyles.Float, inv);
                int I(string c) => int.Parse(r[c], inv);
                NeuronChange Change(string d) => new(D($"{d}_max_abs_drop"), D($"{d}_max_pct_drop"), D($"{d}_max_abs_increase"), D($"{d}_max_pct_increase"));
                var c = new NeuronCase(r["sae"], HookName.Parse(r["hook"]), r["bucket"], I("neuron"), I("degree"), I("cluster"), I("feature"), r["token"], I("token_id"),
                    I("sentence"), D("baseline"), Change("mask"), Change("amplify"));
                if (!units.TryGetValue($"{c.Neuron}:{c.Feature}", out int j))
                    throw new PolyEngineException($"merge: {folder}: a case of neuron {c.Neuron}, feature {c.Feature} is not among the shard's units");
                cases.Add(((long)j * n + k, cases.Count, c));
            }
        }
        Directory.CreateDirectory(outDir);
        NeuronExperimentWriter.WriteCasesAndBuckets(outDir, [.. cases.OrderBy(x => x.Unit).ThenBy(x => x.Row).Select(x => x.Case)], format);
        File.Copy(Path.Combine(set.Shards[0].Folder, "neurons" + ext), Path.Combine(outDir, "neurons" + ext), overwrite: true);
        var results = new JsonObject();
        foreach (var key in set.Shards.SelectMany(s => s.Manifest["results"]?.AsObject().Select(kv => kv.Key) ?? []).Distinct())
            if (key is not ("seconds" or "units"))
                results[key] = set.Shards.Sum(s => s.Manifest["results"]?[key] is JsonValue v && v.TryGetValue(out long x) ? x : 0);
        results["seconds"] = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, results));
        return NeuronExperimentWriter.PlannedFiles(format);
    }

    sealed class QuietLog : IInterferenceLog
    {
        public void Info(string line) { }
        public void Progress(string sae, long tilesDone, long tiles, double pairsPerSecond) { }
    }

    /// <summary>A steering experiment: the shards' cases in the single run's order — the sample's (SAE, target) work
    /// list, each target's cases as its shard ran them — and the levels and regressions computed from them. The work
    /// list is rebuilt from the sample the manifest names.</summary>
    static IReadOnlyList<string> Experiment(ShardSet set, string outDir)
    {
        var first = set.Shards[0].Manifest;
        var options = first["options"]!;
        var metrics = SteerMetrics.Parse(string.Join(",", options["metrics"]!.AsArray().Select(m => (string)m!)));
        var samples = Experiments.FeatureSample.Load((string)first["inputs"]!["sample"]!);
        if (options["saes"] is JsonArray names) samples = [.. samples.Where(x => names.Any(n => (string?)n == x.Name))];
        var order = new Dictionary<(string, double, int), int>();
        foreach (var (w, k) in Experiments.ExperimentDriver.Work(samples).Select((w, k) => (w, k))) order.TryAdd((w.Sae.Name, w.Target.Tau, w.Target.Feature), k);
        string ext = TableWriter.Extension(Format(set));
        var cases = new List<(int Unit, int Row, Experiments.FeatureCase Case)>();
        foreach (var (folder, _) in set.Shards)
            foreach (var r in Report.Tables.Rows(folder, "cases", "sae", "hook", "tau", "target", "level", "partner", "interference", "similarity", "token", "token_id", "sentence"))
            {
                var c = Case(r, metrics);
                if (!order.TryGetValue((c.Sae, c.Tau, c.Target), out int unit))
                    throw new PolyEngineException($"merge: {folder}: a case of target {c.Target} (SAE {c.Sae}, τ {c.Tau}) is not in the sample {first["inputs"]!["sample"]}; was the sample changed?");
                cases.Add((unit, cases.Count, c));
            }
        var merged = cases.OrderBy(x => x.Unit).ThenBy(x => x.Row).Select(x => x.Case).ToList();
        var results = new JsonObject();
        foreach (var key in set.Shards.SelectMany(s => s.Manifest["results"]?.AsObject().Select(kv => kv.Key) ?? []).Distinct())
            if (key is not ("seconds" or "interventions_per_second"))
                results[key] = set.Shards.Sum(s => s.Manifest["results"]?[key] is JsonValue v && v.TryGetValue(out long n) ? n : 0);
        double seconds = Seconds(set);
        results["seconds"] = seconds;
        if (results["interventions"] is JsonValue iv) results["interventions_per_second"] = (long)iv / Math.Max(seconds, 1e-9);
        var manifest = Manifest(set, results);
        return ExperimentWriter.Write(outDir, merged, metrics, Format(set), manifest);
    }

    /// <summary>A cases-table row back into its case (numbers in round-trip form, so exactly).</summary>
    static Experiments.FeatureCase Case(Dictionary<string, string> r, IReadOnlyList<Interventions.SteerMetric> metrics)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        double D(string k) => double.Parse(r[k], System.Globalization.NumberStyles.Float, inv);
        int I(string k) => int.Parse(r[k], inv);
        double[] Per(string suffix) => [.. metrics.Select(m => D($"{m.Name()}_{suffix}"))];
        return new Experiments.FeatureCase(r["sae"], HookName.Parse(r["hook"]), D("tau"), I("target"), r["level"], I("partner"), D("interference"), D("similarity"),
            r["token"], I("token_id"), I("sentence"), Per("baseline"), Per("best"), [.. metrics.Select(m => float.Parse(r[$"{m.Name()}_best_scale"], System.Globalization.NumberStyles.Float, inv))],
            Per("delta"), Per("relative"));
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

    /// <summary>Injection: the shards' trials in the single run's order — (type in --types order, sentence, category,
    /// trial) — and the summary computed from them.</summary>
    static IReadOnlyList<string> Injection(ShardSet set, string outDir)
    {
        var format = Format(set);
        string ext = TableWriter.Extension(format);
        var types = set.Shards[0].Manifest["options"]!["types"]!.AsArray().Select(t => (string)t!).ToList();
        var trials = set.Shards.SelectMany(s => InjectionWriter.ReadTrials(Path.Combine(s.Folder, "trials" + ext)))
            .OrderBy(t => types.IndexOf(t.Type)).ThenBy(t => t.Sentence).ThenBy(t => t.Category).ThenBy(t => t.Trial).ToList();
        Directory.CreateDirectory(outDir);
        InjectionWriter.WriteTables(outDir, trials, format);
        string sets = Path.Combine(set.Shards[0].Folder, "token_sets.json");
        if (File.Exists(sets)) AtomicFile.WriteText(Path.Combine(outDir, "token_sets.json"), File.ReadAllText(sets));
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["trials"] = trials.Count, ["seconds"] = seconds, ["trials_per_second"] = trials.Count / Math.Max(seconds, 1e-9),
            ["skipped"] = set.Shards[0].Manifest["results"]?["skipped"]?.DeepClone(),
        }));
        return PlannedFiles(set);
    }

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
        long Sum(string key) => set.Shards.Sum(s => (long?)s.Manifest["results"]?[key] ?? 0);
        double seconds = Seconds(set);
        var manifest = Manifest(set, new JsonObject
        {
            ["tokens"] = Sum("tokens"), ["context_windows"] = Sum("context_windows"), ["documents"] = Sum("documents"),
            ["seconds"] = seconds, ["tokens_per_second"] = Sum("tokens") / Math.Max(seconds, 1e-9), ["pair_rows"] = pairRows,
            ["units"] = new JsonArray([.. counters.Select(c => (JsonNode)JsonValue.Create(c.Units)!)]),
            ["counter"] = first["results"]?["counter"]?.DeepClone(), ["counter_bytes"] = first["results"]?["counter_bytes"]?.DeepClone(),
        });
        ScanManifest.Save(outDir, manifest);
        return CoactivationWriter.PlannedFiles(format);
    }
}

using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>The merges of the case-list runs (steer, the experiments, inject): their rows in the single run's order, their
/// summaries computed from them.</summary>
public static partial class ShardMerge
{
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
        if (files.Contains("vectors" + ext)) CopyFrom(set.Shards[0].Folder, outDir, "vectors" + ext);
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["prompts"] = Sum(set, "prompts"), ["rows"] = Sum(set, "rows"), ["interventions"] = Sum(set, "interventions"), ["seconds"] = seconds,
            ["interventions_per_second"] = Sum(set, "interventions") / Math.Max(seconds, 1e-9),
        }));
        return files;
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
        var results = SummedResults(set, "interventions_per_second");
        if (results["interventions"] is JsonValue iv) results["interventions_per_second"] = (long)iv / Math.Max(Seconds(set), 1e-9);
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
        CopyFrom(set.Shards[0].Folder, outDir, "neurons" + ext);
        ScanManifest.Save(outDir, Manifest(set, SummedResults(set, "units")));
        return NeuronExperimentWriter.PlannedFiles(format);
    }

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
        if (File.Exists(Path.Combine(set.Shards[0].Folder, "token_sets.json"))) CopyFrom(set.Shards[0].Folder, outDir, "token_sets.json");
        double seconds = Seconds(set);
        ScanManifest.Save(outDir, Manifest(set, new JsonObject
        {
            ["trials"] = trials.Count, ["seconds"] = seconds, ["trials_per_second"] = trials.Count / Math.Max(seconds, 1e-9),
            ["skipped"] = set.Shards[0].Manifest["results"]?["skipped"]?.DeepClone(),
        }));
        return PlannedFiles(set);
    }
}

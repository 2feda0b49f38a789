using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Stats;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine experiment</c>: the paper's experiments end to end (so far: <c>feature</c>, Fig. 3).</summary>
static class ExperimentCommand
{
    public static Command Create(Io io)
    {
        var cmd = new Command("experiment", "The paper's experiments end to end, from the interference scan's sample to tables of test cases and their statistics.");
        cmd.Subcommands.Add(Feature(io));
        return cmd;
    }

    static Command Feature(Io io)
    {
        var model = Common.Model();
        var sample = new Option<string>("--sample") { Description = "The interference scan's sample.json (polyengine interference --sample): targets and partners per bin", Required = true };
        var records = new Option<string>("--records")
        {
            Description = "The features' activation records: a features run's contexts.parquet, or a folder of Neuronpedia exports <feature>.json (in <sae name>/ when several SAEs)",
            Required = true,
        };
        var sentences = new Option<string>("--sentences") { Description = "Test sentences by token string: {\"<token string>\": [\"sentence\", ...]}", Required = true };
        var saes = new Option<string?>("--saes") { Description = "Comma-separated SAE names of the sample to run (default: all)" };
        var topTokens = new Option<int>("--top-tokens") { Description = "Tokens of T_f tested per target", DefaultValueFactory = _ => 5 };
        var ratio = new Option<double>("--ratio") { Description = "T_f's threshold r (tokens with activation ≥ r·max): 0.5 as the authors' code; the paper says 0.8", DefaultValueFactory = _ => 0.5 };
        var perToken = new Option<int>("--sentences-per-token") { Description = "The first sentences of each token", DefaultValueFactory = _ => 3 };
        var partners = new Option<int>("--partners") { Description = "Partners per bin (the code uses the first sampled one)", DefaultValueFactory = _ => 1 };
        var scales = new Option<string>("--scales") { Description = "'paper' (±{0.5, …, 20}, 32 values) or a list", DefaultValueFactory = _ => "paper" };
        var metrics = new Option<string>("--metrics") { Description = "Metrics (the code's four by default)", DefaultValueFactory = _ => "weighted_cosine,overlap,spearman,kendall" };
        var start = new Option<string>("--best-start")
        {
            Description = "Where best-of-scale starts: zero (the authors' feature loop), baseline (their token loop) or none (the best scale only)",
            DefaultValueFactory = _ => "zero",
        };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random level's vectors", DefaultValueFactory = _ => 50 };
        var denoise = new Option<double?>("--denoise") { Description = "App. O's pre-filter: drop targets whose own direction's mean relative change of the first metric is below this" };
        var budget = Common.RowsBudget();
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): cases, levels and regressions tables, manifest.json", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("feature", Common.WithExamples(
            "The feature-locus experiment (the paper's Fig. 3): per sampled target, its top tokens T_f from its activation records and their test " +
            "sentences; its own decoder direction, the first partner of each interference bin and a random direction, each over the scale grid at " +
            "the SAE's hook; per case the best of each metric and its change; per level conditional-positive and unconditional means; models A and B.",
            "polyengine experiment feature --model gpt2 --sample scan/sample.json --records feats/contexts.parquet --sentences token_sentences.json --out fig3/",
            "polyengine experiment feature --model ./toy --sample s.json --records neuronpedia/ --sentences t.json --top-tokens 3 --denoise 0.05 --format csv --out f/"))
        { model, sample, records, sentences, saes, topTokens, ratio, perToken, partners, scales, metrics, start, seed, denoise, budget, format, output, overwrite, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            var samples = FeatureSample.Load(r.GetValue(sample)!);
            if (r.GetValue(saes) is string names)
            {
                var wanted = names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                foreach (var w in wanted.Where(w => samples.All(s => s.Name != w)))
                    throw new PolyEngineException($"--saes: '{w}' is not in the sample (it has {string.Join(", ", samples.Select(s => s.Name))})");
                samples = samples.Where(s => wanted.Contains(s.Name)).ToList();
            }
            var o = new FeatureExperimentOptions
            {
                TopTokens = r.GetValue(topTokens), Ratio = r.GetValue(ratio), SentencesPerToken = r.GetValue(perToken), Partners = r.GetValue(partners),
                Scales = SteerGrids.Parse(r.GetValue(scales), "--scales", "paper", SteerGrids.PaperScales), Metrics = SteerMetrics.Parse(r.GetValue(metrics)),
                Start = r.GetValue(start) switch
                {
                    "zero" => BestStart.Zero, "baseline" => BestStart.Baseline, "none" => BestStart.None,
                    var x => throw new PolyEngineException($"--best-start {x}: choose zero, baseline or none"),
                },
                Seed = r.GetValue(seed), Denoise = r.GetValue(denoise), RowsBudget = r.GetValue(budget),
            };
            if (!(o.Ratio > 0 && o.Ratio <= 1)) throw new PolyEngineException($"--ratio {o.Ratio}: give a number in (0, 1]");
            var sents = ExperimentInputs.TokenSentences(r.GetValue(sentences)!);
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            var options = new JsonObject
            {
                ["saes"] = new JsonArray(samples.Select(s => (JsonNode)s.Name).ToArray()), ["top_tokens"] = o.TopTokens, ["ratio"] = o.Ratio,
                ["sentences_per_token"] = o.SentencesPerToken, ["partners"] = o.Partners, ["scales"] = new JsonArray(o.Scales.Select(x => (JsonNode)x).ToArray()),
                ["metrics"] = new JsonArray(o.Metrics.Select(x => (JsonNode)x.Name()).ToArray()), ["best_start"] = o.Start.ToString().ToLowerInvariant(),
                ["seed"] = o.Seed, ["denoise"] = o.Denoise, ["format"] = fmt.ToString().ToLowerInvariant(),
                ["readings"] = new JsonObject
                {
                    ["t_f"] = $"get_unique_top_act_tokens(5, {o.Ratio}) as the authors' code (the paper: r = 0.8)",
                    ["best_of_scale"] = $"starts at {o.Start.ToString().ToLowerInvariant()} (the authors' feature loop: zero)",
                    ["partners"] = o.Partners == 1 ? "the first sampled partner per bin, as the code" : $"{o.Partners} partners per bin",
                    ["prompts"] = "sentences without BOS; metrics at the last token; targets T_f with the token under test first",
                },
            };
            var keyInputs = new JsonObject();
            RunKey.AddFolder(keyInputs, "model", m.Folder, "config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json", "vocab.json", "merges.txt");
            RunKey.AddFile(keyInputs, "sample", r.GetValue(sample));
            RunKey.AddFile(keyInputs, "sentences", r.GetValue(sentences));
            if (File.Exists(r.GetValue(records))) RunKey.AddFile(keyInputs, "records", r.GetValue(records));
            else keyInputs["records"] = Path.GetFullPath(r.GetValue(records)!);
            Common.PrepareScanOutput(io, folder, outDir, new RunKey(keyInputs, (JsonObject)options.DeepClone()), r.GetValue(overwrite), $"format={fmt}", ExperimentWriter.PlannedFiles(fmt));
            if (folder.AlreadyComplete) return 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var (cases, report) = new ProgressDisplay(io).Run("experiment feature", job =>
                FeatureExperiment.Run(m, samples, r.GetValue(records)!, sents, o, (done, total) =>
                {
                    double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                    job.Report(new ProgressDisplay.Status(done / (double)Math.Max(1, total), $"{done}/{total} targets", rate > 0 ? (total - done) / rate : null));
                }));
            var manifest = new JsonObject
            {
                ["tool"] = "polyengine experiment feature", ["version"] = typeof(Model).Assembly.GetName().Version!.ToString(), ["created_utc"] = DateTime.UtcNow.ToString("O"),
                ["device"] = note, ["model"] = new JsonObject { ["folder"] = m.Folder, ["config_sha256"] = ScanManifest.Sha256(Path.Combine(m.Folder, "config.json")) },
                ["inputs"] = new JsonObject
                {
                    ["sample"] = Path.GetFullPath(r.GetValue(sample)!), ["records"] = Path.GetFullPath(r.GetValue(records)!), ["sentences"] = Path.GetFullPath(r.GetValue(sentences)!),
                },
                ["options"] = options,
                ["results"] = new JsonObject
                {
                    ["targets"] = report.Targets, ["targets_run"] = report.TargetsRun, ["cases"] = cases.Count, ["seconds"] = clock.Elapsed.TotalSeconds,
                    ["skipped"] = new JsonObject
                    {
                        ["targets_without_records"] = report.TargetsWithoutRecords, ["targets_without_tokens"] = report.TargetsWithoutTokens,
                        ["tokens_without_sentences"] = report.TokensWithoutSentences,
                        ["targets_denoised"] = new JsonArray(report.Denoised.Select(x => (JsonNode)x).ToArray()),
                    },
                },
            };
            var written = ExperimentWriter.Write(outDir, cases, o.Metrics, fmt, manifest);
            folder.Complete(written);
            io.Out.WriteLine($"{report.TargetsRun}/{report.Targets} targets, {cases.Count:N0} cases in {clock.Elapsed.TotalSeconds:F1} s " +
                             $"(skipped: {report.TargetsWithoutRecords} without records, {report.TargetsWithoutTokens} without tokens, {report.TokensWithoutSentences} tokens without sentences, {report.Denoised.Count} denoised)");
            foreach (var l in ExperimentSummary.Levels(cases, o.Metrics).Where(l => l.Metric == o.Metrics[0]))
                io.Out.WriteLine($"  {l.Level,-8} {l.Metric.Name()} relative change: positive-only mean {l.Positive.Mean:+0.000;-0.000} ({l.FractionPositive:P0} positive), all {l.All.Mean:+0.000;-0.000} ± {l.All.StdErr:0.000}");
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }
}

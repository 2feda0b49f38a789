using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Backward;
using PolyEngine.Experiments;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Stats;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine experiment</c>: the paper's experiments end to end (<c>feature</c>, Fig. 3; <c>token</c>, Fig. 4).</summary>
static class ExperimentCommand
{
    public static Command Create(Io io)
    {
        var cmd = new Command("experiment", "The paper's experiments end to end, from the interference scan's sample to tables of test cases and their statistics.");
        cmd.Subcommands.Add(Feature(io));
        cmd.Subcommands.Add(Token(io));
        cmd.Subcommands.Add(NeuronExperimentCommand.Create(io));
        cmd.Subcommands.Add(Prompt(io));
        return cmd;
    }

    /// <summary>The options every steering experiment has, and the run around it: inputs, output folder, manifest, tables.</summary>
    sealed class Shared
    {
        public readonly Option<string> Model = Common.Model();
        public readonly Option<string> Sample = new("--sample") { Description = "The interference scan's sample.json (polyengine interference --sample): targets and partners per bin", Required = true };
        public readonly Option<string> Records = new("--records")
        {
            Description = "The features' activation records: a features run's contexts.parquet, or a folder of Neuronpedia exports <feature>.json (in <sae name>/ when several SAEs)",
            Required = true,
        };
        public readonly Option<string> Sentences = new("--sentences") { Description = "Test sentences by token string: {\"<token string>\": [\"sentence\", ...]}", Required = true };
        public readonly Option<string?> Saes = new("--saes") { Description = "Comma-separated SAE names of the sample to run (default: all)" };
        public readonly Option<int> TopTokens = new("--top-tokens") { Description = "Tokens of T_f tested per target", DefaultValueFactory = _ => 5 };
        public readonly Option<double> Ratio = new("--ratio") { Description = "T_f's threshold r (tokens with activation ≥ r·max): 0.5 as the authors' code; the paper says 0.8", DefaultValueFactory = _ => 0.5 };
        public readonly Option<int> PerToken = new("--sentences-per-token") { Description = "The first sentences of each token", DefaultValueFactory = _ => 3 };
        public readonly Option<string> Scales = new("--scales") { Description = "'paper' (±{0.5, …, 20}, 32 values) or a list", DefaultValueFactory = _ => "paper" };
        public readonly Option<string> Metrics = new("--metrics") { Description = "Metrics (the code's four by default)", DefaultValueFactory = _ => "weighted_cosine,overlap,spearman,kendall" };
        public readonly Option<string> Start;
        public readonly Option<ulong> Seed = new("--seed") { Description = "Seed of the random level's vectors", DefaultValueFactory = _ => 50 };
        public readonly Option<int> Budget = Common.RowsBudget();
        public readonly Option<string> Format = new("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        public readonly Option<string> Output = new("--out", "-o") { Description = "Output folder (created): cases, levels and regressions tables, manifest.json", Required = true };
        public readonly Option<bool> Overwrite = new("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        public readonly Option<string> Shard = new("--shard") { Description = "Run shard i of n of the sample's targets (target k runs in shard k mod n): i/n, slurm (a job array task) or k8s/n (an Indexed Job index); polyengine merge combines the shards", DefaultValueFactory = _ => "0/1" };
        public readonly Option<double> CheckpointEvery = Common.CheckpointEvery();
        public readonly Option<string> Device = Common.Device();
        public readonly Option<int> Threads = Common.Threads();

        readonly bool _steering;

        /// <param name="steering">False for the prompt locus, which has no scales, best-of-scale or random vectors.</param>
        public Shared(string startDefault, string startNote, bool steering = true)
        {
            _steering = steering;
            Start = new("--best-start")
            {
                Description = $"Where best-of-scale starts: zero, baseline or none (the best scale only); {startNote}",
                DefaultValueFactory = _ => startDefault,
            };
        }

        public void AddTo(Command c)
        {
            Option[] steering = _steering ? [Scales, Start, Seed, Budget] : [];
            Option[] all = [Model, Sample, Records, Sentences, Saes, TopTokens, Ratio, PerToken, Metrics, .. steering, Format, Output, Overwrite, Shard, CheckpointEvery, Device, Threads];
            foreach (var o in all) c.Options.Add(o);
        }

        public BestStart ParseStart(ParseResult r) => r.GetValue(Start) switch
        {
            "zero" => BestStart.Zero, "baseline" => BestStart.Baseline, "none" => BestStart.None,
            var x => throw new PolyEngineException($"--best-start {x}: choose zero, baseline or none"),
        };

        public IReadOnlyList<SaeSample> LoadSamples(ParseResult r)
        {
            var samples = FeatureSample.Load(r.GetValue(Sample)!);
            if (r.GetValue(Saes) is not string names) return samples;
            var wanted = names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var w in wanted.Where(w => samples.All(s => s.Name != w)))
                throw new PolyEngineException($"--saes: '{w}' is not in the sample (it has {string.Join(", ", samples.Select(s => s.Name))})");
            return samples.Where(s => wanted.Contains(s.Name)).ToList();
        }

        /// <summary>Checks, opens the output, runs the experiment's per-target work (<paramref name="target"/>) through
        /// <see cref="ExperimentDriver"/> — one shard, checkpointed, with progress — and writes the tables and manifest.</summary>
        public int Run(Io io, ParseResult r, string tool, IReadOnlyList<SaeSample> samples, IReadOnlyList<SteerMetric> metrics, JsonObject options,
            Func<PolyEngine.Model, IReadOnlyDictionary<string, string[]>, Func<SaeSample, SampleTarget, TargetOutcome>> target)
        {
            if (!(r.GetValue(Ratio) > 0 && r.GetValue(Ratio) <= 1)) throw new PolyEngineException($"--ratio {r.GetValue(Ratio)}: give a number in (0, 1]");
            var shard = PolyEngine.Shard.Parse(r.GetValue(Shard)!);
            var work = ExperimentDriver.Work(samples, shard);
            string outDir = r.GetValue(Output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(Format)!);
            var every = Common.Interval(r.GetValue(CheckpointEvery));
            var sents = ExperimentInputs.TokenSentences(r.GetValue(Sentences)!);
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(Device)!, r.GetValue(Threads), out string note);
            using var m = PolyEngine.Model.Load(r.GetValue(Model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            options["saes"] = new JsonArray(samples.Select(s => (JsonNode)s.Name).ToArray());
            options["shard"] = shard.ToString();
            options["format"] = fmt.ToString().ToLowerInvariant();
            var keyInputs = new JsonObject();
            RunKey.AddModel(keyInputs, m);
            RunKey.AddFile(keyInputs, "sample", r.GetValue(Sample));
            RunKey.AddFile(keyInputs, "sentences", r.GetValue(Sentences));
            if (File.Exists(r.GetValue(Records))) RunKey.AddFile(keyInputs, "records", r.GetValue(Records));
            else keyInputs["records"] = Path.GetFullPath(r.GetValue(Records)!);
            Common.PrepareScanOutput(io, folder, outDir, new RunKey(keyInputs, (JsonObject)options.DeepClone()), r.GetValue(Overwrite), $"format={fmt}", ExperimentWriter.PlannedFiles(fmt));
            if (folder.AlreadyComplete) return 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = new ProgressDisplay(io).Run(tool, job => ExperimentDriver.Run(work, target(m, sents), folder.Checkpoint(every), (done, total) =>
            {
                double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                job.Report(new ProgressDisplay.Status(done / (double)Math.Max(1, total), $"{done}/{total} targets", rate > 0 ? (total - done) / rate : null));
            }, done => job.Say($"resuming: {done} targets were run by an earlier run")));
            var results = new JsonObject { ["targets"] = work.Count, ["cases"] = result.Cases.Count, ["seconds"] = result.Seconds };
            foreach (var (k, v) in result.Counts.OrderBy(x => x.Key, StringComparer.Ordinal)) results[k] = v;
            if (result.Counts.TryGetValue("interventions", out int n)) results["interventions_per_second"] = n / Math.Max(result.Seconds, 1e-9);
            var manifest = ScanManifest.Header($"polyengine {tool}", m, note, new JsonObject
            {
                ["inputs"] = new JsonObject
                {
                    ["sample"] = Path.GetFullPath(r.GetValue(Sample)!), ["records"] = Path.GetFullPath(r.GetValue(Records)!), ["sentences"] = Path.GetFullPath(r.GetValue(Sentences)!),
                },
                ["options"] = options,
                ["results"] = results,
            });
            var written = ExperimentWriter.Write(outDir, result.Cases, metrics, fmt, manifest);
            folder.Complete(written);
            string counts = string.Join(", ", result.Counts.Where(x => x.Key != "targets_run" && x.Value > 0).OrderBy(x => x.Key, StringComparer.Ordinal).Select(x => $"{x.Key.Replace('_', ' ')} {x.Value}"));
            io.Out.WriteLine($"{result.Counts.GetValueOrDefault("targets_run")}/{work.Count} targets run, {result.Cases.Count:N0} cases in {result.Seconds:F1} s{(counts.Length > 0 ? $" ({counts})" : "")}");
            foreach (var l in ExperimentSummary.Levels(result.Cases, metrics).Where(l => l.Metric == metrics[0]))
                io.Out.WriteLine($"  {l.Level,-8} {l.Metric.Name()} relative change: positive-only mean {l.Positive.Mean:+0.000;-0.000} ({l.FractionPositive:P0} positive), all {l.All.Mean:+0.000;-0.000} ± {l.All.StdErr:0.000}");
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        }

        public JsonObject Options(ParseResult r, IReadOnlyList<float> scales, IReadOnlyList<SteerMetric> metrics, BestStart start) => new()
        {
            ["top_tokens"] = r.GetValue(TopTokens), ["ratio"] = r.GetValue(Ratio), ["sentences_per_token"] = r.GetValue(PerToken),
            ["scales"] = new JsonArray(scales.Select(x => (JsonNode)x).ToArray()), ["metrics"] = new JsonArray(metrics.Select(x => (JsonNode)x.Name()).ToArray()),
            ["best_start"] = start.ToString().ToLowerInvariant(), ["seed"] = r.GetValue(Seed),
        };
    }

    static Command Feature(Io io)
    {
        var s = new Shared("zero", "zero as the authors' feature loop");
        var partners = new Option<int>("--partners") { Description = "Partners per bin (the code uses the first sampled one)", DefaultValueFactory = _ => 1 };
        var denoise = new Option<double?>("--denoise") { Description = "App. O's pre-filter: drop targets whose own direction's mean relative change of the first metric is below this" };
        var cmd = new Command("feature", Common.WithExamples(
            "The feature-locus experiment (the paper's Fig. 3): per sampled target, its top tokens T_f from its activation records and their test " +
            "sentences; its own decoder direction, the first partner of each interference bin and a random direction, each over the scale grid at " +
            "the SAE's hook; per case the best of each metric and its change; per level conditional-positive and unconditional means; models A and B.",
            "polyengine experiment feature --model gpt2 --sample scan/sample.json --records feats/contexts.parquet --sentences token_sentences.json --out fig3/",
            "polyengine experiment feature --model ./toy --sample s.json --records neuronpedia/ --sentences t.json --top-tokens 3 --denoise 0.05 --format csv --out f/"))
        { partners, denoise };
        s.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var samples = s.LoadSamples(r);
            var o = new FeatureExperimentOptions
            {
                TopTokens = r.GetValue(s.TopTokens), Ratio = r.GetValue(s.Ratio), SentencesPerToken = r.GetValue(s.PerToken), Partners = r.GetValue(partners),
                Scales = SteerGrids.Parse(r.GetValue(s.Scales), "--scales", "paper", SteerGrids.PaperScales), Metrics = SteerMetrics.Parse(r.GetValue(s.Metrics)),
                Start = s.ParseStart(r), Seed = r.GetValue(s.Seed), Denoise = r.GetValue(denoise), RowsBudget = r.GetValue(s.Budget),
            };
            var options = s.Options(r, o.Scales, o.Metrics, o.Start);
            options["partners"] = o.Partners;
            options["denoise"] = o.Denoise;
            options["readings"] = new JsonObject
            {
                ["t_f"] = $"get_unique_top_act_tokens(5, {o.Ratio}) as the authors' code (the paper: r = 0.8)",
                ["best_of_scale"] = $"starts at {o.Start.ToString().ToLowerInvariant()} (the authors' feature loop: zero)",
                ["partners"] = o.Partners == 1 ? "the first sampled partner per bin, as the code" : $"{o.Partners} partners per bin",
                ["prompts"] = "sentences without BOS; metrics at the last token; targets T_f with the token under test first",
            };
            return s.Run(io, r, "experiment feature", samples, o.Metrics, options, (m, sents) => FeatureExperiment.Target(m, r.GetValue(s.Records)!, sents, o));
        });
        return cmd;
    }

    static Command Token(Io io)
    {
        var s = new Shared("baseline", "baseline as the authors' token loop");
        var recipe = new Option<string>("--recipe") { Description = "Gradient vectors: tl (the authors' TransformerLens path, positions ≥ 0.8·max) or hf (first sub-token of the strongest token)", DefaultValueFactory = _ => "tl" };
        var cmd = new Command("token", Common.WithExamples(
            "The token-locus experiment (the paper's Fig. 4): attention- and MLP-output SAEs only, as the code. Each feature's gradient vectors " +
            "(one per top token, from the record where it is strongest); per target and test token its own vector, every vector of every sampled " +
            "partner per bin and a random direction, best over vectors × scales from the baseline; the same tables as experiment feature.",
            "polyengine experiment token --model gpt2 --sample scan/sample.json --records feats/contexts.parquet --sentences token_sentences.json --out fig4/"))
        { recipe };
        s.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var samples = s.LoadSamples(r);
            var o = new TokenExperimentOptions
            {
                TopTokens = r.GetValue(s.TopTokens), Ratio = r.GetValue(s.Ratio), SentencesPerToken = r.GetValue(s.PerToken),
                Scales = SteerGrids.Parse(r.GetValue(s.Scales), "--scales", "paper", SteerGrids.PaperScales), Metrics = SteerMetrics.Parse(r.GetValue(s.Metrics)),
                Start = s.ParseStart(r), Seed = r.GetValue(s.Seed), RowsBudget = r.GetValue(s.Budget),
                Recipe = r.GetValue(recipe) switch { "tl" => GradientRecipe.TransformerLens, "hf" => GradientRecipe.HuggingFace, var x => throw new PolyEngineException($"--recipe {x}: choose tl or hf") },
            };
            var options = s.Options(r, o.Scales, o.Metrics, o.Start);
            options["recipe"] = r.GetValue(recipe);
            options["readings"] = new JsonObject
            {
                ["sites"] = "hook_attn_out and hook_mlp_out SAEs only, as the code",
                ["vectors"] = "per feature one gradient vector per top token, from the record where that token is strongest; HF weights, objective Σ_d a[p, d]",
                ["best_of_scale"] = $"over each level's vectors × scales, starting at {o.Start.ToString().ToLowerInvariant()} (the authors' token loop: baseline)",
                ["bins"] = "every vector of every sampled partner; the case's partner is the bin's first, interference and similarity the partners' means",
            };
            return s.Run(io, r, "experiment token", samples, o.Metrics, options, (m, sents) => TokenExperiment.Target(m, r.GetValue(s.Records)!, sents, o));
        });
        return cmd;
    }

    static Command Prompt(Io io)
    {
        var s = new Shared("none", "", steering: false);
        var partners = new Option<int>("--partners") { Description = "Partners per bin (the first sampled one by default)", DefaultValueFactory = _ => 1 };
        var window = new Option<int>("--window") { Description = "The snippet: tokens either side of the strongest token of the feature's strongest record", DefaultValueFactory = _ => 5 };
        var cmd = new Command("prompt", Common.WithExamples(
            "The feature-level prompt injection (the paper's Fig. 5): per sampled target and test sentence, the sentence with a feature's activation " +
            "snippet (±--window tokens around its strongest token, wrapped in **) in front — the target's own (self) and the first partner of each bin " +
            "(0.0-0.1 is the random baseline) — against the plain sentence; the same tables as experiment feature.",
            "polyengine experiment prompt --model gpt2 --sample scan/sample.json --records feats/contexts.parquet --sentences token_sentences.json --out fig5/"))
        { partners, window };
        s.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var samples = s.LoadSamples(r);
            var o = new PromptExperimentOptions
            {
                TopTokens = r.GetValue(s.TopTokens), Ratio = r.GetValue(s.Ratio), SentencesPerToken = r.GetValue(s.PerToken), Partners = r.GetValue(partners),
                Window = r.GetValue(window), Metrics = SteerMetrics.Parse(r.GetValue(s.Metrics)),
            };
            var options = new JsonObject
            {
                ["top_tokens"] = o.TopTokens, ["ratio"] = o.Ratio, ["sentences_per_token"] = o.SentencesPerToken, ["partners"] = o.Partners, ["window"] = o.Window,
                ["metrics"] = new JsonArray(o.Metrics.Select(x => (JsonNode)x.Name()).ToArray()),
                ["readings"] = new JsonObject
                {
                    ["snippet"] = $"the strongest record's tokens within ±{o.Window} of its strongest token, joined, wrapped in ** (the authors hand-tuned theirs; not released)",
                    ["prompt"] = "snippet + \" \" + sentence, without BOS; metrics at the last token against the plain sentence's",
                    ["baseline_level"] = "the 0.0-0.1 bin plays the random baseline, as in the paper",
                },
            };
            return s.Run(io, r, "experiment prompt", samples, o.Metrics, options, (m, sents) => PromptExperiment.Target(m, r.GetValue(s.Records)!, sents, o));
        });
        return cmd;
    }
}

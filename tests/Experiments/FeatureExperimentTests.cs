using System.Text.Json.Nodes;
using PolyEngine.Backward;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Models;
using PolyEngine.Stats;
using PolyEngine.Toys;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Experiments;

/// <summary>
/// The feature-locus experiment on a toy model and SAE with a synthetic sample, records and sentences: T_f by the code's
/// rule, the case grid, a case's best weighted cosine against steered forward passes computed here from the definition,
/// counted skips, the CLI's tables and manifest, and one-line errors.
/// </summary>
public class FeatureExperimentTests : IClassFixture<FeatureExperimentTests.World>
{
    /// <summary>A 2-layer full-vocabulary GPT-2 toy, an SAE at blocks.1.hook_resid_post, and the experiment's input files.</summary>
    public sealed class World : IDisposable
    {
        readonly Fixtures.TempDir _dir = new();
        public string Root => _dir.Path;
        public string Model => Path.Combine(Root, "model");
        public string Sae => Path.Combine(Root, "sae");
        public string Sample => Path.Combine(Root, "sample.json");
        public string SaeMlp => Path.Combine(Root, "sae-mlp");
        public string SampleMlp => Path.Combine(Root, "sample-mlp.json");
        public static readonly HookName MlpHook = HookName.Parse("blocks.1.hook_mlp_out");
        public string Records => Path.Combine(Root, "records");
        public string Sentences => Path.Combine(Root, "sentences.json");
        public static readonly HookName Hook = HookName.Parse("blocks.1.hook_resid_post");

        public World()
        {
            ToyModels.Write(ToyModels.Preset(ModelFamily.Gpt2, "tiny"), 9, Model);
            ToySae.Write(Sae, Hook, 64, 32, SaeArchitecture.Standard, 4);
            ToySae.Write(SaeMlp, MlpHook, 64, 32, SaeArchitecture.Standard, 6);
            JsonObject Bins(params int[] partners) => new(PolyEngine.Scans.InterferenceBins.Keys.Select((k, b) => new KeyValuePair<string, JsonNode?>(k, new JsonObject
            {
                ["candidates"] = 3, ["partners"] = new JsonArray(partners.Skip(b).Take(1).Select(p => (JsonNode)new JsonObject { ["feature"] = p, ["cosine"] = 0.05 + 0.1 * b, ["similarity"] = 0.1 }).ToArray()),
            })));
            JsonObject SampleOf(string folder, HookName hook) => new()
            {
                ["seed"] = 1, ["bins"] = new JsonArray(PolyEngine.Scans.InterferenceBins.Keys.Select(k => (JsonNode)k).ToArray()),
                ["saes"] = new JsonArray(new JsonObject
                {
                    ["sae"] = "sae", ["folder"] = folder, ["hook"] = hook.ToString(), ["d_sae"] = 32,
                    ["taus"] = new JsonArray(new JsonObject
                    {
                        ["tau"] = 0.2, ["qualified"] = 3,
                        ["targets"] = new JsonArray(
                            new JsonObject { ["feature"] = 3, ["bins"] = Bins(10, 11, 12, 13, 14) },
                            new JsonObject { ["feature"] = 7, ["bins"] = Bins(20, 21, 22, 23, 24) },
                            new JsonObject { ["feature"] = 9, ["bins"] = Bins(1, 2, 4, 5, 6) }),   // no records: skipped
                    }),
                }),
            };
            File.WriteAllText(Sample, SampleOf(Sae, Hook).ToJsonString());
            File.WriteAllText(SampleMlp, SampleOf(SaeMlp, MlpHook).ToJsonString());
            Directory.CreateDirectory(Records);
            File.WriteAllText(Path.Combine(Records, "3.json"), """
                {"activations": [{"tokens": [" Paris", " is", " nice"], "values": [2.0, 0.1, 0.3]},
                                 {"tokens": [" London", " Paris", " rain"], "values": [1.5, 1.0, 0.9]}]}
                """);
            File.WriteAllText(Path.Combine(Records, "7.json"), """{"activations": [{"tokens": [" red", " blue", " sky"], "values": [1.0, 0.8, 0.2]}]}""");
            // Partners' records (the token locus needs their gradient vectors).
            foreach (int f in new[] { 10, 11, 12, 13, 14, 20, 21, 22, 23, 24 })
                File.WriteAllText(Path.Combine(Records, $"{f}.json"), $$"""{"activations": [{"tokens": [" a", " b{{f}}", " c"], "values": [0.2, 1.0, 0.9]}, {"tokens": [" d", " c"], "values": [0.1, 1.5]}]}""");
            File.WriteAllText(Sentences, """
                {" Paris": ["I went to", "The city of", "We flew to", "Fourth"], " London": ["She lives in"], " red": ["The apple is"]}
                """);
        }

        /// <summary>The neuron experiment's inputs for the 32-feature SAE in <paramref name="dir"/>: records/ (even features
        /// on " Paris", odd on " red") and e.jsonl (toy explanations in 4 topics).</summary>
        internal static void WriteNeuronInputs(Fixtures.TempDir dir)
        {
            Directory.CreateDirectory(dir.File("records"));
            for (int f = 0; f < 32; f++)
                File.WriteAllText(dir.File($"records/{f}.json"), f % 2 == 0
                    ? """{"activations": [{"tokens": [" Paris", " is"], "values": [1.0, 0.1]}]}"""
                    : """{"activations": [{"tokens": [" sky", " red"], "values": [0.2, 1.0]}]}""");
            PolyEngine.Toys.ToyExplanations.Write(dir.File("e.jsonl"), 32, dim: 16, topics: 4, seed: 3);
        }

        public void Dispose() => _dir.Dispose();
    }

    readonly World _w;
    public FeatureExperimentTests(World w) => _w = w;

    [Fact]
    public void TopTokensFollowTheCodesRule()
    {
        using var m = Model.Load(_w.Model);
        var records = ActivationRecords.Load(Path.Combine(_w.Records, "3.json"));
        // max per unique string: Paris 2.0, London 1.5, rain 0.9, nice 0.3, is 0.1; top 5; r = 0.5 drops those below 1.0.
        Assert.Equal([" Paris", " London"], TopTokens.Of(records, m, 5, 0.5).Select(t => t.Text));
        Assert.Equal([" Paris", " London", " rain"], TopTokens.Of(records, m, 5, 0.4).Select(t => t.Text));
        Assert.Equal(m.Tokenizer.Encode(" London")[0], TopTokens.Of(records, m)[1].Id);
        Assert.Equal([" Paris"], TopTokens.Of(records, m, 1, 0.1).Select(t => t.Text));
    }

    [Fact]
    public void CasesHoldTheBestOfTheStepsComputedFromTheDefinition()
    {
        using var m = Model.Load(_w.Model);
        var samples = FeatureSample.Load(_w.Sample);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        float[] scales = [-4, 2, 8];
        var o = new FeatureExperimentOptions { Scales = scales };
        var (cases, counts, _) = FeatureExperiment.Run(m, samples, _w.Records, sentences, o);
        Assert.Equal((2, 1, 1), (counts["targets_run"], counts["targets_without_records"], counts["tokens_without_sentences"]));
        // Target 3: T_f = Paris (3 of its 4 sentences), London (1); target 7: red (1), blue (in T_f: 0.8 ≥ 0.5·1.0, but it has
        // no sentences: counted, not run).
        Assert.Equal((3 + 1 + 1) * 7, cases.Count);   // × (self, five bins, rand)
        Assert.Equal(cases.Count * scales.Length, counts["interventions"]);   // each case's prompt and level steered at every scale
        Assert.Equal(["self", .. PolyEngine.Scans.InterferenceBins.Keys, "rand"], cases.Where(c => c.Target == 3 && c.Token == " Paris" && c.Sentence == 0).Select(c => c.Level));

        // One case by hand: target 3, level 0.2-0.3 (partner 12), " Paris", sentence 1, weighted cosine over the whole vocabulary.
        var c = cases.Single(x => x.Target == 3 && x.Level == "0.2-0.3" && x.Token == " Paris" && x.Sentence == 1);
        Assert.Equal((12, 0.25, 0.1), (c.Partner, Math.Round(c.Interference, 6), c.Similarity));
        var cfg = PolyEngine.SaeConfig.Load(_w.Sae);
        var row = PolyEngine.SparseAutoencoder.ReadDecoder(cfg).AsSpan(12 * 64, 64).ToArray();
        double norm = Math.Sqrt(row.Sum(x => (double)x * x));
        var ids = m.Encode("The city of", prependBos: false);
        int[] targets = [m.Tokenizer.Encode(" Paris")[0], m.Tokenizer.Encode(" London")[0]];
        var weights = WeightedCosineWeights(m, targets);
        double Weighted(float scale)
        {
            var add = Enumerable.Range(0, ids.Length).SelectMany(_ => row.Select(x => (float)(scale * x / norm))).ToArray();
            var r = m.Run([ids], new RunOptions { Edits = [new HookEdit(World.Hook) { Add = add }], Logits = LogitsMode.LastPosition });
            var logits = r.Logits!.Data;
            double max = logits.Max(x => (double)x), z = logits.Sum(x => Math.Exp(x - max));
            return Enumerable.Range(0, logits.Length).Sum(t => Math.Exp(logits[t] - max) / z * weights[t]);
        }
        double baseline = Weighted(0);
        var best = BestOfScale.Of(scales.Select(Weighted).ToList(), byMagnitude: false, BestStart.Zero);
        Assert.Equal(baseline, c.Baseline[0], 4);
        Assert.Equal(best.Value, c.Best[0], 4);
        Assert.Equal(best.Value - baseline, c.Delta[0], 4);
        Assert.Equal((best.Value - baseline) / Math.Abs(baseline), c.Relative[0], 3);
    }

    /// <summary>max over the targets of cos(E_t, E_u) for every token t, from the model's token embeddings in double.</summary>
    static double[] WeightedCosineWeights(Model m, int[] targets)
    {
        int d = m.Spec.DModel, v = m.Spec.DVocab;
        var all = Enumerable.Range(0, v).ToArray();
        using var f = SafeTensorsFile.Open(Path.Combine(m.Folder, "model.safetensors"));
        var e = f.ReadFloat32(f.Tensors.Single(t => t.Name.EndsWith("wte.weight")).Name);   // W_E [d_vocab, d_model]
        double Norm(int t) => Math.Sqrt(Enumerable.Range(0, d).Sum(i => (double)e[t * d + i] * e[t * d + i]));
        double Cos(int a, int b) => Enumerable.Range(0, d).Sum(i => (double)e[a * d + i] * e[b * d + i]) / (Norm(a) * Norm(b));
        return [.. all.Select(t => targets.Max(u => Cos(t, u)))];
    }

    [Fact]
    public void TheCliWritesCasesLevelsRegressionsAndAManifest()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("experiment", "feature", "--model", _w.Model, "--sample", _w.Sample, "--records", _w.Records, "--sentences", _w.Sentences,
            "--scales", "-2,2", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains("2/3 targets run, 35 cases", stdout);
        Assert.Contains("targets without records 1", stdout);
        var cases = File.ReadAllLines(dir.File("out/cases.csv"));
        Assert.Equal(36, cases.Length);
        Assert.StartsWith("sae,hook,tau,target,level,partner,interference,similarity,token,token_id,sentence,weighted_cosine_baseline,weighted_cosine_best,weighted_cosine_best_scale", cases[0]);
        var levels = File.ReadAllLines(dir.File("out/levels.csv"));
        Assert.Equal(1 + 7 * 4, levels.Length);   // levels × metrics
        Assert.True(File.Exists(dir.File("out/regressions.csv")));
        var manifest = JsonNode.Parse(File.ReadAllText(dir.File("out/manifest.json")))!;
        Assert.Equal(1, (int)manifest["results"]!["targets_without_records"]!);
        Assert.Contains("zero", (string)manifest["options"]!["readings"]!["best_of_scale"]!);
    }

    [Theory]
    [InlineData("--ratio", "0", "--ratio 0")]
    [InlineData("--best-start", "middle", "--best-start middle: choose zero, baseline or none")]
    [InlineData("--saes", "other", "--saes: 'other' is not in the sample")]
    [InlineData("--sample", "missing.json", "file not found")]
    public void BadRequestsAreOneLine(string option, string value, string expected)
    {
        using var dir = new Fixtures.TempDir();
        string[] args = ["experiment", "feature", "--model", _w.Model, "--sample", _w.Sample, "--records", _w.Records, "--sentences", _w.Sentences, "--out", dir.File("out")];
        int at = Array.IndexOf(args, option);
        args = at >= 0 ? [.. args.Take(at + 1), value, .. args.Skip(at + 2)] : [.. args, option, value];
        var (code, _, stderr) = Run(args);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Fact]
    public void ASampleForAnotherSaeIsRefused()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("s.json"), File.ReadAllText(_w.Sample).Replace("\"d_sae\":32", "\"d_sae\":48"));
        var (code, _, stderr) = Run("experiment", "feature", "--model", _w.Model, "--sample", dir.File("s.json"), "--records", _w.Records, "--sentences", _w.Sentences, "--out", dir.File("out"));
        Assert.NotEqual(0, code);
        Assert.Contains("is the sample for another SAE", stderr);
    }

    [Fact]
    public void TheTokenLocusPoolsEachBinsVectorsFromTheBaseline()
    {
        using var m = Model.Load(_w.Model);
        var samples = FeatureSample.Load(_w.SampleMlp);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        float[] scales = [-3, 5];
        var o = new TokenExperimentOptions { Scales = scales, Metrics = [SteerMetric.WeightedCosine, SteerMetric.Spearman] };
        var (cases, counts, _) = TokenExperiment.Run(m, samples, _w.Records, sentences, o);
        Assert.Equal((2, 0, 1), (counts["targets_run"], counts.GetValueOrDefault("targets_at_other_sites"), counts["targets_without_records"]));
        Assert.Equal(2 + 2, counts["target_vectors"]);   // targets 3 and 7: a vector per top token
        Assert.Equal(0, counts.GetValueOrDefault("partners_without_vectors"));
        // Shards add up to the whole run, counts included.
        var shards = Enumerable.Range(0, 2).Select(i => TokenExperiment.Run(m, samples, _w.Records, sentences, o, work: ExperimentDriver.Work(samples, new Shard(i, 2)))).ToList();
        Assert.Equal(cases.Count, shards.Sum(x => x.Cases.Count));
        foreach (var (k, v) in counts) Assert.Equal(v, shards.Sum(x => x.Counts.GetValueOrDefault(k)));
        var paris = cases.Where(c => c.Target == 3 && c.Token == " Paris" && c.Sentence == 0).ToList();
        Assert.Equal(["self", .. PolyEngine.Scans.InterferenceBins.Keys, "rand"], paris.Select(c => c.Level));
        Assert.All(cases, c => Assert.True(c.Best[0] >= c.Baseline[0]));   // from the baseline: never below it

        // The bin 0.1-0.2 pools partner 11's two vectors: its best is the best of each vector's own sweep, or the baseline.
        var records = ActivationRecords.Load(Path.Combine(_w.Records, "11.json"));
        var tokens = TopTokens.Of(records, m).ToList();
        Assert.Equal([" c", " b11"], tokens.Select(t => t.Text));
        var vectors = GradientVectors.FromRecords(m, [records[1], records[0]], World.MlpHook, new GradientVectorOptions()).Select(v => v.Vector!).ToList();
        var ids = cases.First(c => c.Target == 3 && c.Token == " Paris").TokenId;
        int london = m.Tokenizer.Encode(" London")[0];
        var plan = new SteerPlan
        {
            Hook = World.MlpHook, Prompts = [new SteerPrompt(m.Encode("I went to", prependBos: false), [ids, london])], Vectors = vectors, Scales = scales,
            Metrics = o.Metrics,
        };
        var alone = SteerSweep.Collect(m, plan).Best();
        var bin = paris.Single(c => c.Level == "0.1-0.2");
        Assert.Equal(11, bin.Partner);
        Assert.Equal(Math.Max(bin.Baseline[0], alone.Where(b => b.Metric == SteerMetric.WeightedCosine).Max(b => b.Best)), bin.Best[0], 6);
        double spearman = alone.Where(b => b.Metric == SteerMetric.Spearman).MaxBy(b => Math.Abs(b.Best))!.Best;
        Assert.Equal(Math.Abs(spearman) > Math.Abs(bin.Baseline[1]) ? spearman : bin.Baseline[1], bin.Best[1], 6);
    }

    [Fact]
    public void TheTokenCliSkipsSitesTheCodeSkips()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("experiment", "token", "--model", _w.Model, "--sample", _w.Sample, "--records", _w.Records, "--sentences", _w.Sentences,
            "--scales", "2", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains("0/3 targets run, 0 cases", stdout);
        Assert.Contains("targets at other sites 3", stdout);
        var manifest = JsonNode.Parse(File.ReadAllText(dir.File("out/manifest.json")))!;
        Assert.Equal(3, (int)manifest["results"]!["targets_at_other_sites"]!);
        Assert.Contains("baseline", (string)manifest["options"]!["readings"]!["best_of_scale"]!);
        Assert.NotEmpty(manifest["notes"]!.AsArray());   // no regression could be fitted on no cases, and it says so
        (code, stdout, stderr) = Run("experiment", "token", "--model", _w.Model, "--sample", _w.SampleMlp, "--records", _w.Records, "--sentences", _w.Sentences,
            "--scales", "2", "--metrics", "weighted_cosine", "--format", "csv", "--out", dir.File("mlp"));
        Assert.True(code == 0, stderr);
        Assert.Contains("2/3 targets run", stdout);
        Assert.Equal(1 + 5 * 7, File.ReadAllLines(dir.File("mlp/cases.csv")).Length);
    }

    [Fact]
    public void ShardsPartitionTheTargetsAndAKilledRunResumes()
    {
        using var dir = new Fixtures.TempDir();
        using var m = Model.Load(_w.Model);
        var samples = FeatureSample.Load(_w.Sample);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        var o = new FeatureExperimentOptions { Scales = [2], Metrics = [SteerMetric.WeightedCosine] };
        var whole = FeatureExperiment.Run(m, samples, _w.Records, sentences, o);
        // Shards: each target once, and their cases together are the whole run's.
        var shards = Enumerable.Range(0, 2).Select(i => FeatureExperiment.Run(m, samples, _w.Records, sentences, o, work: ExperimentDriver.Work(samples, new Shard(i, 2)))).ToList();
        Assert.Equal(whole.Cases.Count, shards.Sum(x => x.Cases.Count));
        Assert.Equal(whole.Cases.Select(c => (c.Target, c.Level, c.Token, c.Sentence, c.Best[0])).Order(),
            shards.SelectMany(x => x.Cases).Select(c => (c.Target, c.Level, c.Token, c.Sentence, c.Best[0])).Order());
        // Killed after its first target, then rerun: the same cases and counts.
        var checkpoint = new PolyEngine.Scans.ScanCheckpoint { Path = dir.File("checkpoint.safetensors"), RunKey = "fx", Every = TimeSpan.Zero };
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => FeatureExperiment.Run(m, samples, _w.Records, sentences, o, (done, _) => { if (done == 1) cancel.Cancel(); }, checkpoint, cancel: cancel.Token));
        var resumed = FeatureExperiment.Run(m, samples, _w.Records, sentences, o, checkpoint: checkpoint);
        Assert.Equal(whole.Counts.OrderBy(x => x.Key), resumed.Counts.OrderBy(x => x.Key));
        Assert.Equal(whole.Cases.Count, resumed.Cases.Count);
        for (int i = 0; i < whole.Cases.Count; i++)
        {
            var (a, b) = (whole.Cases[i], resumed.Cases[i]);
            Assert.Equal((a.Sae, a.Hook, a.Target, a.Level, a.Partner, a.Token, a.TokenId, a.Sentence), (b.Sae, b.Hook, b.Target, b.Level, b.Partner, b.Token, b.TokenId, b.Sentence));
            Assert.Equal(a.Best, b.Best);
            Assert.Equal(a.Relative, b.Relative);
            Assert.Equal(a.Interference, b.Interference);   // NaN (rand) survives the checkpoint too
        }
        Assert.Contains("--shard 2/2", Assert.Throws<PolyEngineException>(() => ExperimentDriver.Work(samples, new Shard(2, 2))).Message);
    }

    [Fact]
    public void ThePromptLocusPrependsEachLevelsSnippet()
    {
        using var m = Model.Load(_w.Model);
        var records = ActivationRecords.Load(Path.Combine(_w.Records, "3.json"));
        Assert.Equal("**Paris is nice**", PromptExperiment.Snippet(records, 5));   // record 0 holds the strongest value (2.0)
        Assert.Equal("**Paris is**", PromptExperiment.Snippet(records, 1));
        var samples = FeatureSample.Load(_w.Sample);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        var o = new PromptExperimentOptions { Metrics = [SteerMetric.WeightedCosine, SteerMetric.Overlap] };
        var (cases, counts, _) = PromptExperiment.Run(m, samples, _w.Records, sentences, o);
        Assert.Equal(2, counts["targets_run"]);
        Assert.Equal((3 + 1 + 1) * 6, cases.Count);   // tests × (self + five bins); no random level
        var c = cases.Single(x => x.Target == 3 && x.Level == "0.3-0.4" && x.Token == " London");
        Assert.Equal(13, c.Partner);
        string snippet = PromptExperiment.Snippet(ActivationRecords.Load(Path.Combine(_w.Records, "13.json")), 5)!;
        int[] targets = [m.Tokenizer.Encode(" London")[0], m.Tokenizer.Encode(" Paris")[0]];
        var weights = WeightedCosineWeights(m, targets);
        double Weighted(string text)
        {
            var logits = m.Run([m.Encode(text, prependBos: false)], new RunOptions { Logits = LogitsMode.LastPosition }).Logits!.Data;
            double max = logits.Max(x => (double)x), z = logits.Sum(x => Math.Exp(x - max));
            return Enumerable.Range(0, logits.Length).Sum(t => Math.Exp(logits[t] - max) / z * weights[t]);
        }
        Assert.Equal(Weighted("She lives in"), c.Baseline[0], 5);
        Assert.Equal(Weighted(snippet + " She lives in"), c.Best[0], 5);
        Assert.True(float.IsNaN(c.BestScale[0]));
        // Baselines() equals a sweep's baseline rows.
        var prompts = new[] { new SteerPrompt(m.Encode("I went to", prependBos: false), targets), new SteerPrompt(m.Encode("The capital of a big country is", prependBos: false), targets) };
        var sweep = SteerSweep.Collect(m, new SteerPlan { Hook = World.Hook, Prompts = prompts, Vectors = [new float[64].Select((_, i) => (float)i).ToArray()], Scales = [1], Metrics = o.Metrics });
        var alone = SteerSweep.Baselines(m, prompts, o.Metrics);
        Assert.Equal(sweep.Rows.Where(r => r.IsBaseline).Select(r => r.Metrics), alone.Select(r => r.Metrics), (a, b) => a.Zip(b).All(x => Math.Abs(x.First - x.Second) < 1e-6));
        var (code, stdout, stderr) = Run("experiment", "prompt", "--model", _w.Model, "--sample", _w.Sample, "--records", _w.Records, "--sentences", _w.Sentences,
            "--format", "csv", "--out", Path.Combine(_w.Root, "prompt-out-" + Guid.NewGuid().ToString("N")[..6]));
        Assert.True(code == 0, stderr);
        Assert.Contains("2/3 targets run, 30 cases", stdout);
    }

    [Fact]
    public void AContextsTableServesAsTheRecords()
    {
        using var dir = new Fixtures.TempDir();
        using var m = Model.Load(_w.Model);
        var rows = new List<PolyEngine.Output.ContextRow>();
        foreach (var file in Directory.GetFiles(_w.Records, "*.json"))
        {
            int feature = int.Parse(Path.GetFileNameWithoutExtension(file));
            foreach (var (r, rank) in ActivationRecords.Load(file).Select((r, i) => (r, i)))
                rows.Add(new PolyEngine.Output.ContextRow
                {
                    Sae = "sae", Feature = feature, Rank = rank, Tokens = [.. r.Tokens.Select(t => m.Tokenizer.Encode(t)[0])], TokenStrings = r.Tokens,
                    TokenActivations = r.Values, MaxPosition = r.MaxValueTokenIndex,
                });
        }
        PolyEngine.Output.TableWriter.Write(dir.File("contexts.parquet"), rows, PolyEngine.Output.TableFormat.Parquet);
        var samples = FeatureSample.Load(_w.Sample);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        var o = new FeatureExperimentOptions { Scales = [2], Metrics = [SteerMetric.WeightedCosine] };
        var fromFolder = FeatureExperiment.Run(m, samples, _w.Records, sentences, o);
        var fromTable = FeatureExperiment.Run(m, samples, dir.File("contexts.parquet"), sentences, o);
        Assert.Equal(fromFolder.Counts.OrderBy(x => x.Key), fromTable.Counts.OrderBy(x => x.Key));
        Assert.Equal(fromFolder.Cases.Select(c => (c.Target, c.Level, c.Token, c.Sentence)), fromTable.Cases.Select(c => (c.Target, c.Level, c.Token, c.Sentence)));
    }
}

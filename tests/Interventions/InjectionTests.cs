using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Stats;
using PolyEngine.Toys;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Interventions;

/// <summary>
/// The token-type prompt injection: trials against the definition (the injected text, the ids run, the target ids'
/// count and mass among the top-k computed directly), per-trial seeds, sampling with and without replacement, the summary's
/// Welch tests, resuming, the CLI's tables, and bad inputs as one line or counted skips.
/// </summary>
public class InjectionTests : IClassFixture<FullVocabGpt2>
{
    readonly string _gpt2;
    public InjectionTests(FullVocabGpt2 toy) => _gpt2 = toy.Path;

    static readonly string[] Places = [" Paris", " London", " Rome", " Berlin", " Madrid"];

    static Dictionary<string, Dictionary<InjectionCategory, string[]>> Sets() => new()
    {
        ["location"] = new()
        {
            [InjectionCategory.Target] = Places,
            [InjectionCategory.High] = [" int", " string", " float", " bool", " char", " byte"],
            [InjectionCategory.Medium] = [" happy", " sad"],
            [InjectionCategory.Random] = [" the", " of", " and", " to", " in", " is", " was", " for"],
        },
    };

    internal static InjectionPlan Plan(Model m, int trials = 3) => new()
    {
        Types = ["location"],
        TypeOfId = Places.ToDictionary(p => m.Tokenizer.Encode(p)[0], _ => "location"),
        TokenSets = Sets(),
        Sentences = new Dictionary<string, string[]> { ["location"] = ["We flew to", "The capital of France is", "She lives in"] },
        Trials = trials, Tokens = 4, Top = 20, MaxSentences = 2,
    };

    static List<InjectionTrial> RunAll(Model m, InjectionPlan plan)
    {
        var all = new List<InjectionTrial>();
        PromptInjection.Run(new ModelTrials(m, batch: 5), plan, (_, unit) => all.AddRange(unit));
        return all;
    }

    [Fact]
    public void TrialsFollowTheDefinition()
    {
        using var m = Model.Load(_gpt2);
        var plan = Plan(m);
        var trials = RunAll(m, plan);
        Assert.Equal(2 * 4 * 3, trials.Count);   // sentences × categories × trials
        var targets = plan.TypeOfId.Keys.ToHashSet();
        foreach (var t in trials.Where(t => t.Trial != 1))
        {
            string sentence = plan.Sentences["location"][t.Sentence];
            var tokens = PromptInjection.Sample(plan, "location", t.Sentence, t.Category, t.Trial);
            Assert.Equal(m.Encode("(" + string.Concat(tokens) + ")" + sentence, prependBos: true), t.PromptIds);
            Assert.Equal(m.Encode(sentence, prependBos: true), t.BaseIds);
            (int, double) Score(int[] ids)
            {
                var r = m.Run([ids], new RunOptions { Logits = LogitsMode.LastPosition });
                var row = r.Logits!.Data;
                double max = row.Max(x => (double)x), z = row.Sum(x => Math.Exp(x - max));
                var top = Enumerable.Range(0, row.Length).OrderByDescending(i => row[i]).ThenBy(i => i).Take(plan.Top).ToList();
                return (top.Count(targets.Contains), top.Where(targets.Contains).Sum(i => Math.Exp(row[i] - max) / z));
            }
            var (cb, mb) = Score(t.BaseIds);
            var (ci, mi) = Score(t.PromptIds);
            Assert.Equal(cb, t.CountBase);
            Assert.Equal(ci, t.CountInjected);
            Assert.Equal(mb, t.MassBase, 5);
            Assert.Equal(mi, t.MassInjected, 5);
            Assert.Equal(t.CountInjected > t.CountBase, t.CountIncrease);
        }
        // Each trial from its own seed: the same tokens in any run, different across trials; without replacement from a
        // set at least as large, with replacement from a smaller one.
        Assert.Equal(PromptInjection.Sample(plan, "location", 1, InjectionCategory.High, 2), PromptInjection.Sample(plan, "location", 1, InjectionCategory.High, 2));
        Assert.NotEqual(PromptInjection.Sample(plan, "location", 1, InjectionCategory.High, 2), PromptInjection.Sample(plan, "location", 1, InjectionCategory.High, 0));
        for (int trial = 0; trial < 20; trial++)
        {
            var high = PromptInjection.Sample(plan, "location", 0, InjectionCategory.High, trial);
            Assert.Equal(4, high.Distinct().Count());
            Assert.All(high, s => Assert.Contains(s, Sets()["location"][InjectionCategory.High]));
            var medium = PromptInjection.Sample(plan, "location", 0, InjectionCategory.Medium, trial);
            Assert.Equal(4, medium.Length);
            Assert.All(medium, s => Assert.Contains(s, Sets()["location"][InjectionCategory.Medium]));
        }
        var summary = PromptInjection.Summarize(trials);
        var target = summary.Single(s => s.Category == InjectionCategory.Target);
        double[] Outcomes(InjectionCategory c) => [.. trials.Where(t => t.Category == c).Select(t => t.CountIncrease ? 1.0 : 0.0)];
        Assert.Equal(Outcomes(InjectionCategory.Target).Average(), target.CountRate);
        Assert.Equal(WelchTest.Of(Outcomes(InjectionCategory.Target), Outcomes(InjectionCategory.Random)), target.Count);
    }

    [Fact]
    public void AnInterruptedRunResumesToTheSameTrials()
    {
        using var dir = new Fixtures.TempDir();
        using var m = Model.Load(_gpt2);
        var plan = Plan(m, trials: 2);
        var trialModel = new ModelTrials(m, batch: 5);
        var whole = InjectionRun.Run(trialModel, plan);
        var checkpoint = new ScanCheckpoint { Path = dir.File(ScanCheckpoint.FileName), RunKey = "inject", Every = TimeSpan.Zero };
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => InjectionRun.Run(trialModel, plan, checkpoint, (done, _) => { if (done == 1) cancel.Cancel(); }, cancel: cancel.Token));
        int resumedFrom = -1;
        var resumed = InjectionRun.Run(trialModel, plan, checkpoint, resumed: n => resumedFrom = n);
        Assert.Equal(1, resumedFrom);
        Assert.Equal(whole.Trials.Count, resumed.Trials.Count);
        for (int i = 0; i < whole.Trials.Count; i++)
        {
            var (a, b) = (whole.Trials[i], resumed.Trials[i]);
            Assert.Equal((a.Type, a.Category, a.Sentence, a.Trial, a.CountBase, a.CountInjected, a.MassBase, a.MassInjected), (b.Type, b.Category, b.Sentence, b.Trial, b.CountBase, b.CountInjected, b.MassBase, b.MassInjected));
            Assert.Equal(a.PromptIds, b.PromptIds);
        }
    }

    internal static void WriteInputs(Fixtures.TempDir dir, Model m)
    {
        File.WriteAllText(dir.File("types.json"), System.Text.Json.JsonSerializer.Serialize(
            Places.ToDictionary(p => m.Tokenizer.Encode(p)[0].ToString(), _ => "location").Append(new(m.Tokenizer.Encode(" red")[0].ToString(), "color")).ToDictionary()));
        File.WriteAllText(dir.File("sets.json"), """
            {"location": {"target": [" Paris", " London", " Rome"], "high_interference": [" int", " string", " float"], "medium_interference": [" happy", " sad"], "random": [" the", " of", " and"]},
             "color": {"target": [" red"], "high_interference": [" x"], "medium_interference": [" y"], "random": [" z"]}}
            """);
        File.WriteAllText(dir.File("sentences.json"), """{"location": ["We flew to", "She lives in"], "color": []}""");
    }

    [Fact]
    public void TheCliWritesTablesAndCountsSkippedTypes()
    {
        using var dir = new Fixtures.TempDir();
        using (var m = Model.Load(_gpt2)) WriteInputs(dir, m);
        string[] args = ["inject", "--model", _gpt2, "--type-map", dir.File("types.json"), "--token-sets", dir.File("sets.json"), "--sentences", dir.File("sentences.json"),
            "--trials", "3", "--tokens", "2", "--top", "10", "--format", "csv", "--out", dir.File("out")];
        var (code, stdout, stderr) = Run(args);
        Assert.True(code == 0, stderr);
        Assert.Contains("skipped: color: no sentences", stdout);
        Assert.Contains("2 types, 2 sentences × 4 categories × 3 trials = 24 trials", stdout);
        var trials = File.ReadAllLines(dir.File("out/trials.csv"));
        Assert.Equal(25, trials.Length);
        Assert.StartsWith("type,category,sentence,trial,prompt_ids,base_ids,count_base,count_injected,mass_base,mass_injected,count_increase,prob_increase", trials[0]);
        var summary = File.ReadAllLines(dir.File("out/summary.csv"));
        Assert.Equal(5, summary.Length);
        Assert.StartsWith("type,category,trials,count_rate,prob_rate,welch_t,p_value,prob_welch_t,prob_p_value", summary[0]);
        var manifest = File.ReadAllText(dir.File("out/manifest.json"));
        Assert.Contains("color: no sentences", manifest);
        Assert.Contains("Welch", manifest);
        var again = Run(args);
        Assert.Contains("already holds this run", again.Out);
        // Shards split the units; each trial is the same in its shard as in the whole run (its own seed).
        var shard1 = Run([.. args.Take(args.Length - 2), "--shard", "1/2", "--out", dir.File("s1")]);
        Assert.True(shard1.Code == 0, shard1.Err);
        Assert.Contains("(shard 1/2): 2 types, 1 sentences", shard1.Out);
        var whole = File.ReadAllLines(dir.File("out/trials.csv")).Skip(1).Where(l => l.Split(',')[2] == "1").ToList();
        Assert.Equal(whole, File.ReadAllLines(dir.File("s1/trials.csv")).Skip(1));
        // merge: the shards' trials in the single run's order and the summary from them, byte for byte (CSV and Parquet).
        var shard0 = Run([.. args.Take(args.Length - 2), "--shard", "0/2", "--out", dir.File("s0")]);
        Assert.True(shard0.Code == 0, shard0.Err);
        var merged = Run("merge", dir.File("s1"), dir.File("s0"), "--out", dir.File("merged"));
        Assert.True(merged.Code == 0, merged.Err);
        foreach (var f in new[] { "trials.csv", "summary.csv" })
            Assert.Equal(File.ReadAllBytes(dir.File($"out/{f}")), File.ReadAllBytes(dir.File($"merged/{f}")));
        Assert.Contains("\"shard\": \"0/1\"", File.ReadAllText(dir.File("merged/manifest.json")));
        string[] parquet = [.. args.Select(a => a == "csv" ? "parquet" : a).Take(args.Length - 2)];
        foreach (var (name, extra) in new[] { ("p", Array.Empty<string>()), ("p0", ["--shard", "0/2"]), ("p1", new[] { "--shard", "1/2" }) })
        {
            var r = Run([.. parquet, .. extra, "--out", dir.File(name)]);
            Assert.True(r.Code == 0, r.Err);
        }
        Assert.True(Run("merge", dir.File("p0"), dir.File("p1"), "--out", dir.File("pm")).Code == 0);
        foreach (var f in new[] { "trials.parquet", "summary.parquet" })
            Assert.Equal(File.ReadAllBytes(dir.File($"p/{f}")), File.ReadAllBytes(dir.File($"pm/{f}")));
        Assert.Contains("is not a shard of the same run", Run("merge", dir.File("s0"), dir.File("p1"), "--out", dir.File("mixed")).Err);
        // More shards than units: a shard with none finishes, with empty tables.
        var empty = Run([.. args.Take(args.Length - 2), "--shard", "2/3", "--out", dir.File("e2")]);
        Assert.True(empty.Code == 0, empty.Err);
        Assert.Single(File.ReadAllLines(dir.File("e2/trials.csv")));
    }

    public static TheoryData<string, string> BadInputs() => new()
    {
        { "--types nowhere", "type 'nowhere' has no token sets" },
        { "--sets-empty", "the high token set of type 'location' is empty" },
        { "--types-missing", "type 'location' has no tokens in --type-map" },
        { "--type-out-of-vocab", "outside the model's vocabulary" },
        { "--trials 0", "--trials, --tokens, --top and --max-sentences must be positive" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void BadInputsAreOneLine(string what, string expected)
    {
        using var dir = new Fixtures.TempDir();
        using (var m = Model.Load(_gpt2)) WriteInputs(dir, m);
        var extra = new List<string>();
        switch (what)
        {
            case "--types nowhere": extra.AddRange(["--types", "nowhere"]); break;
            case "--sets-empty": File.WriteAllText(dir.File("sets.json"), """{"location": {"target": [" Paris"], "high_interference": [], "medium_interference": [" a"], "random": [" b"]}}"""); break;
            case "--types-missing": File.WriteAllText(dir.File("types.json"), """{"5": "color"}"""); break;
            case "--type-out-of-vocab": File.WriteAllText(dir.File("types.json"), """{"99999999": "location"}"""); break;
            case "--trials 0": extra.AddRange(["--trials", "0"]); break;
        }
        var (code, _, stderr) = Run(["inject", "--model", _gpt2, "--type-map", dir.File("types.json"), "--token-sets", dir.File("sets.json"),
            "--sentences", dir.File("sentences.json"), .. extra, "--out", dir.File("out")]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("out/trials.parquet")));
    }

    /// <summary>Six features over the first 4 of 64 coordinates and 3-wide explanation embeddings, chosen so that f0 is a
    /// target (" Paris"); f1 interferes at 0.8 with low similarity (high); f2 at 0.3 (medium); f3 at 0.8 but its explanation
    /// is similar (out); f4 is a target itself (" London"); f5 barely overlaps (out).</summary>
    static (float[] Decoder, string Explanations, Dictionary<int, List<ActivationRecord>> Records) Scenario(Model m, string dir)
    {
        int Id(string t) => m.Tokenizer.Encode(t)[0];
        float s91 = MathF.Sqrt(1 - 0.09f);
        float[][] rows = [[1, 0, 0, 0], [0.8f, 0.6f, 0, 0], [0.3f, 0, s91, 0], [0.8f, 0, 0, 0.6f], [0, 0, 0, 1], [0.1f, MathF.Sqrt(0.99f), 0, 0]];
        var decoder = rows.SelectMany(r => r.Concat(new float[60])).ToArray();   // [6, 64]
        float[][] emb = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9f, MathF.Sqrt(0.19f), 0], [1, 0, 0], [0, 1, 0]];
        string path = Path.Combine(dir, "e.jsonl");
        File.WriteAllLines(path, emb.Select((e, i) => $"{{\"index\": {i}, \"description\": \"f{i}\", \"embedding\": [{string.Join(",", e.Select(x => x.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))}]}}"));
        ActivationRecord Rec(params string[] tokens) => new("r", tokens, [.. tokens.Select(Id)], [.. tokens.Select((_, i) => 1f - 0.1f * i)], 0);
        var records = new Dictionary<int, List<ActivationRecord>>
        {
            [0] = [Rec(" Paris", " is")], [1] = [Rec(" int", " float")], [2] = [Rec(" happy", " int")], [3] = [Rec(" cat")], [4] = [Rec(" London")], [5] = [Rec(" dog")],
        };
        return (decoder, path, records);
    }

    [Fact]
    public void TokenSetsBuiltFromDecodersExplanationsAndRecords()
    {
        using var dir = new Fixtures.TempDir();
        using var m = Model.Load(_gpt2);
        int Id(string t) => m.Tokenizer.Encode(t)[0];
        var typeOfId = new Dictionary<int, string> { [Id(" Paris")] = "location", [Id(" London")] = "location" };
        var (decoder, explanations, records) = Scenario(m, dir.Path);
        var sae = new TokenSetSae("s", decoder, 64, PolyEngine.Formats.Explanations.Load(explanations, 6, strict: true), records);
        var counts = new Dictionary<string, int>();
        var sets = InjectionTokenSets.Build(m, "location", typeOfId, [sae], new TokenSetOptions(), counts);
        Assert.Equal(2, counts["s:location:target_features"]);
        Assert.Equal(2, counts["s:location:interference_features"]);
        Assert.Equal([" float"], sets[InjectionCategory.High]);    // " int" was in both high and medium: removed from both
        Assert.Equal([" happy"], sets[InjectionCategory.Medium]);
        Assert.Equal([" Paris", " London"], sets[InjectionCategory.Target].Order().Reverse());
        var random = sets[InjectionCategory.Random].ToHashSet();
        Assert.DoesNotContain(" int", random);                    // taken before the removal
        Assert.DoesNotContain(" Paris", random);
        Assert.Contains(" cat", random);
        Assert.DoesNotContain(random, string.IsNullOrWhiteSpace);
        Assert.Contains("--set-high 0.1 must be above", Assert.Throws<PolyEngineException>(() =>
            InjectionTokenSets.Build(m, "location", typeOfId, [sae], new TokenSetOptions { High = 0.1 }, counts)).Message);
        var (code, _, stderr) = Run("inject", "--model", _gpt2, "--type-map", explanations, "--sentences", explanations, "--out", dir.File("o"));
        Assert.NotEqual(0, code);
        Assert.Contains("give --token-sets, or build the sets", stderr);
    }

    [Fact]
    public void TheCliBuildsTheSetsWhenNoneAreGiven()
    {
        using var dir = new Fixtures.TempDir();
        using (var m = Model.Load(_gpt2))
        {
            var (decoder, _, records) = Scenario(m, dir.Path);
            // The SAE on disk: a toy SAE of the same shape with the scenario's decoder.
            string folder = dir.File("saeA");
            ToySae.Write(folder, HookName.Parse("blocks.1.hook_resid_post"), 64, 6, SaeArchitecture.Standard, 8);
            string weights = Path.Combine(folder, "sae_weights.safetensors");
            var tensors = new List<(string Name, float[] Data, long[] Shape)>();
            using (var f = SafeTensorsFile.Open(weights))
                foreach (var t in f.Tensors) tensors.Add((t.Name, t.Name == "W_dec" ? decoder : f.ReadFloat32(t.Name), t.Shape));
            var w = new SafeTensorsWriter();
            foreach (var (name, data, shape) in tensors) w.Add(name, data, shape);
            w.Save(weights);
            var rows = records.Select(x => new PolyEngine.Output.ContextRow
            {
                Sae = "saeA", Feature = x.Key, Rank = 0, Tokens = x.Value[0].Ids!, TokenStrings = x.Value[0].Tokens, TokenActivations = x.Value[0].Values, MaxPosition = 0,
            }).ToList();
            PolyEngine.Output.TableWriter.Write(dir.File("contexts.parquet"), rows, PolyEngine.Output.TableFormat.Parquet);
            File.WriteAllText(dir.File("types.json"), $$"""{"{{m.Tokenizer.Encode(" Paris")[0]}}": "location", "{{m.Tokenizer.Encode(" London")[0]}}": "location"}""");
        }
        File.WriteAllText(dir.File("sentences.json"), """{"location": ["We flew to"]}""");
        var (code, stdout, stderr) = Run("inject", "--model", _gpt2, "--type-map", dir.File("types.json"), "--types", "location", "--sae", dir.File("saeA"),
            "--explanations", dir.File("e.jsonl"), "--records", dir.File("contexts.parquet"), "--sentences", dir.File("sentences.json"),
            "--trials", "2", "--tokens", "2", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains("token sets of location: target 2, high 1, medium 1,", stdout);
        var sets = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("out/token_sets.json")))!["location"]!;
        Assert.Equal(["target", "high_interference", "medium_interference", "random"], sets.AsObject().Select(x => x.Key));
        Assert.Equal(" float", (string)sets["high_interference"]![0]!);
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("out/manifest.json")))!;
        Assert.Equal("built: token_sets.json", (string)manifest["inputs"]!["token_sets"]!);
        Assert.Equal(2, (int)manifest["token_sets"]!["saeA:location:target_features"]!);
        Assert.Equal(9, File.ReadAllLines(dir.File("out/trials.csv")).Length);   // 1 sentence × 4 categories × 2 trials
    }
}

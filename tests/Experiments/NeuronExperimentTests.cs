using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Stats;
using PolyEngine.Toys;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Experiments;

/// <summary>
/// The neuron experiment: connectivity and degree buckets by hand, and a case's trackers against forward passes with the
/// neuron scaled, computed here from the definition (top-10 weighted cosine); the CLI's tables and manifest.
/// </summary>
public class NeuronExperimentTests : IClassFixture<FeatureExperimentTests.World>
{
    readonly FeatureExperimentTests.World _w;
    readonly string _records, _explanations;

    public NeuronExperimentTests(FeatureExperimentTests.World w)
    {
        _w = w;
        _records = Path.Combine(w.Root, "neuron-records");
        _explanations = Path.Combine(w.Root, "explanations.jsonl");
        if (Directory.Exists(_records)) return;
        Directory.CreateDirectory(_records);
        for (int f = 0; f < 32; f++)
            File.WriteAllText(Path.Combine(_records, $"{f}.json"), f % 2 == 0
                ? """{"activations": [{"tokens": [" Paris", " is"], "values": [1.0, 0.1]}]}"""
                : """{"activations": [{"tokens": [" sky", " red"], "values": [0.2, 1.0]}]}""");
        ToyExplanations.Write(_explanations, 32, dim: 16, topics: 4, seed: 3);
    }

    [Fact]
    public void ConnectivityCountsDistinctClustersOfAlignedFeatures()
    {
        // 4 features × 5 coordinates; unit rows' top-2 above 0.2 align.
        float[] decoder =
        [
            0.9f, 0.3f, 0, 0, 0.1f,     // f0 → 0, 1
            0, 0.8f, 0.5f, 0, 0,        // f1 → 1, 2
            0.7f, 0, 0, 0.7f, 0,        // f2 → 0, 3
            0, 0, 0, 0, 1,              // f3 (unclustered) → none
        ];
        var c = NeuronExperiment.Connectivity(decoder, 4, 5, [0, 0, 1, -1], new NeuronExperimentOptions { AlignTop = 2 });
        Assert.Equal([2, 1, 1, 1, 0], c.Select(n => n.Degree));   // neuron 0: clusters 0 (f0) and 1 (f2)
        Assert.Equal([0, 1], c[1].FeaturesByCluster[0].Order());
        Assert.Equal(0, DegreeBuckets.Of(1));
        Assert.Equal(1, DegreeBuckets.Of(5));
        Assert.Equal(7, DegreeBuckets.Of(501));
        Assert.Equal(-1, DegreeBuckets.Of(0));
    }

    [Fact]
    public void TrackersFollowTheScaledNeuronsTopTenWeightedCosine()
    {
        using var m = Model.Load(_w.Model);
        var expl = Explanations.Load(_explanations, 32, strict: false);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        float[] factors = [0, 0.5f, 1, 3];
        var o = new NeuronExperimentOptions { Factors = factors, AlignMin = 0.15, ClusterCutoff = 0.3, SentencesPerToken = 1 };
        var plan = NeuronExperiment.Plan(m, _w.Sae, expl, o);
        var (cases, counts, _) = NeuronExperiment.Run(m, plan, "sae", _records, sentences, o);
        var connectivity = plan.Connectivity;
        Assert.Equal(64, connectivity.Length);
        Assert.NotEmpty(cases);
        Assert.Equal(counts["features_run"], cases.Count);   // one sentence per token
        Assert.All(cases, c => Assert.Equal(c.Degree, connectivity[c.Neuron].Degree));

        var c = cases[0];
        var sim = new TokenSimilarity(m.W_E);
        int[] targets = [.. sim.Order(c.TokenId).Take(5)];
        Assert.Equal(c.TokenId, targets[0]);
        var weights = sim.MaxCosine(targets);
        var ids = m.Encode(sentences[c.Token][0], prependBos: false);
        double TopTen(float factor)
        {
            var mul = Enumerable.Repeat(1f, 64).ToArray();
            mul[c.Neuron] = factor;
            var r = m.Run([ids], new RunOptions { Edits = [new HookEdit(c.Hook) { Mul = mul }], Logits = LogitsMode.LastPosition });
            var logits = r.Logits!.Data;
            double max = logits.Max(x => (double)x), z = logits.Sum(x => Math.Exp(x - max));
            return Enumerable.Range(0, logits.Length).OrderByDescending(t => logits[t]).Take(10).Sum(t => Math.Exp(logits[t] - max) / z * weights[t]);
        }
        double raw = TopTen(1);
        Assert.Equal(raw, c.Baseline, 5);
        double[] masked = [TopTen(0), TopTen(0.5f)];
        Assert.Equal(Math.Max(0, masked.Max(v => raw - v)), c.Mask.MaxAbsDrop, 5);
        Assert.Equal(Math.Max(0, masked.Max(v => v - raw)), c.Mask.MaxAbsIncrease, 5);
        Assert.Equal(Math.Max(0, 100 * (raw - masked.Min()) / raw), c.Mask.MaxPercentDrop, 3);
        double amplified = TopTen(3);
        Assert.Equal(Math.Max(0, amplified - raw), c.Amplify.MaxAbsIncrease, 5);
        Assert.Equal(Math.Max(0, raw - amplified), c.Amplify.MaxAbsDrop, 5);
    }

    [Fact]
    public void TheCliWritesCasesNeuronsAndBuckets()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("experiment", "neuron", "--model", _w.Model, "--sae", _w.Sae, "--explanations", _explanations, "--records", _records,
            "--sentences", _w.Sentences, "--factors", "0,2", "--align-min", "0.15", "--sentences-per-token", "1", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains("clusters of", stdout);
        var neurons = File.ReadAllLines(dir.File("out/neurons.csv"));
        Assert.Equal(65, neurons.Length);
        Assert.StartsWith("neuron,degree,bucket", neurons[0]);
        Assert.StartsWith("sae,hook,bucket,neuron,degree,cluster,feature,token,token_id,sentence,baseline,mask_max_abs_drop", File.ReadAllLines(dir.File("out/cases.csv"))[0]);
        Assert.StartsWith("bucket,direction,cases,max_abs_drop_mean", File.ReadAllLines(dir.File("out/buckets.csv"))[0]);
        var manifest = JsonNode.Parse(File.ReadAllText(dir.File("out/manifest.json")))!;
        Assert.Contains("unprocessed HF weights", (string)manifest["options"]!["readings"]!["weights"]!);
        Assert.True((int)manifest["results"]!["features_without_explanations"]! > 0);   // every tenth toy feature has none
        var bad = Run("experiment", "neuron", "--model", _w.Model, "--sae", _w.Sae, "--explanations", _explanations, "--records", _records,
            "--sentences", _w.Sentences, "--clusters", "ward", "--out", dir.File("bad"));
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("--clusters ward: choose average or threshold", bad.Err);
    }

    [Fact]
    public void ShardsAndAResumedRunGiveTheWholeRunsCases()
    {
        using var dir = new Fixtures.TempDir();
        using var m = Model.Load(_w.Model);
        var expl = Explanations.Load(_explanations, 32, strict: false);
        var sentences = ExperimentInputs.TokenSentences(_w.Sentences);
        var o = new NeuronExperimentOptions { Factors = [0, 2], AlignMin = 0.15, SentencesPerToken = 1 };
        var plan = NeuronExperiment.Plan(m, _w.Sae, expl, o);
        Assert.True(plan.Units.Count >= 2);
        var whole = NeuronExperiment.Run(m, plan, "sae", _records, sentences, o);
        var halves = Enumerable.Range(0, 2).Select(i => NeuronExperiment.Run(m, plan, "sae", _records, sentences, o, new Shard(i, 2))).ToList();
        Assert.Equal(whole.Cases.Select(c => (c.Neuron, c.Feature, c.Sentence, c.Baseline)).Order(), halves.SelectMany(h => h.Cases).Select(c => (c.Neuron, c.Feature, c.Sentence, c.Baseline)).Order());
        var checkpoint = new PolyEngine.Scans.ScanCheckpoint { Path = dir.File("checkpoint.safetensors"), RunKey = "n", Every = TimeSpan.Zero };
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => NeuronExperiment.Run(m, plan, "sae", _records, sentences, o, checkpoint: checkpoint,
            progress: (done, _) => { if (done == 1) cancel.Cancel(); }, cancel: cancel.Token));
        var resumed = NeuronExperiment.Run(m, plan, "sae", _records, sentences, o, checkpoint: checkpoint);
        Assert.Equal(whole.Cases, resumed.Cases);
        Assert.Equal(whole.Counts.OrderBy(x => x.Key), resumed.Counts.OrderBy(x => x.Key));
    }
}

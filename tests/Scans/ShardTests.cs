using PolyEngine.Tests.Experiments;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Scans;

/// <summary>
/// Shards and merge: <c>--shard</c> from the command line or the scheduler's variables; a co-activation scan split 8 ways
/// (run one at a time, and two at a time) merges into the single run's pair table and triangle byte for byte; a missing,
/// duplicated or foreign shard, a folder that is no shard, and a merge into a folder holding another run are refused.
/// </summary>
public class ShardTests(FeatureExperimentTests.World w) : IClassFixture<FeatureExperimentTests.World>
{
    /// <summary>Runs <paramref name="args"/> as shards 0..n−1 of n into <paramref name="dir"/>/s{k}, one at a time or two at
    /// a time, then merges them (given in reverse order) into <paramref name="dir"/>/merged.</summary>
    static void ShardAndMerge(Fixtures.TempDir dir, string[] args, int n, bool twoAtATime)
    {
        (int Code, string Out, string Err) Shard(int k) => Run([.. args, "--shard", $"{k}/{n}", "--out", dir.File($"s{k}")]);
        for (int k = 0; k < n; k += twoAtATime ? 2 : 1)
        {
            var done = twoAtATime && k + 1 < n ? Task.WhenAll(Task.Run(() => Shard(k)), Task.Run(() => Shard(k + 1))).GetAwaiter().GetResult() : [Shard(k)];
            Assert.All(done, d => Assert.True(d.Code == 0, d.Err));
        }
        var m = Run(["merge", .. Enumerable.Range(0, n).Reverse().Select(k => dir.File($"s{k}")), "--out", dir.File("merged")]);
        Assert.True(m.Code == 0, m.Err);
    }

    [Theory]
    [InlineData("3/8", null, null, null, null, 3, 8)]
    [InlineData("slurm", "5", "8", null, null, 5, 8)]
    [InlineData("slurm", "6", "8", "1", null, 5, 8)]   // an array 1..8
    [InlineData("k8s/4", null, null, null, "2", 2, 4)]
    public void AShardComesFromTheCommandLineOrTheScheduler(string text, string? id, string? count, string? min, string? index, int i, int n)
    {
        var env = new Dictionary<string, string?>
        {
            ["SLURM_ARRAY_TASK_ID"] = id, ["SLURM_ARRAY_TASK_COUNT"] = count, ["SLURM_ARRAY_TASK_MIN"] = min, ["JOB_COMPLETION_INDEX"] = index,
        };
        Assert.Equal(new Shard(i, n), Shard.Parse(text, k => env.GetValueOrDefault(k)));
    }

    [Theory]
    [InlineData("8/8", "give i/n with 0 ≤ i < n")]
    [InlineData("a/b", "give i/n (e.g. 0/4), slurm, or k8s/n")]
    [InlineData("slurm", "SLURM_ARRAY_TASK_ID is not set; run this as a task of a Slurm job array")]
    [InlineData("k8s/x", "give k8s/n")]
    [InlineData("k8s/4", "JOB_COMPLETION_INDEX is not set")]
    public void ABadShardIsOneLine(string text, string message) =>
        Assert.Contains(message, Assert.Throws<PolyEngineException>(() => Shard.Parse(text, _ => null)).Message);

    [Fact]
    public void ASchedulerIndexOutOfRangeIsSaid() =>
        Assert.Contains("shard 9 of 8, which is not one", Assert.Throws<PolyEngineException>(() => Shard.Parse("slurm",
            k => k switch { "SLURM_ARRAY_TASK_ID" => "9", "SLURM_ARRAY_TASK_COUNT" => "8", _ => null })).Message);

    /// <summary>The feature- and token-locus experiments in 8 shards merge into the single run's cases, levels and
    /// regressions, byte for byte (Parquet and CSV).</summary>
    [Theory]
    [InlineData("feature", "parquet")]
    [InlineData("feature", "csv")]
    [InlineData("token", "parquet")]
    public void ExperimentShardsMergeIntoTheSingleRunByteForByte(string locus, string format)
    {
        using var dir = new Fixtures.TempDir();
        string[] run = ["experiment", locus, "--model", w.Model, "--sample", locus == "token" ? w.SampleMlp : w.Sample, "--records", w.Records, "--sentences", w.Sentences,
            "--scales", "-2,2", "--metrics", "weighted_cosine,overlap", "--format", format];
        var single = Run([.. run, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, run, 8, twoAtATime: format == "parquet");   // 3 targets: most shards run none
        string ext = format == "csv" ? ".csv" : ".parquet";
        foreach (var t in new[] { "cases", "levels", "regressions" })
            Assert.True(File.ReadAllBytes(dir.File($"single/{t}{ext}")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{t}{ext}"))), $"{t}{ext} differs");
        Assert.True(File.ReadAllBytes(dir.File($"single/cases{ext}")).Length > 200, "the run must have cases to compare");
    }

    /// <summary>An interference scan with explanations, the sample, top-N and the logit-lens proxy in 8 shards (tile
    /// rows dealt across them) merges into the single run's tables and sample byte for byte.</summary>
    [Fact]
    public void InterferenceShardsMergeIntoTheSingleRunByteForByte()
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToySae.Write(dir.File("sae"), FeatureExperimentTests.World.Hook, 64, 150, SaeArchitecture.Standard, 8);
        PolyEngine.Toys.ToyExplanations.Write(dir.File("e.jsonl"), 150, dim: 16, topics: 5, seed: 2);
        string[] scan = ["interference", "--sae", dir.File("sae"), "--explanations", dir.File("e.jsonl"), "--sample", "3", "--top", "4", "--tile", "16",
            "--model", w.Model];
        var single = Run([.. scan, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, scan, 8, twoAtATime: true);
        Assert.True(File.Exists(dir.File("s5/state.0.safetensors")));
        Assert.False(File.Exists(dir.File("s5/bins.parquet")), "a shard writes its state, not partial tables");
        var files = Directory.GetFiles(dir.File("single")).Select(f => Path.GetFileName(f)!).Where(f => f != "manifest.json" && !f.StartsWith('.')).Order().ToList();
        Assert.Contains("qualified.parquet", files);
        Assert.Contains("sample.json", files);
        Assert.Contains("partners.parquet", files);
        foreach (var f in files)
            Assert.True(File.ReadAllBytes(dir.File($"single/{f}")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{f}"))), $"{f} differs");
        Assert.False(Directory.Exists(dir.File("merged/.merge")));
        var sample = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("merged/sample.json")))!;
        Assert.NotEmpty(sample["saes"]![0]!["taus"]![0]!["targets"]!.AsArray());   // the merged state qualified targets to sample
    }

    /// <summary>Steering sweeps in 8 shards of the prompts (vector and neuron loci, Parquet and CSV) merge into the single
    /// run's rows, best and vectors tables byte for byte; the shards' tables keep the prompts' numbers in the file.</summary>
    [Theory]
    [InlineData("vector", "parquet")]
    [InlineData("vector", "csv")]
    [InlineData("neuron", "parquet")]
    public void SteerShardsMergeIntoTheSingleRunByteForByte(string locus, string format)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllLines(dir.File("p.jsonl"), Enumerable.Range(0, 9).Select(i => $$"""{"ids": [{{5 + i}}, 17, {{300 + 11 * i}}, 2, {{41 + i}}], "targets": [{{17 + i}}, 64]}"""));
        string[] sweep = ["steer", "--model", w.Model, "--prompts", dir.File("p.jsonl"), "--top", "2", "--format", format,
            .. locus == "vector" ? new[] { "--sae", w.Sae, "--features", "1,3", "--random", "1", "--scales", "-2,4" }
                                 : ["--hook", "blocks.1.mlp.hook_post", "--neurons", "7,100", "--factors", "0,5"]];
        var single = Run([.. sweep, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, sweep, 8, twoAtATime: format == "csv");
        string ext = format == "csv" ? ".csv" : ".parquet";
        foreach (var t in locus == "vector" ? new[] { "rows", "best", "vectors" } : ["rows", "best"])
            Assert.True(File.ReadAllBytes(dir.File($"single/{t}{ext}")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{t}{ext}"))), $"{t}{ext} differs");
        var tooMany = Run([.. sweep, "--shard", "9/10", "--out", dir.File("x")]);
        Assert.Contains("leave this shard none", tooMany.Err);
    }

    /// <summary>A feature scan in 8 shards merges into the single run's features and contexts tables byte for byte: counts
    /// and fixed-point sums add, and the contexts get the whole scan's window numbers and the same top-k.</summary>
    [Theory]
    [InlineData("parquet")]
    [InlineData("csv")]
    public void FeatureShardsMergeIntoTheSingleRunByteForByte(string format)
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToyCorpus.Write(dir.File("corpus.jsonl"), 30, 6, 7);
        string[] scan = ["features", "--model", w.Model, "--sae", w.Sae, "--corpus", dir.File("corpus.jsonl"), "--top-k", "3", "--context-size", "24", "--format", format];
        var single = Run([.. scan, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, scan, 8, twoAtATime: format == "parquet");
        string ext = format == "csv" ? ".csv" : ".parquet";
        foreach (var t in new[] { "features", "contexts" })
            Assert.True(File.ReadAllBytes(dir.File($"single/{t}{ext}")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{t}{ext}"))), $"{t}{ext} differs");
        Assert.True(File.ReadAllBytes(dir.File($"single/contexts{ext}")).Length > 1000, "the run must have contexts to compare");
    }

    /// <summary>The neuron experiment in 8 shards merges into the single run's cases, neurons and buckets byte for byte.</summary>
    [Fact]
    public void NeuronShardsMergeIntoTheSingleRunByteForByte()
    {
        using var dir = new Fixtures.TempDir();
        FeatureExperimentTests.World.WriteNeuronInputs(dir);
        string[] run = ["experiment", "neuron", "--model", w.Model, "--sae", w.Sae, "--explanations", dir.File("e.jsonl"), "--records", dir.File("records"),
            "--sentences", w.Sentences, "--factors", "0,3", "--align-min", "0.15", "--sentences-per-token", "1"];
        var single = Run([.. run, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, run, 8, twoAtATime: true);
        foreach (var t in new[] { "cases", "neurons", "buckets" })
            Assert.True(File.ReadAllBytes(dir.File($"single/{t}.parquet")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{t}.parquet"))), $"{t} differs");
        Assert.True(File.ReadAllBytes(dir.File("single/cases.parquet")).Length > 1500, "the run must have cases to compare");
    }

    /// <summary>Token-type injection in 8 shards of its (type, sentence) units — most with none — merges into the single
    /// run's trials and summary byte for byte.</summary>
    [Fact]
    public void InjectionShardsMergeIntoTheSingleRunByteForByte()
    {
        using var dir = new Fixtures.TempDir();
        using (var m = Model.Load(w.Model)) PolyEngine.Tests.Interventions.InjectionTests.WriteInputs(dir, m);
        File.WriteAllText(dir.File("sentences.json"), """{"location": ["We flew to", "She lives in", "The capital is"], "color": ["The sky is"]}""");
        string[] run = ["inject", "--model", w.Model, "--type-map", dir.File("types.json"), "--token-sets", dir.File("sets.json"), "--sentences", dir.File("sentences.json"),
            "--trials", "3", "--tokens", "2", "--top", "10"];
        var single = Run([.. run, "--out", dir.File("single")]);
        Assert.True(single.Code == 0, single.Err);
        ShardAndMerge(dir, run, 8, twoAtATime: true);
        foreach (var t in new[] { "trials", "summary" })
            Assert.True(File.ReadAllBytes(dir.File($"single/{t}.parquet")).SequenceEqual(File.ReadAllBytes(dir.File($"merged/{t}.parquet"))), $"{t} differs");
    }

    /// <summary>A shard killed mid-run resumes from its checkpoint to the counts it would have had uninterrupted.</summary>
    [Fact]
    public void AShardKilledMidRunResumes()
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToyCorpus.Write(dir.File("corpus.jsonl"), 30, 3, 5);
        using var model = Model.Load(w.Model);
        using var sae = SparseAutoencoder.Load(w.Sae, model.Backend);
        var corpus = PolyEngine.Formats.Corpus.Open(dir.File("corpus.jsonl"), () => model.Tokenizer).Sharded(new Shard(1, 3));
        var options = new PolyEngine.Scans.CoactivationOptions { Batch = 2 };
        var whole = PolyEngine.Scans.CoactivationScan.Run(model, [sae], corpus, options);
        var checkpoint = new PolyEngine.Scans.ScanCheckpoint { Path = dir.File("checkpoint.safetensors"), RunKey = "shard", Every = TimeSpan.Zero };
        Assert.ThrowsAny<OperationCanceledException>(() => PolyEngine.Scans.CoactivationScan.Run(model, [sae], corpus, options,
            p => { if (p.Windows >= 4) throw new OperationCanceledException("killed"); }, checkpoint));
        long resumedFrom = -1;
        var resumed = PolyEngine.Scans.CoactivationScan.Run(model, [sae], corpus, options, checkpoint: checkpoint, resumed: n => resumedFrom = n);
        Assert.True(resumedFrom > 0, "the run should resume from its checkpoint");
        var (a, b) = (whole.Counters[0].Counter, resumed.Counters[0].Counter);
        Assert.Equal(a.Units, b.Units);
        Assert.Equal(a.Marginals.ToArray(), b.Marginals.ToArray());
        for (int f = 0; f < a.Features - 1; f++) Assert.Equal(a.Row(f).ToArray(), b.Row(f).ToArray());
        Assert.Equal((whole.Tokens, whole.Windows), (resumed.Tokens, resumed.Windows));
    }

    [Fact]
    public async Task EightCoactivationShardsMergeIntoTheSingleRunByteForByte()
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToyCorpus.Write(dir.File("corpus.jsonl"), 30, 3, 4);
        string[] scan = ["coactivate", "--model", w.Model, "--sae", w.Sae, "--corpus", dir.File("corpus.jsonl")];
        foreach (var top in new[] { "all", "3" })
        {
            string single = dir.File($"single-{top}");
            var one = Run([.. scan, "--top", top, "--out", single]);
            Assert.True(one.Code == 0, one.Err);
            // One at a time, then two at a time.
            for (int k = 0; k < 8; k++)
            {
                var s = Run([.. scan, "--top", top, "--shard", $"{k}/8", "--out", dir.File($"seq-{top}/{k}")]);
                Assert.True(s.Code == 0, s.Err);
            }
            for (int k = 0; k < 8; k += 2)
            {
                var pair = await Task.WhenAll(Task.Run(() => Run([.. scan, "--top", top, "--shard", $"{k}/8", "--out", dir.File($"par-{top}/{k}")])),
                    Task.Run(() => Run([.. scan, "--top", top, "--shard", $"{k + 1}/8", "--out", dir.File($"par-{top}/{k + 1}")])));
                Assert.All(pair, p => Assert.True(p.Code == 0, p.Err));
            }
            foreach (var how in new[] { "seq", "par" })
            {
                string merged = dir.File($"merged-{how}-{top}");
                var m = Run(["merge", .. Enumerable.Range(0, 8).Reverse().Select(k => dir.File($"{how}-{top}/{k}")), "--out", merged]);
                Assert.True(m.Code == 0, m.Err);
                foreach (var file in new[] { "pairs.parquet", "coactivation.safetensors" })
                    Assert.True(File.ReadAllBytes(Path.Combine(single, file)).SequenceEqual(File.ReadAllBytes(Path.Combine(merged, file))), $"{how} --top {top}: {file} differs");
                var a = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(single, "manifest.json")))!["results"]!;
                var b = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "manifest.json")))!["results"]!;
                Assert.Equal(((long)a["tokens"]!, (long)a["context_windows"]!, (long)a["documents"]!, (long)a["pair_rows"]!),
                    ((long)b["tokens"]!, (long)b["context_windows"]!, (long)b["documents"]!, (long)b["pair_rows"]!));
            }
        }
        Assert.True(File.ReadAllBytes(dir.File("seq-all/0/pairs.parquet")).Length < File.ReadAllBytes(dir.File("single-all/pairs.parquet")).Length,
            "a shard counts only its documents");

        // The merged pair table is also a hive-partitioned dataset that DuckDB reads as the same table.
        Assert.True(Directory.Exists(dir.File("merged-seq-all/pairs/sae=sae")), "pairs/sae=<name>/ is written");
        using (var db = new DuckDB.NET.Data.DuckDBConnection("Data Source=:memory:"))
        {
            db.Open();
            long Scalar(string sql)
            {
                using var cmd = db.CreateCommand();
                cmd.CommandText = sql;
                return Convert.ToInt64(cmd.ExecuteScalar());
            }
            string hive = $"read_parquet('{dir.File("merged-seq-all/pairs")}/*/*.parquet', hive_partitioning = true)";
            string single = $"read_parquet('{dir.File("single-all/pairs.parquet")}')";
            Assert.Equal(Scalar($"SELECT count(*) FROM {single}"), Scalar($"SELECT count(*) FROM {hive}"));
            Assert.True(Scalar($"SELECT count(*) FROM {single}") > 0);
            string cols = "sae, feature_a, feature_b, count_a, count_b, count_ab, jaccard, pmi, lift";
            Assert.Equal(0, Scalar($"SELECT count(*) FROM (SELECT {cols} FROM {single} EXCEPT SELECT {cols} FROM {hive})"));
            Assert.Equal(0, Scalar($"SELECT count(*) FROM (SELECT {cols} FROM {hive} EXCEPT SELECT {cols} FROM {single})"));
        }

        // Refusals, each one line naming the folder.
        string[] Seq(params int[] k) => [.. k.Select(i => dir.File($"seq-all/{i}"))];
        var missing = Run(["merge", .. Seq(0, 1, 2, 3, 4, 5, 7), "--out", dir.File("x1")]);
        Assert.Contains("shard 6 of 8 is missing", missing.Err);
        var twice = Run(["merge", .. Seq(0, 1, 2, 3, 4, 5, 6, 7, 3), "--out", dir.File("x2")]);
        Assert.Contains("shard 3/8 is given twice", twice.Err);
        var foreign = Run(["merge", .. Seq(0, 1, 2, 3, 4, 5, 6), dir.File("seq-3/7"), "--out", dir.File("x3")]);
        Assert.Contains("is not a shard of the same run", foreign.Err);
        Assert.Contains("its options differs", foreign.Err);
        var notShard = Run(["merge", dir.File("single-all"), "--out", dir.File("x4")]);
        Assert.Contains("is not a shard (its manifest names no --shard)", notShard.Err);
        var into = Run(["merge", .. Seq(0, 1, 2, 3, 4, 5, 6, 7), "--out", dir.File("single-all")]);
        Assert.NotEqual(0, into.Code);
        Assert.Contains("--out", into.Err);
        var maxTokens = Run([.. scan, "--shard", "1/2", "--max-tokens", "100", "--out", dir.File("x5")]);
        Assert.Contains("--max-tokens with --shard", maxTokens.Err);
        Assert.All(new[] { missing, twice, foreign, notShard, into, maxTokens }, r => Assert.NotEqual(0, r.Code));
    }
}

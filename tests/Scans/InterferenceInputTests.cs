using System.IO.Compression;
using System.Text.Json.Serialization;
using PolyEngine.Formats;
using PolyEngine.Scans;
using Xunit;

namespace PolyEngine.Tests.Scans;

/// <summary>The interference scan's inputs (explanation exports, feature lists) and its CLI: outputs, resume, bad input.</summary>
public class InterferenceInputTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => Cli.CliTests.Run(args);

    [Fact]
    public void ExplanationsAreAveragedPerFeature()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("ex.jsonl");
        File.WriteAllText(path, string.Join("\n",
            """{"index": "2", "description": "cats", "embedding": [1, 0, 0]}""",
            """{"index": 2, "description": "felines", "embedding": [0, 1, 0]}""",
            """{"index": 0, "description": "no vector yet", "embedding": null}""",
            "",
            """{"modelId": "gpt2-small", "layer": "6-res-jb", "index": 3, "description": "dogs", "embedding": [0, 0, -2.5]}"""));
        var ex = Explanations.Load(path, 5, strict: true);
        Assert.Equal((3, 5L, 3L, 0L), (ex.Dim, ex.Lines, ex.Embedded, ex.Skipped));
        Assert.False(ex.Has(0));
        Assert.Equal("no vector yet", ex.Description(0));
        Assert.Equal(2, ex.CountFor(2));
        Assert.Equal("cats", ex.Description(2));
        var unit = new float[3];
        Assert.True(ex.UnitMean(2, unit));
        Assert.Equal(new[] { MathF.Sqrt(0.5f), MathF.Sqrt(0.5f), 0f }, unit);   // mean of the two, then unit length
        Assert.True(ex.UnitMean(3, unit));
        Assert.Equal(new[] { 0f, 0f, -1f }, unit);
        Assert.False(ex.UnitMean(1, unit));
        // gzip: the same records
        using (var gz = new GZipStream(File.Create(dir.File("ex.jsonl.gz")), CompressionLevel.Fastest)) gz.Write(File.ReadAllBytes(path));
        Assert.Equal(3, Explanations.Load(dir.File("ex.jsonl.gz"), 5, strict: true).Embedded);
    }

    [Fact]
    public void MalformedExplanationLinesAreSkippedOrFailPerStrict()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("ex.jsonl");
        File.WriteAllText(path, string.Join("\n",
            """{"index": 1, "embedding": [1, 2]}""",
            """{"index": 1, "embedding": [1, 2""",
            """{"description": "no index", "embedding": [1, 2]}""",
            """{"index": "x", "embedding": [1, 2]}""",
            """{"index": 2, "embedding": "1,2"}""",
            """{"index": 2, "embedding": [1, "a"]}""",
            """[1, 2]""",
            """{"index": 0, "embedding": [3, 4]}"""));
        var ex = Explanations.Load(path, 4, strict: false);
        Assert.Equal(6L, ex.Skipped);
        Assert.Equal([2L, 3, 4, 5, 6, 7], ex.SkippedLines);
        Assert.True(ex.Has(0) && ex.Has(1) && !ex.Has(2));
        var e = Assert.Throws<PolyEngineException>(() => Explanations.Load(path, 4, strict: true));
        Assert.Contains("ex.jsonl:2: not valid JSON", e.Message);
    }

    [Theory]
    [InlineData("""{"index": 9, "embedding": [1, 2]}""", ":2: feature index 9 is outside 0..3")]
    [InlineData("""{"index": 1, "embedding": [1, 2, 3]}""", ":2: embedding has 3 values, earlier lines have 2")]
    public void BadExplanationFilesAreRejected(string line, string expected)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("ex.jsonl"), """{"index": 0, "embedding": [1, 2]}""" + "\n" + line);
        Assert.Contains(expected, Assert.Throws<PolyEngineException>(() => Explanations.Load(dir.File("ex.jsonl"), 4, strict: false)).Message);
        File.WriteAllText(dir.File("none.jsonl"), """{"index": 0, "embedding": null}""");
        Assert.Contains("no line carries an embedding", Assert.Throws<PolyEngineException>(() => Explanations.Load(dir.File("none.jsonl"), 4, false)).Message);
        Assert.Contains("file not found", Assert.Throws<PolyEngineException>(() => Explanations.Load(dir.File("missing.jsonl"), 4, false)).Message);
    }

    [Fact]
    public void FeatureListsReadTextAndJson()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("a.txt"), "# active features\n3, 1\n7 1\n5.000000000000000000e+00\n");
        Assert.Equal([1, 3, 5, 7], FeatureList.Load(dir.File("a.txt"), 8));
        File.WriteAllText(dir.File("a.json"), "[4, 0, 4]");
        Assert.Equal([0, 4], FeatureList.Load(dir.File("a.json"), 8));
        File.WriteAllText(dir.File("bad.txt"), "1\n2\n8\n");
        Assert.Contains("bad.txt:3: feature 8 is outside 0..7", Assert.Throws<PolyEngineException>(() => FeatureList.Load(dir.File("bad.txt"), 8)).Message);
        File.WriteAllText(dir.File("word.txt"), "1\ntwo\n");
        Assert.Contains("word.txt:2: 'two' is not a feature index", Assert.Throws<PolyEngineException>(() => FeatureList.Load(dir.File("word.txt"), 8)).Message);
        File.WriteAllText(dir.File("obj.json"), "{\"a\": 1}");
        Assert.Contains("expected a JSON array", Assert.Throws<PolyEngineException>(() => FeatureList.Load(dir.File("obj.json"), 8)).Message);
    }

    /// <summary>A toy model, a 160-feature SAE at its residual stream, toy explanations, an active list.</summary>
    static (string Model, string Sae, string Ex, string Active) ToyInputs(Fixtures.TempDir dir)
    {
        string model = dir.File("toy"), sae = dir.File("sae"), ex = dir.File("ex.jsonl"), active = dir.File("active.txt");
        Assert.Equal(0, Run("toy", "--family", "gpt2", "--preset", "tiny", "--seed", "1", "--out", model).Code);
        Assert.Equal(0, Run("toy-sae", "--model", model, "--hook", "blocks.1.hook_resid_post", "--d-sae", "160", "--arch", "standard", "--seed", "2", "--out", sae).Code);
        Assert.Equal(0, Run("toy-explanations", "--sae", sae, "--dim", "16", "--seed", "3", "--out", ex).Code);
        File.WriteAllText(active, string.Join("\n", Enumerable.Range(0, 160).Where(j => j % 11 != 5)));
        return (model, sae, ex, active);
    }

    sealed class BinRow
    {
        [JsonPropertyName("sae")] public string Sae { get; set; } = "";
        [JsonPropertyName("bin")] public string Bin { get; set; } = "";
        [JsonPropertyName("lo")] public double Lo { get; set; }
        [JsonPropertyName("hi")] public double Hi { get; set; }
        [JsonPropertyName("pairs")] public long Pairs { get; set; }
        [JsonPropertyName("fraction")] public double Fraction { get; set; }
        [JsonPropertyName("fraction_below_hi")] public double FractionBelowHi { get; set; }
    }

    sealed class QualifiedRow
    {
        [JsonPropertyName("sae")] public string Sae { get; set; } = "";
        [JsonPropertyName("tau")] public double Tau { get; set; }
        [JsonPropertyName("target")] public int Target { get; set; }
        [JsonPropertyName("bin")] public string Bin { get; set; } = "";
        [JsonPropertyName("partner")] public int Partner { get; set; }
        [JsonPropertyName("cosine")] public float Cosine { get; set; }
        [JsonPropertyName("similarity")] public float Similarity { get; set; }
        [JsonPropertyName("logit_cosine")] public float LogitCosine { get; set; }
    }

    [Fact]
    public async Task InterferenceWritesTheDocumentedTables()
    {
        using var dir = new Fixtures.TempDir();
        var (model, sae, ex, active) = ToyInputs(dir);
        string outDir = dir.File("out");
        var (code, stdout, stderr) = Run("interference", "--sae", sae, "--explanations", ex, "--active", active, "--top", "3", "--partners", "2",
            "--sample", "2", "--seed", "5", "--model", model, "--tile", "50", "--out", outDir);
        Assert.True(code == 0, stderr);
        Assert.Contains("qualified targets: τ 0.4:", stdout);
        Assert.Contains("without an explanation embedding left out", stdout);
        await using (var f = File.OpenRead(Path.Combine(outDir, "bins.parquet")))
        {
            var bins = await Parquet.Serialization.ParquetSerializer.DeserializeAsync<BinRow>(f);
            Assert.Equal(["sae", "bin", "lo", "hi", "pairs", "fraction", "fraction_below_hi"], bins.Schema.Fields.Select(x => x.Name));
            Assert.Equal(InterferenceBins.Keys, bins.Data.Select(b => b.Bin));
            Assert.Equal([0, 0.1, 0.2, 0.3, 0.4], bins.Data.Select(b => b.Lo));
            using var manifest = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")));
            var m = manifest.RootElement.GetProperty("saes")[0];
            long pairs = m.GetProperty("pairs").GetInt64(), features = m.GetProperty("features").GetInt64();
            Assert.Equal(features * (features - 1) / 2, pairs);
            Assert.Equal(pairs, bins.Data.Sum(b => b.Pairs) + m.GetProperty("negative_pairs").GetInt64());
            Assert.All(bins.Data, b => Assert.Equal((double)b.Pairs / pairs, b.Fraction, 12));
            long negative = m.GetProperty("negative_pairs").GetInt64();
            Assert.All(bins.Data, b => Assert.Equal((double)(negative + bins.Data.Where(x => x.Lo <= b.Lo).Sum(x => x.Pairs)) / pairs, b.FractionBelowHi, 12));
            Assert.Equal(1.0, bins.Data[^1].FractionBelowHi, 12);
            Assert.Equal(160 - 15, features + m.GetProperty("left_out").GetProperty("without_explanation").GetInt64());   // 15 not active
        }
        await using (var f = File.OpenRead(Path.Combine(outDir, "qualified.parquet")))
        {
            var q = await Parquet.Serialization.ParquetSerializer.DeserializeAsync<QualifiedRow>(f);
            Assert.Equal(["sae", "tau", "target", "bin", "partner", "cosine", "similarity", "logit_cosine"], q.Schema.Fields.Select(x => x.Name));
            Assert.NotEmpty(q.Data);
            Assert.All(q.Data, r =>
            {
                int b = Array.IndexOf(InterferenceBins.Keys, r.Bin);
                Assert.Equal(b, InterferenceBins.Of(r.Cosine));
                Assert.True(r.Similarity < r.Tau);
                Assert.InRange(r.LogitCosine, -1.0001f, 1.0001f);
                Assert.True(r.Target % 11 != 5 && r.Partner % 11 != 5, "only --active features");
            });
            // at most --partners per (τ, target, bin), strongest first
            foreach (var g in q.Data.GroupBy(r => (r.Tau, r.Target, r.Bin)))
            {
                Assert.InRange(g.Count(), 1, 2);
                Assert.Equal(g.Select(r => r.Cosine).OrderDescending(), g.Select(r => r.Cosine));
            }
        }
        foreach (var table in new[] { "histogram", "bins_unrelated", "targets", "partners" }) Assert.True(File.Exists(Path.Combine(outDir, table + ".parquet")), table);
        var sample = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "sample.json")))!;
        Assert.Equal(5, (int)sample["seed"]!);
        Assert.Equal(4, sample["saes"]![0]!["taus"]!.AsArray().Count);
        var partner = sample["saes"]![0]!["taus"]![0]!["targets"]![0]!["bins"]!["0.0-0.1"]!["partners"]![0]!;
        Assert.InRange((double)partner["logit_cosine"]!, -1.0001, 1.0001);   // --model: the logit-lens proxy beside each sampled pair
        Assert.False(Directory.EnumerateFiles(outDir, "checkpoint*").Any());
        Assert.Contains("holds a different run", Run("interference", "--sae", sae, "--out", outDir).Err);

        // CSV: the documented headers
        string csvDir = dir.File("csv");
        Assert.Equal(0, Run("interference", "--sae", sae, "--explanations", ex, "--top", "2", "--format", "csv", "--out", csvDir).Code);
        Assert.Equal("sae,bin,lo,hi,pairs,fraction,fraction_below_hi", File.ReadLines(Path.Combine(csvDir, "bins.csv")).First());
        Assert.Equal("sae,tau,target,bin,partner,cosine,similarity", File.ReadLines(Path.Combine(csvDir, "qualified.csv")).First());
        Assert.Equal("sae,tau,target,bin,partners", File.ReadLines(Path.Combine(csvDir, "targets.csv")).First());
        Assert.Equal("sae,feature_a,feature_b,cosine,similarity", File.ReadLines(Path.Combine(csvDir, "partners.csv")).First());
        Assert.Equal("sae,lo,hi,pairs", File.ReadLines(Path.Combine(csvDir, "histogram.csv")).First());

        // without explanations: interference only, and it says so; over an earlier run (--overwrite) its other tables go
        var (c2, o2, e2) = Run("interference", "--sae", sae, "--overwrite", "--out", csvDir);
        Assert.True(c2 == 0, e2);
        Assert.Contains("no --explanations: interference only", o2);
        Assert.Equal(["bins.parquet", "histogram.parquet", "manifest.json"], Directory.GetFiles(csvDir).Select(Path.GetFileName).Where(f => !f!.StartsWith('.')).Order());
    }

    /// <summary>A run killed mid-scan (checkpoints every tile) and rerun with the same --out continues and writes the same
    /// bytes as a run straight through.</summary>
    [Fact]
    public void KilledInterferenceRunResumesToIdenticalOutput()
    {
        using var dir = new Fixtures.TempDir();
        var (_, sae, ex, _) = ToyInputs(dir);
        string straight = dir.File("straight"), resumed = dir.File("resumed");
        string[] args = ["--sae", sae, "--explanations", ex, "--top", "2", "--sample", "2", "--tile", "40", "--format", "csv"];
        Assert.Equal(0, Run(["interference", .. args, "--out", straight]).Code);

        var sources = new[] { new InterferenceSource(sae, ex) };
        var options = new InterferenceJobOptions
        {
            Scan = new InterferenceOptions { TopN = 2, Tile = 40 }, Sample = new InterferenceSampleOptions(2, 3, 0), CheckpointEvery = TimeSpan.Zero,
        };
        var key = InterferenceJob.RunKey(sources, options);
        using (RunFolder.Prepare(resumed, key, overwrite: false, outputs: "format=Csv"))   // as the CLI marks it before the scan
            Assert.Throws<OperationCanceledException>(() => InterferenceJob.Run(new PolyEngine.Kernels.Cpu.CpuBackend(2), sources, options, resumed, key.Value, new KillAfter(4)));
        Assert.True(File.Exists(InterferenceJob.CheckpointPath(resumed, 0)));
        var (code, stdout, stderr) = Run(["interference", .. args, "--out", resumed]);
        Assert.True(code == 0, stderr);
        Assert.Contains("resuming at tile 4", stdout);
        foreach (var file in new[] { "bins.csv", "histogram.csv", "bins_unrelated.csv", "targets.csv", "qualified.csv", "partners.csv", "sample.json" })
            Assert.True(File.ReadAllBytes(Path.Combine(straight, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, file))), file);
    }

    sealed class KillAfter(int tiles) : IInterferenceLog
    {
        public void Info(string line) { }
        public void Progress(string sae, long tilesDone, long total, double pairsPerSecond)
        {
            if (tilesDone == tiles) throw new OperationCanceledException("killed");
        }
    }

    public static TheoryData<string[], string> BadInvocations() => new()
    {
        { ["--tau", "1.2"], "--tau '1.2' is not a threshold in (0, 1)" },
        { ["--tau", "0.4,0.4"], "--tau lists 0.4 twice" },
        { ["--explanations", "a.jsonl,b.jsonl"], "--explanations lists 2 file(s) but --sae lists 1" },
        { ["--sample", "3"], "--sample draws from the qualified targets, which need --explanations" },
        { ["--partners", "0"], "--partners must be at least 1" },
        { ["--coactivation", "."], "no coactivation.safetensors there" },
    };

    [Theory]
    [MemberData(nameof(BadInvocations))]
    public void BadOptionsAreOneLineErrors(string[] extra, string expected)
    {
        using var dir = new Fixtures.TempDir();
        var (_, sae, _, _) = ToyInputs(dir);
        var (code, _, err) = Run(["interference", "--sae", sae, "--out", dir.File("out"), .. extra]);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(Directory.Exists(dir.File("out")) && Directory.EnumerateFiles(dir.File("out"), "*.parquet").Any());
    }

    [Fact]
    public void BadInputFilesAreOneLineErrors()
    {
        using var dir = new Fixtures.TempDir();
        var (model, sae, _, _) = ToyInputs(dir);
        File.WriteAllText(dir.File("far.jsonl"), """{"index": 160, "embedding": [1, 2]}""");
        var (code, _, err) = Run("interference", "--sae", sae, "--explanations", dir.File("far.jsonl"), "--out", dir.File("o1"));
        Assert.Equal(2, code);
        Assert.Contains("far.jsonl:1: feature index 160 is outside 0..159", err);
        File.WriteAllText(dir.File("bad.txt"), "1\n999\n");
        Assert.Contains("bad.txt:2: feature 999 is outside 0..159", Run("interference", "--sae", sae, "--active", dir.File("bad.txt"), "--out", dir.File("o2")).Err);
        Assert.Contains("folder not found", Run("interference", "--sae", dir.File("nope"), "--out", dir.File("o3")).Err);
        // an MLP-space SAE with the logit-lens proxy: the hook's space is not the residual stream
        string mlp = dir.File("mlp-sae");
        Assert.Equal(0, Run("toy-sae", "--model", model, "--hook", "blocks.0.mlp.hook_post", "--d-sae", "40", "--arch", "standard", "--out", mlp).Code);
        Assert.Contains("needs an SAE of the residual stream", Run("interference", "--sae", mlp, "--model", model, "--out", dir.File("o4")).Err);
    }
}

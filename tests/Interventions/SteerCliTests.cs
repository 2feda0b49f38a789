using System.Globalization;
using System.Text;
using PolyEngine.Interventions;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Interventions;

/// <summary><c>polyengine steer</c>: its tables hold what the library computes, for the three ways to give vectors and for
/// neurons; every bad input is one line naming the file, line or option, and nothing is written.</summary>
public class SteerCliTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    /// <summary>A float32 .npy [rows, width] of <paramref name="values"/>.</summary>
    internal static void WriteNpy(string path, float[] values, int rows, int width)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {width}), }}";
        header = header.PadRight(64 - 10 - 1) + "\n";
        using var f = File.Create(path);
        f.Write([0x93, .. "NUMPY"u8, 1, 0, (byte)header.Length, 0]);
        f.Write(Encoding.ASCII.GetBytes(header));
        foreach (var v in values) f.Write(BitConverter.GetBytes(v));
    }

    static string[][] Csv(string path) => File.ReadAllLines(path).Select(l => l.Split(',')).ToArray();

    static void WritePrompts(string path) => File.WriteAllLines(path,
    [
        "{\"ids\": [5, 17, 300, 2, 41], \"targets\": [17, 64], \"label\": \"kept out of the way\"}",
        "",
        "{\"text\": \"a,b c\", \"target_strings\": [\" c\", \"a\"]}",
        "{\"ids\": [9, 12, 700], \"targets\": [3]}",
    ]);

    [Fact]
    public void TheTablesHoldWhatTheLibraryComputes()
    {
        using var dir = new Fixtures.TempDir();
        WritePrompts(dir.File("p.jsonl"));
        var rng = new Rng(4);
        var raw = Enumerable.Range(0, 2 * 64).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        WriteNpy(dir.File("v.npy"), raw, 2, 64);
        var (code, stdout, stderr) = Run("steer", "--model", Gpt2, "--hook", "blocks.0.hook_mlp_out", "--vectors", dir.File("v.npy"), "--random", "1", "--seed", "9",
            "--prompts", dir.File("p.jsonl"), "--scales", "-3,0.5,2", "--metrics", "weighted_cosine,overlap,kl,spearman_rank", "--top", "2",
            "--rows-budget", "30", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains("3 prompts × 9 edits (3 vectors × 3 scales) at blocks.0.hook_mlp_out = 27 interventions", stdout);
        Assert.Contains("interventions/s", stdout);

        using var m = Model.Load(Gpt2);
        var g = new Rng(9).Normals([1, 64], 1f);
        var plan = new SteerPlan
        {
            Hook = HookName.Parse("blocks.0.hook_mlp_out"), Prompts = PromptFile.Load(dir.File("p.jsonl"), () => m.Tokenizer),
            Vectors = [raw[..64], raw[64..], g], Scales = [-3f, 0.5f, 2f],
            Metrics = [SteerMetric.WeightedCosine, SteerMetric.Overlap, SteerMetric.Kl, SteerMetric.SpearmanRank], TopK = 2,
        };
        var expected = SteerSweep.Collect(m, plan);
        var rows = Csv(dir.File("out/rows.csv"));
        Assert.Equal(["prompt", "vector", "scale", "weighted_cosine", "overlap", "kl", "spearman_rank", "top_1_id", "top_1_p", "top_2_id", "top_2_p"], rows[0]);
        Assert.Equal(expected.Rows.Count, rows.Length - 1);
        for (int i = 0; i < expected.Rows.Count; i++)
        {
            var (e, a) = (expected.Rows[i], rows[i + 1]);
            Assert.Equal([e.Prompt.ToString(), e.Item.ToString(), e.Amount.ToString("R", CultureInfo.InvariantCulture)], a[..3]);
            for (int k = 0; k < 4; k++) Assert.Equal(e.Metrics[k], double.Parse(a[3 + k], CultureInfo.InvariantCulture));
            Assert.Equal(e.TopIds![0].ToString(), a[7]);
        }
        var best = Csv(dir.File("out/best.csv"));
        Assert.Equal(["prompt", "vector", "baseline_weighted_cosine", "best_weighted_cosine", "best_weighted_cosine_scale", "delta_weighted_cosine", "rel_delta_weighted_cosine"],
            best[0][..7]);
        Assert.Equal(3 * 3 + 1, best.Length);   // prompts × vectors
        var vectors = Csv(dir.File("out/vectors.csv"));
        Assert.Equal(["0", "file", "0"], vectors[1][..3]);
        Assert.Equal(["2", "random", "0"], vectors[3][..3]);
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("out/manifest.json")))!;
        Assert.Equal(27, (int)manifest["results"]!["interventions"]!);
        Assert.True((double)manifest["results"]!["interventions_per_second"]! > 0);
    }

    [Fact]
    public void FromTheLastTokenTheRowsAreTheLibrarysWindowedSweep()
    {
        using var dir = new Fixtures.TempDir();
        WritePrompts(dir.File("p.jsonl"));
        var (code, stdout, stderr) = Run("steer", "--model", Gpt2, "--hook", "blocks.1.hook_resid_pre", "--random", "2", "--seed", "3",
            "--prompts", dir.File("p.jsonl"), "--scales", "-4,6", "--from", "-1", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        using var m = Model.Load(Gpt2);
        var g = new Rng(3).Normals([2, 64], 1f);
        var plan = new SteerPlan
        {
            Hook = HookName.Parse("blocks.1.hook_resid_pre"), Prompts = PromptFile.Load(dir.File("p.jsonl"), () => m.Tokenizer),
            Vectors = [g[..64], g[64..]], Scales = [-4f, 6f], From = -1,
        };
        var expected = SteerSweep.Collect(m, plan).Rows;
        var rows = Csv(dir.File("out/rows.csv"));
        Assert.Equal(expected.Count, rows.Length - 1);
        for (int i = 0; i < expected.Count; i++)
            for (int k = 0; k < 3; k++) Assert.Equal(expected[i].Metrics[k], double.Parse(rows[i + 1][3 + k], CultureInfo.InvariantCulture));
        Assert.Contains("\"from\": -1", File.ReadAllText(dir.File("out/manifest.json")));
    }

    [Fact]
    public void BenchSteerMeasuresTheWorkloadItWritesForTheBaseline()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("bench", "steer", "--model", Gpt2, "--hook", "blocks.0.hook_resid_post", "--prompts", "2", "--vectors", "3",
            "--from", "-2", "--write-workload", dir.File("w"), "--json", "--device", "cpu");
        Assert.True(code == 0, stderr);
        var json = System.Text.Json.Nodes.JsonNode.Parse(stdout)!;
        Assert.Equal(2 * 3 * 32, (int)json["interventions"]!);
        Assert.True((double)json["interventions_per_second"]! > 0);
        // The written workload is the plan that was measured: the library's sweep of it gives the written rows.
        using var m = Model.Load(Gpt2);
        var plan = new SteerPlan
        {
            Hook = HookName.Parse("blocks.0.hook_resid_post"), Prompts = PromptFile.Load(dir.File("w/prompts.jsonl"), () => m.Tokenizer),
            Vectors = PolyEngine.Formats.VectorFile.Load(dir.File("w/vectors.safetensors")), From = -2,
        };
        Assert.All(plan.Prompts, p => Assert.InRange(p.Ids.Length, 10, 16));
        Assert.Contains("\"from\":-2", File.ReadAllText(dir.File("w/plan.json")));
        var expected = SteerSweep.Collect(m, plan).Rows;
        var rows = Csv(dir.File("w/rows.csv"));
        Assert.Equal(["prompt", "vector", "scale", "weighted_cosine", "overlap", "kl"], rows[0]);
        Assert.Equal(expected.Count, rows.Length - 1);
        for (int i = 0; i < expected.Count; i++)
            for (int k = 0; k < 3; k++) Assert.Equal(expected[i].Metrics[k], double.Parse(rows[i + 1][3 + k], CultureInfo.InvariantCulture));
        var bad = Run("bench", "steer", "--model", Gpt2, "--prompts", "0");
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("--prompts and --vectors must be positive", bad.Err);
    }

    [Fact]
    public void SaeFeaturesAreTheirUnitDecoderRowsAtTheSaesHook()
    {
        using var dir = new Fixtures.TempDir();
        WritePrompts(dir.File("p.jsonl"));
        string sae = Path.Combine(Gpt2, "sae", "standard");
        var (code, stdout, stderr) = Run("steer", "--model", Gpt2, "--sae", sae, "--features", "1,3-4", "--prompts", dir.File("p.jsonl"),
            "--scales", "-1,4", "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        var config = SaeConfig.Load(sae);
        Assert.Contains($"at {config.Hook}", stdout);
        var decoder = SparseAutoencoder.ReadDecoder(config);
        using var m = Model.Load(Gpt2);
        var plan = new SteerPlan
        {
            Hook = config.Hook, Prompts = PromptFile.Load(dir.File("p.jsonl"), () => m.Tokenizer),
            Vectors = new[] { 1, 3, 4 }.Select(f => decoder.AsSpan(f * config.DIn, config.DIn).ToArray()).ToArray(), Scales = [-1f, 4f],
        };
        var expected = SteerSweep.Collect(m, plan).Rows;
        var rows = Csv(dir.File("out/rows.csv"));
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i].Metrics[0], double.Parse(rows[i + 1][3], CultureInfo.InvariantCulture));
        Assert.Equal(["1", "sae", "3"], Csv(dir.File("out/vectors.csv"))[2][..3]);
        var other = Run("steer", "--model", Gpt2, "--sae", sae, "--features", "1", "--hook", "blocks.0.hook_resid_post", "--prompts", dir.File("p.jsonl"), "--out", dir.File("o2"));
        Assert.Contains("differs from the SAE's hook", other.Err);
    }

    [Fact]
    public void TheNeuronLocusScalesCoordinates()
    {
        using var dir = new Fixtures.TempDir();
        WritePrompts(dir.File("p.jsonl"));
        var (code, _, stderr) = Run("steer", "--model", Gpt2, "--hook", "blocks.1.mlp.hook_post", "--neurons", "7,100-101", "--factors", "0,5",
            "--prompts", dir.File("p.jsonl"), "--format", "csv", "--out", dir.File("out"));
        Assert.True(code == 0, stderr);
        var rows = Csv(dir.File("out/rows.csv"));
        Assert.Equal(["prompt", "neuron", "factor"], rows[0][..3]);
        Assert.Equal(["0", "-1", "1"], rows[1][..3]);   // the baseline
        Assert.Equal(["0", "0", "0"], rows[2][..3]);
        Assert.Equal(3 * (1 + 3 * 2) + 1, rows.Length);
        Assert.False(File.Exists(dir.File("out/vectors.csv")));
        Assert.Equal(["prompt", "neuron", "baseline_weighted_cosine"], Csv(dir.File("out/best.csv"))[0][..3]);
    }

    public static TheoryData<string, string> BadInputs() => new()
    {
        { "no-hook", "--hook is missing" },
        { "bad-hook", "has no such hook" },
        { "width", "vector 0 has 10 values; the hook is 64 wide" },
        { "zero", "vector 1 is zero" },
        { "nan-vector", "vector 0, value 3 is NaN" },
        { "nan-scale", "--scales: 'NaN' is not a finite number" },
        { "target", "prompt 0: target token 1000 is outside the vocabulary 0..999" },
        { "empty-prompt", "p.jsonl:1: the prompt is empty" },
        { "long-prompt", "more than the context n_ctx" },
        { "bad-json", "p.jsonl:2: not valid JSON" },
        { "no-targets", "p.jsonl:1: give \"targets\" (token ids) or \"target_strings\"" },
        { "feature", "--features: feature 900 is outside" },
        { "neuron", "--neurons: coordinate 256 is outside 0..255" },
        { "two-loci", "give one locus" },
        { "metric", "--metrics: 'kendal' is not a metric" },
        { "from", "--from 3: prompt 0 has 3 tokens, so it has no position 3" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void ABadInputIsOneLineAndWritesNothing(string what, string expected)
    {
        using var dir = new Fixtures.TempDir();
        string prompts = dir.File("p.jsonl"), vectors = dir.File("v.npy");
        File.WriteAllText(prompts, what switch
        {
            "target" => "{\"ids\": [1, 2], \"targets\": [1000]}\n",
            "empty-prompt" => "{\"ids\": [], \"targets\": [1]}\n",
            "long-prompt" => $"{{\"ids\": [{string.Join(",", Enumerable.Repeat(1, 2000))}], \"targets\": [1]}}\n",
            "bad-json" => "{\"ids\": [1, 2], \"targets\": [1]}\n{\"ids\": [1, 2\n",
            "no-targets" => "{\"ids\": [1, 2]}\n",
            _ => "{\"ids\": [1, 2, 3], \"targets\": [4]}\n",
        });
        var values = new float[2 * 64];
        values[0] = 1;
        if (what == "nan-vector") values[3] = float.NaN;
        else values[64] = what == "zero" ? 0 : 1;
        if (what == "width") WriteNpy(vectors, new float[20].Select((_, i) => (float)i).ToArray(), 2, 10);
        else WriteNpy(vectors, values, 2, 64);
        string[] args = what switch
        {
            "no-hook" => ["--vectors", vectors],
            "bad-hook" => ["--hook", "blocks.9.hook_resid_post", "--vectors", vectors],
            "nan-scale" => ["--hook", "blocks.0.hook_resid_post", "--vectors", vectors, "--scales", "1,NaN"],
            "feature" => ["--sae", Path.Combine(Gpt2, "sae", "standard"), "--features", "900"],
            "neuron" => ["--hook", "blocks.1.mlp.hook_post", "--neurons", "256"],
            "two-loci" => ["--hook", "blocks.1.mlp.hook_post", "--neurons", "2", "--vectors", vectors],
            "metric" => ["--hook", "blocks.0.hook_resid_post", "--vectors", vectors, "--metrics", "kendal"],
            "from" => ["--hook", "blocks.0.hook_resid_post", "--vectors", vectors, "--from", "3"],
            _ => ["--hook", "blocks.0.hook_resid_post", "--vectors", vectors],
        };
        var (code, _, stderr) = Run(["steer", "--model", Gpt2, "--prompts", prompts, .. args, "--out", dir.File("out")]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("out/rows.parquet")));
        Assert.False(File.Exists(dir.File("out/manifest.json")));
    }

    [Fact]
    public void HelpShowsExamples()
    {
        var (code, stdout, _) = Run("steer", "--help");
        Assert.Equal(0, code);
        Assert.Contains("polyengine steer --model gpt2 --hook blocks.6.hook_resid_post --vectors dirs.npy", stdout);
        Assert.Contains("--rows-budget", stdout);
    }
}

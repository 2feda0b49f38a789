using System.Text.Json.Nodes;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Experiments;

/// <summary><c>polyengine report</c> over an experiment run (Parquet and CSV) and other folders: a self-contained page with
/// embedded figures, PNG and SVG beside it, and summary.json holding the numbers the tables hold.</summary>
public class ReportTests : IClassFixture<FeatureExperimentTests.World>
{
    readonly FeatureExperimentTests.World _w;
    public ReportTests(FeatureExperimentTests.World w) => _w = w;

    [Fact]
    public void AnExperimentRunBecomesAPageWithFiguresAndASummary()
    {
        using var dir = new Fixtures.TempDir();
        foreach (var (fmt, name) in new[] { ("parquet", "fig3"), ("csv", "fig3csv") })
        {
            var (code, _, stderr) = Run("experiment", "feature", "--model", _w.Model, "--sample", _w.Sample, "--records", _w.Records, "--sentences", _w.Sentences,
                "--scales", "-2,2", "--metrics", "weighted_cosine,overlap", "--format", fmt, "--out", dir.File(name));
            Assert.True(code == 0, stderr);
        }
        Directory.CreateDirectory(dir.File("other"));
        File.WriteAllText(dir.File("other/manifest.json"), """{"tool": "polyengine gradient", "version": "0.0.1"}""");
        var (rc, stdout, err) = Run("report", dir.File("fig3"), dir.File("fig3csv"), dir.File("other"), "--out", dir.File("report"));
        Assert.True(rc == 0, err);
        Assert.Contains("index.html", stdout);
        Assert.Contains("warning: report:", err);   // the gradient run: said on stderr and on the page
        string html = File.ReadAllText(dir.File("report/index.html"));
        AssertSelfContained(html);
        Assert.Contains("which the report does not show", html);
        Assert.Contains("Written by PolyEngine 0.0.1", html);
        // Two runs × (two metrics' levels figures + the regression coefficients, when the run had enough cases for them).
        var pngs = Directory.GetFiles(dir.File("report/figures"), "*.png");
        Assert.Equal(pngs.Length, Directory.GetFiles(dir.File("report/figures"), "*.svg").Length);
        Assert.True(4 == pngs.Count(p => !p.EndsWith("-regressions.png")), err + string.Join(",", pngs));
        // summary.json holds what the levels table holds, the same from Parquet and CSV.
        var summary = JsonNode.Parse(File.ReadAllText(dir.File("report/summary.json")))!["runs"]!.AsArray();
        Assert.Equal(3, summary.Count);
        var csv = File.ReadAllLines(dir.File("fig3csv/levels.csv"));
        var header = csv[0].Split(',');
        var first = csv[1].Split(',');
        var fromCsv = summary[1]!["levels"]![0]!;
        var fromParquet = summary[0]!["levels"]![0]!;
        Assert.Equal(first[Array.IndexOf(header, "level")], (string)fromCsv["level"]!);
        Assert.Equal(double.Parse(first[Array.IndexOf(header, "mean")], System.Globalization.CultureInfo.InvariantCulture), (double)fromCsv["mean"]!, 12);
        Assert.Equal((double)fromCsv["mean"]!, (double)fromParquet["mean"]!, 12);
        Assert.Equal((string)fromCsv["level"]!, (string)fromParquet["level"]!);

        var bad = Run("report", dir.File("nowhere"), "--out", dir.File("r2"));
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("does not exist", bad.Err);
    }

    /// <summary>Nothing fetched and nothing run: no scripts, no links out, every image inline.</summary>
    internal static void AssertSelfContained(string html)
    {
        Assert.Contains("data:image/png;base64,", html);
        Assert.DoesNotContain("http://", html);
        Assert.DoesNotContain("https://", html);
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("src=\"figures/", html);
    }

    /// <summary>The scans on the toy model — features, co-activation, interference with toy explanations, a steering sweep —
    /// become their sections, and summary.json holds the numbers their tables hold.</summary>
    [Fact]
    public void ScanRunsBecomeTheirSections()
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToyCorpus.Write(dir.File("corpus.jsonl"), 12, 4, 1);
        PolyEngine.Toys.ToyExplanations.Write(dir.File("e.jsonl"), 32, dim: 16, topics: 4, seed: 3);
        File.WriteAllLines(dir.File("p.jsonl"), ["{\"ids\": [5, 17, 300, 2, 41], \"targets\": [17, 64]}", "{\"ids\": [9, 12, 700], \"targets\": [3]}"]);
        foreach (var args in new[]
        {
            new[] { "features", "--model", _w.Model, "--sae", _w.Sae, "--corpus", dir.File("corpus.jsonl"), "--out", dir.File("features") },
            ["coactivate", "--model", _w.Model, "--sae", _w.Sae, "--corpus", dir.File("corpus.jsonl"), "--top", "all", "--out", dir.File("coact")],
            ["interference", "--sae", _w.Sae, "--explanations", dir.File("e.jsonl"), "--out", dir.File("interf")],
            ["steer", "--model", _w.Model, "--sae", _w.Sae, "--features", "1,3", "--random", "1", "--prompts", dir.File("p.jsonl"), "--scales", "-2,2", "--out", dir.File("steer")],
        })
        {
            var (code, _, stderr) = Run(args);
            Assert.True(code == 0, $"{args[0]}: {stderr}");
        }
        var (rc, _, err) = Run("report", dir.File("features"), dir.File("coact"), dir.File("interf"), dir.File("steer"), "--out", dir.File("report"));
        Assert.True(rc == 0, err);
        Assert.True(!err.Contains("warning"), err);
        string html = File.ReadAllText(dir.File("report/index.html"));
        AssertSelfContained(html);
        var names = Directory.GetFiles(dir.File("report/figures"), "*.png").Select(f => Path.GetFileName(f)).Order().ToArray();
        Assert.Equal(["fig1-feature-density.png", "fig2-jaccard.png", "fig3-interference-cdf.png", "fig4-similarity-cdf.png"], names);
        var runs = JsonNode.Parse(File.ReadAllText(dir.File("report/summary.json")))!["runs"]!.AsArray();
        Assert.All(runs, r => Assert.Null(r!["error"]));

        // Interference: the fractions below the bin edges are the bins table's, the similarity fractions the similarity table's.
        var interf = runs[2]!["interference"]!["sae"]!;
        using (var reader = PolyEngine.Output.Report.Tables.Rows(dir.File("interf"), "bins", "fraction_below_hi").GetEnumerator())
        {
            Assert.True(reader.MoveNext());
            Assert.Equal(double.Parse(reader.Current["fraction_below_hi"], System.Globalization.CultureInfo.InvariantCulture), (double)interf["fraction_below"]!["0.1"]!, 12);
        }
        Assert.Equal((long)JsonNode.Parse(File.ReadAllText(dir.File("interf/manifest.json")))!["saes"]![0]!["pairs"]!, (long)interf["pairs"]!);
        var sim = PolyEngine.Output.Report.Tables.Read(dir.File("interf"), "similarity", "tau", "fraction_below")!;
        Assert.Equal(4, sim.Rows.Count);
        foreach (var r in sim.Rows)
            Assert.Equal(double.Parse(r["fraction_below"], System.Globalization.CultureInfo.InvariantCulture),
                (double)interf["similarity_below"]![double.Parse(r["tau"], System.Globalization.CultureInfo.InvariantCulture).ToString("0.0##", System.Globalization.CultureInfo.InvariantCulture)]!, 12);
        Assert.NotNull(interf["qualified"]);

        // Co-activation: the top pair is the pairs table's busiest; every pair is counted once in the Jaccard distribution.
        var coact = runs[1]!["coactivation"]!["sae"]!;
        var pairs = PolyEngine.Output.Report.Tables.Read(dir.File("coact"), "pairs", "count_ab")!;
        Assert.Equal(pairs.Rows.Max(r => long.Parse(r["count_ab"])), (long)coact["top_pairs"]![0]!["count_ab"]!);
        long together = (long)coact["pairs_together"]!;
        Assert.Equal(32L * 31 / 2, together + (long)coact["pairs_never_together"]!);
        Assert.Equal(together, coact["jaccard_log10_histogram"]!["pairs"]!.AsArray().Sum(x => (long)x!));
        // --top all: the table is every co-occurring pair, so its Jaccards binned by hand give the same distribution.
        Assert.Equal(pairs.Rows.Count, together);
        var byHand = new long[60];
        foreach (var r in pairs.Rows)
            byHand[Math.Clamp((int)Math.Floor((Math.Log10(double.Parse(r["jaccard"], System.Globalization.CultureInfo.InvariantCulture)) + 6) / 6 * 60), 0, 59)]++;
        Assert.Equal(byHand, coact["jaccard_log10_histogram"]!["pairs"]!.AsArray().Select(x => (long)x!).ToArray());

        // Features: every feature is counted, fired or not.
        var feats = runs[0]!["features"]!["sae"]!;
        Assert.Equal(32, (int)feats["features"]!);
        Assert.Equal(32 - (int)feats["never_fired"]!, feats["log10_frequency_histogram"]!["features"]!.AsArray().Sum(x => (long)x!));

        // Steer: one mean per vector (two features and the random one), over both prompts.
        var means = runs[3]!["best_means"]!.AsArray();
        Assert.Equal(3, means.Count);
        Assert.All(means, m => Assert.Equal(2, (int)m!["prompts"]!));
    }

    /// <summary>Bad input never crashes the report: a folder without a manifest, a table from an older version without a
    /// column, a run with no results — each said on the page (and as a warning where it could not be shown); an --out that
    /// cannot be written is a one-line error before any work.</summary>
    [Fact]
    public void BadRunFoldersAreSaidOnThePage()
    {
        using var dir = new Fixtures.TempDir();
        Directory.CreateDirectory(dir.File("empty"));
        Directory.CreateDirectory(dir.File("old"));
        File.WriteAllText(dir.File("old/manifest.json"), """{"tool": "polyengine experiment feature"}""");
        File.WriteAllLines(dir.File("old/levels.csv"), ["level,metric,cases", "self,overlap,3"]);
        Directory.CreateDirectory(dir.File("none"));
        File.WriteAllText(dir.File("none/manifest.json"), """{"tool": "polyengine inject", "version": "1.0.0.0"}""");
        File.WriteAllLines(dir.File("none/summary.csv"), ["type,category,trials,count_rate,prob_rate,p_value,prob_p_value"]);
        Directory.CreateDirectory(dir.File("broken"));
        File.WriteAllText(dir.File("broken/manifest.json"), "{not json");
        var (rc, _, err) = Run("report", dir.File("empty"), dir.File("old"), dir.File("none"), dir.File("broken"), "--out", dir.File("report"));
        Assert.True(rc == 0, err);
        string html = File.ReadAllText(dir.File("report/index.html"));
        Assert.Contains("has no manifest.json", html);
        Assert.Contains("has no column &#39;positive_cases&#39;", html);
        Assert.Contains("The manifest has no version", html);
        Assert.Contains("no trials", html);
        Assert.Contains("is not valid JSON", html);
        Assert.Equal(3, err.Split('\n').Count(l => l.StartsWith("warning: ")));   // empty, old, broken; an empty run is not a warning
        var runs = JsonNode.Parse(File.ReadAllText(dir.File("report/summary.json")))!["runs"]!.AsArray();
        Assert.Empty(runs[2]!["summary"]!.AsArray());

        File.WriteAllText(dir.File("afile"), "");
        var bad = Run("report", dir.File("none"), "--out", dir.File("afile/report"));
        Assert.NotEqual(0, bad.Code);
        Assert.Contains("cannot write there", bad.Err);
        Assert.Single(bad.Err.Trim().Split('\n'));
    }

    [Fact]
    public void ANeuronRunGetsItsBucketBoxes()
    {
        using var dir = new Fixtures.TempDir();
        FeatureExperimentTests.World.WriteNeuronInputs(dir);
        var (code, _, stderr) = Run("experiment", "neuron", "--model", _w.Model, "--sae", _w.Sae, "--explanations", dir.File("e.jsonl"), "--records", dir.File("records"),
            "--sentences", _w.Sentences, "--factors", "0,3", "--align-min", "0.15", "--sentences-per-token", "1", "--out", dir.File("fig6"));
        Assert.True(code == 0, stderr);
        (code, _, stderr) = Run("report", dir.File("fig6"), "--out", dir.File("report"));
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(dir.File("report/figures/fig1-neuron.png")) && File.Exists(dir.File("report/figures/fig1-neuron.svg")));
        var buckets = JsonNode.Parse(File.ReadAllText(dir.File("report/summary.json")))!["runs"]![0]!["buckets"]!.AsArray();
        Assert.NotEmpty(buckets);
        Assert.All(buckets, b => Assert.True((double)b!["min"]! <= (double)b["median"]! && (double)b["median"]! <= (double)b["max"]!));
        Assert.All(buckets.Where(b => (string)b!["direction"]! == "mask"), b => Assert.True((double)b!["max"]! <= 0));   // drops, as negative changes
        Assert.Contains("Masking vs amplifying", File.ReadAllText(dir.File("report/index.html")));
    }

    [Theory]
    [InlineData("0.0004", "target", "***")]
    [InlineData("0.004", "high", "**")]
    [InlineData("0.04", "medium", "*")]
    [InlineData("0.2", "high", "")]
    [InlineData("0.0001", "random", "")]
    [InlineData("NaN", "high", "")]
    public void StarsFollowThePaper(string p, string category, string stars) =>
        Assert.Equal(stars, PolyEngine.Output.Report.ExperimentSections.Stars(p, category));
}

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
        File.WriteAllText(dir.File("other/manifest.json"), """{"tool": "polyengine coactivate"}""");
        var (rc, stdout, err) = Run("report", dir.File("fig3"), dir.File("fig3csv"), dir.File("other"), "--out", dir.File("report"));
        Assert.True(rc == 0, err);
        Assert.Contains("index.html", stdout);
        string html = File.ReadAllText(dir.File("report/index.html"));
        Assert.Contains("data:image/png;base64,", html);
        Assert.DoesNotContain("http://", html);
        Assert.DoesNotContain("https://", html);
        Assert.DoesNotContain("<script", html);
        Assert.Contains("not reported yet", html);
        Assert.Equal(4, Directory.GetFiles(dir.File("report/figures"), "*.png").Length);   // two runs × two metrics
        Assert.Equal(4, Directory.GetFiles(dir.File("report/figures"), "*.svg").Length);
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
        Assert.Contains("has no manifest.json", bad.Err);
    }

    [Fact]
    public void ANeuronRunGetsItsBucketBoxes()
    {
        using var dir = new Fixtures.TempDir();
        Directory.CreateDirectory(dir.File("records"));
        for (int f = 0; f < 32; f++)
            File.WriteAllText(dir.File($"records/{f}.json"), f % 2 == 0
                ? """{"activations": [{"tokens": [" Paris", " is"], "values": [1.0, 0.1]}]}"""
                : """{"activations": [{"tokens": [" sky", " red"], "values": [0.2, 1.0]}]}""");
        PolyEngine.Toys.ToyExplanations.Write(dir.File("e.jsonl"), 32, dim: 16, topics: 4, seed: 3);
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
        Assert.Equal(stars, PolyEngine.Output.Report.RunReport.Stars(p, category));
}

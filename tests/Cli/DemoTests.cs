using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Cli;

/// <summary><c>polyengine demo --out DIR</c>, the README's main command, run once for the class: every step of the
/// miniature paper leaves its run folder, the report covers them all, and the page renders in a real headless Chromium
/// (Debian's <c>chromium</c>, which .ci/run installs) with every image loaded and nothing fetched.</summary>
public class DemoTests : IClassFixture<DemoTests.DemoRun>
{
    public sealed class DemoRun : IDisposable
    {
        readonly Fixtures.TempDir _dir = new();
        public string Cache => Path.Combine(_dir.Path, "toys");
        public string Out => Path.Combine(_dir.Path, "demo");
        public readonly (int Code, string Out, string Err) Result;

        public DemoRun() => Result = Run("demo", "--cache", Cache, "--out", Out);

        public void Dispose() => _dir.Dispose();
    }

    static readonly string[] Runs = ["features", "coactivation", "interference", "experiment-feature", "experiment-token", "inject"];

    readonly DemoRun _demo;
    public DemoTests(DemoRun demo) => _demo = demo;

    [Fact]
    public void TheDemoRunsThePipelineAndReportsIt()
    {
        var (code, stdout, stderr) = _demo.Result;
        Assert.True(code == 0, stderr);
        Assert.Contains("gpt2-tiny: GPT2LMHeadModel", stdout);
        Assert.Contains("neox-tiny: GPTNeoXForCausalLM", stdout);
        Assert.True(File.Exists(Path.Combine(_demo.Cache, "neox-tiny-seed0", "tokenizer.json")));
        foreach (var verb in new[] { "features", "coactivate", "interference", "experiment feature", "experiment token", "inject", "report" })
            Assert.Contains($"$ polyengine {verb} ", stdout);
        string page = Path.Combine(_demo.Out, "report", "index.html");
        Assert.Contains($"Open the report: {page}", stdout);
        foreach (var run in Runs) Assert.True(File.Exists(Path.Combine(_demo.Out, run, "manifest.json")), run);
        // Every run has its section with numbers in summary.json, and none was refused.
        var runs = JsonNode.Parse(File.ReadAllText(Path.Combine(_demo.Out, "report", "summary.json")))!["runs"]!.AsArray();
        Assert.Equal(Runs.Length, runs.Count);
        Assert.All(runs, r => Assert.Null(r!["error"]));
        Assert.NotNull(runs[0]!["features"]);
        Assert.NotNull(runs[1]!["coactivation"]);
        Assert.NotNull(runs[2]!["interference"]!.AsObject().First().Value!["similarity_below"]);
        Assert.NotEmpty(runs[3]!["levels"]!.AsArray());
        Assert.NotEmpty(runs[4]!["levels"]!.AsArray());
        Assert.NotEmpty(runs[5]!["summary"]!.AsArray());
        // A printed step reruns by hand: the interference command, as printed, into another folder.
        string line = stdout.Split('\n').First(l => l.Contains("$ polyengine interference "));
        var args = line[(line.IndexOf("$ polyengine ") + 13)..].Trim().Split(' ');
        args[^1] = Path.Combine(_demo.Out, "again");
        var again = Run(args);
        Assert.True(again.Code == 0, again.Err);
        Assert.Equal(File.ReadAllText(Path.Combine(_demo.Out, "interference", "sample.json")), File.ReadAllText(Path.Combine(_demo.Out, "again", "sample.json")));
    }

    [SkippableFact]
    public void TheReportRendersInAHeadlessBrowser()
    {
        Assert.True(_demo.Result.Code == 0, _demo.Result.Err);
        string? chromium = new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists);
        Skip.If(chromium is null, "Debian's chromium is not installed (apt-get install chromium; .ci/run does)");
        string report = Path.Combine(_demo.Out, "report");
        // A copy of the page with a probe appended: after load it writes how many images loaded and what was fetched.
        string html = File.ReadAllText(Path.Combine(report, "index.html"));
        const string probe = """
            <script>window.addEventListener('load', () => {
              const imgs = [...document.images];
              const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
              const fetched = performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));
              document.body.setAttribute('data-probe', `images=${imgs.length} broken=${broken} fetched=${fetched.length} ${fetched.join(' ')}`);
            });</script>
            """;
        string probed = Path.Combine(report, "probe.html");
        File.WriteAllText(probed, html.Replace("</body>", probe + "</body>"));
        try
        {
            string dom = Chromium(chromium!, "--dump-dom", $"file://{probed}");
            var m = System.Text.RegularExpressions.Regex.Match(dom, "data-probe=\"images=(\\d+) broken=(\\d+) fetched=(\\d+)([^\"]*)\"");
            Assert.True(m.Success, "the probe did not run: " + dom[..Math.Min(300, dom.Length)]);
            int images = int.Parse(m.Groups[1].Value);
            Assert.Equal(Directory.GetFiles(Path.Combine(report, "figures"), "*.png").Length, images);
            Assert.Equal("0", m.Groups[2].Value);
            Assert.True(m.Groups[3].Value == "0", "the page fetched:" + m.Groups[4].Value);
        }
        finally { File.Delete(probed); }

        // The page itself (no probe) as a screenshot: a real image, not a blank one.
        string shot = Path.Combine(_demo.Out, "screenshot.png");
        Chromium(chromium!, $"--screenshot={shot}", "--window-size=1200,2400", $"file://{Path.Combine(report, "index.html")}");
        using var bitmap = SkiaSharp.SKBitmap.Decode(shot);
        Assert.NotNull(bitmap);
        Assert.Equal((1200, 2400), (bitmap.Width, bitmap.Height));
        int dark = 0;
        for (int y = 0; y < bitmap.Height; y += 4)
            for (int x = 0; x < bitmap.Width; x += 4)
                if (bitmap.GetPixel(x, y).Red < 128) dark++;
        Assert.True(dark > 1000, $"the screenshot is nearly blank ({dark} dark samples)");
    }

    /// <summary>Runs headless Chromium on <paramref name="args"/> with no network and no background traffic; returns stdout.</summary>
    static string Chromium(string exe, params string[] args)
    {
        using var profile = new Fixtures.TempDir();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
            $"--user-data-dir={profile.Path}", "--virtual-time-budget=10000", .. args])
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("chromium did not finish in 2 minutes"); }
        Assert.True(p.ExitCode == 0, $"chromium exited {p.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }
}

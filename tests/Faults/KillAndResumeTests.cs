using System.Diagnostics;
using Xunit;

namespace PolyEngine.Tests.Faults;

/// <summary>
/// The promises about killed runs, kept under fire: each scan, run as its own process, is killed with SIGKILL at seeded
/// random moments (loading, scanning, writing a checkpoint, writing the outputs), several times; a rerun then completes,
/// and every output but the manifest has exactly the bytes of a run that was never interrupted. Two runs into one folder
/// at once: the second is refused, naming the first.
/// </summary>
public class KillAndResumeTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");
    static string CliDll => typeof(PolyEngine.Cli.Program).Assembly.Location;

    static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static (int Code, string Err) RunToEnd(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    /// <summary>The outputs of a run: every file but the hidden housekeeping ones and the manifest (the one file with run
    /// facts: times, device).</summary>
    static Dictionary<string, byte[]> Outputs(string dir) => Directory.GetFiles(dir)
        .Where(f => !Path.GetFileName(f).StartsWith('.') && Path.GetFileName(f) != "manifest.json")
        .ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    static string[] Scan(string verb, string corpus, string sae, string outDir) => verb switch
    {
        "interference" => ["interference", "--sae", sae, "--top", "5", "--tile", "64", "--checkpoint-every", "0", "--format", "csv", "--out", outDir],
        _ => [verb, "--model", Gpt2, "--sae", Path.Combine(Gpt2, "sae", "topk"), "--corpus", corpus, "--context-size", "16", "--batch", "2",
              "--checkpoint-every", "0", "--out", outDir],
    };

    [Theory]
    [InlineData("features", 11)]
    [InlineData("coactivate", 12)]
    [InlineData("interference", 13)]
    public void KilledRepeatedlyAScanStillEndsWithTheUninterruptedBytes(string verb, int seed)
    {
        using var dir = new Fixtures.TempDir();
        var rng = new Random(seed);
        string corpus = dir.File("c.u32");
        File.WriteAllBytes(corpus, Enumerable.Range(0, 12000).SelectMany(_ => BitConverter.GetBytes((uint)rng.Next(1000))).ToArray());
        string sae = dir.File("sae");
        Assert.Equal(0, Cli.CliTests.Run("toy-sae", "--model", Gpt2, "--hook", "blocks.1.hook_resid_pre", "--d-sae", "2500", "--arch", "standard", "--out", sae).Code);

        var clock = Stopwatch.StartNew();
        var straight = RunToEnd(Scan(verb, corpus, sae, dir.File("straight")));
        Assert.True(straight.Code == 0, straight.Err);
        double seconds = clock.Elapsed.TotalSeconds;
        var expected = Outputs(dir.File("straight"));
        Assert.NotEmpty(expected);

        string resumed = dir.File("resumed");
        int killed = 0;
        for (int k = 0; k < 4; k++)
        {
            using var p = Start(Scan(verb, corpus, sae, resumed));
            Thread.Sleep(TimeSpan.FromSeconds(seconds * (0.05 + 0.65 * rng.NextDouble())));   // from start-up to the output writes
            if (p.HasExited) break;                             // it finished: nothing left to interrupt
            p.Kill(entireProcessTree: true);                    // SIGKILL: no cleanup runs
            killed++;
            p.WaitForExit();
        }
        var final = RunToEnd(Scan(verb, corpus, sae, resumed));
        Assert.True(final.Code == 0, $"the rerun after {killed} kills failed: {final.Err}");
        var actual = Outputs(resumed);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, bytes) in expected) Assert.True(bytes.AsSpan().SequenceEqual(actual[name]), $"{verb}: {name} differs after {killed} kills");
        Assert.Empty(Directory.GetFiles(resumed, ".*.tmp"));          // no temporary file survives
        Assert.Empty(Directory.GetFiles(resumed, "checkpoint*"));     // nor a checkpoint
        Assert.True(killed > 0, "no kill landed; the run is too short for this test");
    }

    [Fact]
    public void TwoRunsIntoOneFolderAtOnceTheSecondIsRefused()
    {
        using var dir = new Fixtures.TempDir();
        string corpus = dir.File("c.u32");
        var rng = new Random(3);
        File.WriteAllBytes(corpus, Enumerable.Range(0, 40000).SelectMany(_ => BitConverter.GetBytes((uint)rng.Next(1000))).ToArray());
        string outDir = dir.File("out");
        using var first = Start(Scan("features", corpus, "", outDir));
        var deadline = Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(outDir, ".polyengine-run.holder")) && deadline.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(20);
        var (code, err) = RunToEnd(Scan("features", corpus, "", outDir));
        bool firstStillRunning = !first.HasExited;
        first.Kill(entireProcessTree: true);
        first.WaitForExit();
        Assert.True(firstStillRunning, "the first run ended before the second started; make the corpus longer");
        Assert.Equal(2, code);
        Assert.Contains("another polyengine run is writing to this folder (pid", err);
        Assert.Single(err.Trim().Split('\n'));
    }
}

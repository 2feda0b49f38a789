using System.Diagnostics;
using PolyEngine.Scans;
using Xunit;

namespace PolyEngine.Tests.Faults;

/// <summary>Tests that start processes and arm fault points: alone, so timing and the process-wide fault switch are theirs.</summary>
[CollectionDefinition("faults", DisableParallelization = true)]
public sealed class FaultCollection;

/// <summary>
/// The promises about killed runs, kept under fire. Each scan runs as its own process and is killed (SIGKILL: no
/// cleanup) at exact points — after its second and third checkpoints, after writing an output but before moving it in
/// place, after moving one output in place, after marking itself complete — and once at a seeded random moment; a
/// rerun then completes, having resumed, and every output but the manifest has exactly the bytes of a run that was never
/// interrupted. Two runs into one folder at once: the second is refused, naming the first.
/// </summary>
[Collection("faults")]
public class KillAndResumeTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");
    static string CliDll => typeof(PolyEngine.Cli.Program).Assembly.Location;

    /// <summary>Runs the CLI as a child process, with <paramref name="fault"/> armed (POLYENGINE_FAULT), or killed after
    /// <paramref name="killAfter"/>; returns its exit code and output.</summary>
    static (int Code, string Out, string Err) Child(string[] args, string? fault = null, TimeSpan? killAfter = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (fault is not null) psi.Environment["POLYENGINE_FAULT"] = fault;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (killAfter is { } t && !p.WaitForExit(t)) p.Kill(entireProcessTree: true);
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The outputs of a run: every file but the hidden housekeeping ones and the manifest (the one file with run
    /// facts: times, device).</summary>
    static Dictionary<string, byte[]> Outputs(string dir) => Directory.GetFiles(dir)
        .Where(f => !Path.GetFileName(f).StartsWith('.') && Path.GetFileName(f) != "manifest.json")
        .ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    static string[] Scan(string verb, string corpus, string sae, string outDir) => verb switch
    {
        "interference" => ["interference", "--sae", sae, "--top", "5", "--tile", "64", "--checkpoint-every", "0", "--format", "csv", "--out", outDir],
        "steer" => ["steer", "--model", Gpt2, "--hook", "blocks.1.hook_resid_pre", "--random", "2", "--scales", "-2,1,3", "--top", "2",
                    "--metrics", "weighted_cosine,overlap,kl,kendall", "--prompts", Path.Combine(Path.GetDirectoryName(corpus)!, "prompts.jsonl"),
                    "--rows-budget", "16", "--checkpoint-every", "0", "--out", outDir],
        _ => [verb, "--model", Gpt2, "--sae", Path.Combine(Gpt2, "sae", "topk"), "--corpus", corpus, "--context-size", "16", "--batch", "2",
              "--checkpoint-every", "0", "--out", outDir],
    };

    [Theory]
    [InlineData("features", "features.parquet", "contexts.parquet", 11)]
    [InlineData("coactivate", "pairs.parquet", "coactivation.safetensors", 12)]
    [InlineData("interference", "bins.csv", "histogram.csv", 13)]
    [InlineData("steer", "rows.parquet", "best.parquet", 14)]
    public void KilledAtEveryKindOfPointAScanEndsWithTheUninterruptedBytes(string verb, string firstOutput, string secondOutput, int seed)
    {
        using var dir = new Fixtures.TempDir();
        var rng = new Random(seed);
        string corpus = dir.File("c.u32");
        File.WriteAllBytes(corpus, Enumerable.Range(0, 6000).SelectMany(_ => BitConverter.GetBytes((uint)rng.Next(1000))).ToArray());
        var draw = new Random(seed + 100);   // the prompts' own stream: the kill moment below stays as it was
        File.WriteAllLines(dir.File("prompts.jsonl"), Enumerable.Range(0, 60).Select(i =>   // one prompt group each under --rows-budget 16: enough groups that a random kill leaves the five checkpoints the exact kills need
            $"{{\"ids\": [{string.Join(",", Enumerable.Range(0, 3 + i % 3).Select(_ => draw.Next(1000)))}], \"targets\": [{draw.Next(1000)}]}}"));
        string sae = dir.File("sae");
        Assert.Equal(0, Cli.CliTests.Run("toy-sae", "--model", Gpt2, "--hook", "blocks.1.hook_resid_pre", "--d-sae", "1500", "--arch", "standard", "--out", sae).Code);

        var clock = Stopwatch.StartNew();
        var straight = Child(Scan(verb, corpus, sae, dir.File("straight")));
        double seconds = clock.Elapsed.TotalSeconds;
        Assert.True(straight.Code == 0, straight.Err);
        var expected = Outputs(dir.File("straight"));
        Assert.NotEmpty(expected);

        string resumed = dir.File("resumed");
        string[] args = Scan(verb, corpus, sae, resumed);
        var log = new List<string>();
        void KillAt(string fault)
        {
            var (code, stdout, _) = Child(args, fault);
            Assert.True(code != 0, $"the fault {fault} never fired (exit {code})");   // SIGKILL: the process did not end by itself
            log.Add(stdout);
        }
        // A kill at a random moment first (start-up, hashing, scanning...), then at each kind of point in turn.
        if (Child(args, killAfter: TimeSpan.FromSeconds(seconds * (0.1 + 0.5 * rng.NextDouble()))).Code == 0)
            Directory.Delete(resumed, recursive: true);   // it finished before the kill: start the exact kills from scratch
        KillAt("kill@checkpoint-saved#2");
        KillAt("kill@checkpoint-saved#3");
        KillAt($"kill@before-rename:{Path.Combine(resumed, firstOutput)}");
        KillAt($"kill@after-rename:{Path.Combine(resumed, firstOutput)}");
        KillAt($"kill@before-rename:{Path.Combine(resumed, secondOutput)}");
        KillAt("kill@marked-complete");
        var final = Child(args);
        Assert.True(final.Code == 0, $"the rerun after the kills failed: {final.Err}");
        Assert.Contains(log, o => o.Contains("resuming"));   // the later runs continued an earlier one's checkpoint
        Assert.Contains("already holds this run, complete", final.Out);   // killed after marking complete: nothing left to do
        var actual = Outputs(resumed);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, bytes) in expected) Assert.True(bytes.AsSpan().SequenceEqual(actual[name]), $"{verb}: {name} differs after the kills");
        Assert.Empty(Directory.GetFiles(resumed, ".*.tmp"));          // no temporary file survives
        Assert.Empty(Directory.GetFiles(resumed, "checkpoint*"));     // nor a checkpoint
    }

    [Fact]
    public void ASecondRunIntoAHeldFolderIsRefusedNamingTheFirst()
    {
        using var dir = new Fixtures.TempDir();
        string corpus = dir.File("c.u32");
        File.WriteAllBytes(corpus, Enumerable.Range(0, 100).SelectMany(i => BitConverter.GetBytes((uint)(i % 1000))).ToArray());
        string outDir = dir.File("out");
        using var held = RunFolder.Open(outDir);   // a run in progress, in this process
        var (code, stdout, err) = Child(Scan("features", corpus, "", outDir));
        Assert.Equal(2, code);
        Assert.Contains($"another polyengine run is writing to this folder (pid {Environment.ProcessId} on {Environment.MachineName}", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("model:", stdout);   // refused before any work
    }
}

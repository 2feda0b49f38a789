using System.Diagnostics;
using Xunit;

namespace PolyEngine.Tests.Faults;

/// <summary>
/// A disk that fills up while a scan writes: the scan ends with one line and exit 2, no temporary file is left, the
/// folder stays marked as a running run, and once there is room again the rerun completes to the bytes of an
/// uninterrupted run. Everywhere through the fault point (a write that fails as a full disk would, inside the Parquet
/// and safetensors writers); for real, on a small tmpfs, where the tests may mount one (root, mounting allowed; skipped
/// and saying why otherwise).
/// </summary>
[Collection("faults")]
public class FullDiskTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    static string[] Coactivate(string corpus, string outDir, string format) => ["coactivate", "--model", Gpt2, "--sae", Path.Combine(Gpt2, "sae", "topk"),
        "--corpus", corpus, "--top", "all", "--format", format, "--out", outDir];

    static string Corpus(Fixtures.TempDir dir)
    {
        var rng = new Random(5);
        File.WriteAllBytes(dir.File("c.u32"), Enumerable.Range(0, 3000).SelectMany(_ => BitConverter.GetBytes((uint)rng.Next(1000))).ToArray());
        return dir.File("c.u32");
    }

    static void AssertFailedCleanly(string outDir, (int Code, string Out, string Err) run)
    {
        Assert.Equal(2, run.Code);
        Assert.StartsWith("error: ", run.Err);
        Assert.Contains("No space left on device", run.Err);
        Assert.Single(run.Err.Trim().Split('\n'));
        Assert.Empty(Directory.GetFiles(outDir, ".*.tmp"));
        Assert.Contains("\"state\": \"running\"", File.ReadAllText(Path.Combine(outDir, ".polyengine-run.json")));   // marked incomplete
    }

    [Theory]
    [InlineData("parquet", "pairs.parquet")]
    [InlineData("csv", "pairs.csv")]
    [InlineData("parquet", "coactivation.safetensors")]
    public void AWriteThatFindsTheDiskFullIsOneLineAndTheRerunCompletes(string format, string failing)
    {
        using var dir = new Fixtures.TempDir();
        string corpus = Corpus(dir), reference = dir.File("reference"), outDir = dir.File("out");
        Assert.Equal(0, Cli.CliTests.Run(Coactivate(corpus, reference, format)).Code);
        try
        {
            FaultPoints.Set($"nospace@write:{Path.Combine(outDir, failing)}");
            AssertFailedCleanly(outDir, Cli.CliTests.Run(Coactivate(corpus, outDir, format)));
        }
        finally { FaultPoints.Set(null); }
        var again = Cli.CliTests.Run(Coactivate(corpus, outDir, format));
        Assert.True(again.Code == 0, again.Err);
        foreach (var name in new[] { $"pairs.{format}", "coactivation.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(reference, name)), File.ReadAllBytes(Path.Combine(outDir, name)));
    }

    static bool Sh(string command, out string output)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(command);
        try
        {
            using var p = Process.Start(psi)!;
            output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e) { output = e.Message; return false; }
    }

    [SkippableFact]
    public void ARealFullDiskIsOneLineAndTheRerunCompletes()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs Linux tmpfs");
        using var dir = new Fixtures.TempDir();
        string mount = dir.File("small");
        Directory.CreateDirectory(mount);
        Skip.IfNot(Sh($"mount -t tmpfs -o size=150k tmpfs '{mount}'", out string why), $"cannot mount a small tmpfs here ({why.Trim()}); run as root where mounting is allowed");
        try
        {
            string corpus = Corpus(dir), reference = dir.File("reference"), outDir = Path.Combine(mount, "out");
            Assert.Equal(0, Cli.CliTests.Run(Coactivate(corpus, reference, "parquet")).Code);
            AssertFailedCleanly(outDir, Cli.CliTests.Run(Coactivate(corpus, outDir, "parquet")));
            Assert.True(Sh($"mount -o remount,size=8m '{mount}'", out string remount), remount);
            var again = Cli.CliTests.Run(Coactivate(corpus, outDir, "parquet"));
            Assert.True(again.Code == 0, again.Err);
            foreach (var name in new[] { "pairs.parquet", "coactivation.safetensors" })
                Assert.Equal(File.ReadAllBytes(Path.Combine(reference, name)), File.ReadAllBytes(Path.Combine(outDir, name)));
        }
        finally
        {
            Sh($"umount -l '{mount}'", out _);
        }
    }
}

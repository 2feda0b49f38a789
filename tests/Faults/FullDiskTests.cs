using System.Diagnostics;
using Xunit;

namespace PolyEngine.Tests.Faults;

/// <summary>
/// A disk that fills up mid-run, on a small tmpfs the test mounts (it needs the right to mount: root in a container that
/// allows it; otherwise the test is skipped and says why): the scan ends with one line and exit 2, no temporary file is
/// left, the folder stays marked as a running run, and once there is room again the rerun completes to the bytes of an
/// uninterrupted run.
/// </summary>
public class FullDiskTests
{
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
    public void AFullDiskIsOneLineAndTheRerunCompletes()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "needs Linux tmpfs");
        using var dir = new Fixtures.TempDir();
        string mount = dir.File("small");
        Directory.CreateDirectory(mount);
        Skip.IfNot(Sh($"mount -t tmpfs -o size=96k tmpfs '{mount}'", out string why), $"cannot mount a small tmpfs here ({why.Trim()}); run as root where mounting is allowed");
        try
        {
            string gpt2 = Fixtures.Golden("gpt2-tiny"), corpus = dir.File("c.u32");
            var rng = new Random(5);
            File.WriteAllBytes(corpus, Enumerable.Range(0, 3000).SelectMany(_ => BitConverter.GetBytes((uint)rng.Next(1000))).ToArray());
            string[] Args(string outDir) => ["coactivate", "--model", gpt2, "--sae", Path.Combine(gpt2, "sae", "topk"), "--corpus", corpus, "--top", "all",
                "--format", "csv", "--out", outDir];
            var reference = Cli.CliTests.Run(Args(dir.File("reference")));
            Assert.True(reference.Code == 0, reference.Err);

            string outDir = Path.Combine(mount, "out");
            var (code, _, stderr) = Cli.CliTests.Run(Args(outDir));
            Assert.Equal(2, code);
            Assert.StartsWith("error: ", stderr);
            Assert.Contains("No space left on device", stderr);
            Assert.Single(stderr.Trim().Split('\n'));
            Assert.Empty(Directory.GetFiles(outDir, ".*.tmp"));
            Assert.Contains("\"state\": \"running\"", File.ReadAllText(Path.Combine(outDir, ".polyengine-run.json")));   // marked incomplete

            Assert.True(Sh($"mount -o remount,size=8m '{mount}'", out string remount), remount);
            var again = Cli.CliTests.Run(Args(outDir));
            Assert.True(again.Code == 0, again.Err);
            foreach (var name in new[] { "pairs.csv", "coactivation.safetensors" })
                Assert.Equal(File.ReadAllBytes(Path.Combine(dir.File("reference"), name)), File.ReadAllBytes(Path.Combine(outDir, name)));
        }
        finally
        {
            Sh($"umount -l '{mount}'", out _);
        }
    }
}

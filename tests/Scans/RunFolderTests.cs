using System.Text.Json.Nodes;
using PolyEngine.Scans;
using Xunit;

namespace PolyEngine.Tests.Scans;

/// <summary>
/// An output folder belongs to one run: locked while it runs (a second run is refused, naming the holder), marked
/// before anything is written, resumable whatever point a kill hit, complete when done, and a folder of another run is
/// refused naming what changed — or cleared with --overwrite, or taken over when the other run left nothing.
/// </summary>
public class RunFolderTests
{
    static RunKey Key(string weights, double threshold = 0) =>
        new(new JsonObject { ["sae[0]/sae_weights.safetensors"] = weights, ["corpus[0]/c.u32"] = "c1" }, new JsonObject { ["threshold"] = threshold });

    [Fact]
    public void ASecondRunIntoAHeldFolderIsRefusedNamingTheHolder()
    {
        using var dir = new Fixtures.TempDir();
        using (var first = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false))
        {
            var e = Assert.Throws<PolyEngineException>(() => RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false));
            Assert.Contains("another polyengine run is writing to this folder", e.Message);
            Assert.Contains($"pid {Environment.ProcessId} on {Environment.MachineName}", e.Message);
            Assert.Throws<PolyEngineException>(() => RunFolder.Prepare(dir.Path, Key("w2"), overwrite: true));   // not even --overwrite
        }
        using var again = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false);   // released: the same run resumes
        Assert.False(again.AlreadyComplete);
    }

    [Fact]
    public void AFolderOfAnotherRunIsRefusedNamingWhatChanged()
    {
        using var dir = new Fixtures.TempDir();
        using (var f = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false))
        {
            File.WriteAllText(dir.File("features.parquet"), "x");
            f.Complete(["features.parquet"]);
        }
        File.WriteAllText(dir.File("my-notes.txt"), "the user's");
        var e = Assert.Throws<PolyEngineException>(() => RunFolder.Prepare(dir.Path, Key("w2", 0.5), overwrite: false));
        Assert.Contains("sae[0]/sae_weights.safetensors changed (its content differs)", e.Message);
        Assert.Contains("option threshold: 0 → 0.5", e.Message);
        Assert.Contains("--overwrite", e.Message);
        using (var same = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false)) Assert.True(same.AlreadyComplete);
        // An output removed since: the same run is no longer complete, and runs again.
        var saved = File.ReadAllBytes(dir.File("features.parquet"));
        File.Delete(dir.File("features.parquet"));
        using (var again = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false)) { Assert.False(again.AlreadyComplete); again.Complete([]); }
        File.WriteAllBytes(dir.File("features.parquet"), saved);
        using (var f = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false)) f.Complete(["features.parquet"]);
        // --overwrite clears the earlier run's files before anything of the new run is written
        using (var replaced = RunFolder.Prepare(dir.Path, Key("w2"), overwrite: true))
        {
            Assert.False(File.Exists(dir.File("features.parquet")));   // the earlier run's recorded output
            Assert.True(File.Exists(dir.File("my-notes.txt")));        // not the user's file
            Assert.Contains("--overwrite", replaced.Note);
        }
        // a folder of someone else's files is refused; with --overwrite they stay (only checkpoints go)
        using var other = new Fixtures.TempDir();
        File.WriteAllText(other.File("notes.txt"), "mine");
        Assert.Contains("holds other files", Assert.Throws<PolyEngineException>(() => RunFolder.Prepare(other.Path, Key("w1"), overwrite: false)).Message);
        using (RunFolder.Prepare(other.Path, Key("w1"), overwrite: true)) Assert.True(File.Exists(other.File("notes.txt")));
    }

    [Fact]
    public void ARunKilledAnywhereResumesAndItsLeftoversGo()
    {
        using var dir = new Fixtures.TempDir();
        // Killed during its first checkpoint write: the marker says running, a temporary file is left, no checkpoint.
        using (RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false)) { }
        File.WriteAllText(dir.File(".checkpoint.safetensors.4242.tmp"), "half");
        using (var resumed = RunFolder.Prepare(dir.Path, Key("w1"), overwrite: false))
        {
            Assert.False(resumed.AlreadyComplete);
            Assert.Null(resumed.Note);
            Assert.False(File.Exists(dir.File(".checkpoint.safetensors.4242.tmp")));   // stale temporaries removed
        }
        // A run that failed before writing anything (its input was then fixed, so the key differs) is taken over.
        using (var fixedRun = RunFolder.Prepare(dir.Path, Key("w1-fixed"), overwrite: false))
            Assert.Contains("took over", fixedRun.Note);
        // A damaged marker names no run (and is no stack trace).
        File.WriteAllText(dir.File(RunFolder.MarkerName), "{\"run_key\": 7, \"state\": [1]}");
        using (var damaged = RunFolder.Prepare(dir.Path, Key("w1-fixed"), overwrite: false)) Assert.False(damaged.AlreadyComplete);
        // But a run that left a checkpoint is work: refused without --overwrite.
        using (var f = RunFolder.Prepare(dir.Path, Key("w1-fixed"), overwrite: false)) f.Checkpoint().Save(3, _ => { });
        Assert.Contains("holds a different run", Assert.Throws<PolyEngineException>(() => RunFolder.Prepare(dir.Path, Key("w3"), overwrite: false)).Message);
    }

    [Fact]
    public void ChangingAnSaeFileInPlaceIsNoticedByTheScanKey()
    {
        using var dir = new Fixtures.TempDir();
        string sae = dir.File("sae");
        Directory.CreateDirectory(sae);
        foreach (var f in Directory.GetFiles(Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk"))) File.Copy(f, Path.Combine(sae, Path.GetFileName(f)));
        File.WriteAllBytes(dir.File("c.u32"), Enumerable.Range(0, 40).SelectMany(i => BitConverter.GetBytes((uint)(i * 7 % 1000))).ToArray());
        string[] args = ["features", "--model", Fixtures.Golden("gpt2-tiny"), "--sae", sae, "--corpus", dir.File("c.u32"), "--out", dir.File("out")];
        Assert.Equal(0, Cli.CliTests.Run(args).Code);
        // Same size, one byte of content different (a retrained SAE of the same shape).
        var bytes = File.ReadAllBytes(Path.Combine(sae, "sae_weights.safetensors"));
        bytes[^1] ^= 1;
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(sae, "sae_weights.safetensors"));
        File.WriteAllBytes(Path.Combine(sae, "sae_weights.safetensors"), bytes);
        File.SetLastWriteTimeUtc(Path.Combine(sae, "sae_weights.safetensors"), stamp);   // not even the time gives it away
        var (code, _, stderr) = Cli.CliTests.Run(args);
        Assert.Equal(2, code);
        Assert.Contains("sae[0]/sae_weights.safetensors changed (its content differs)", stderr);
    }
}

using System.Security.Cryptography;
using PolyEngine.Formats;
using Xunit;

namespace PolyEngine.Tests.Formats;

/// <summary>Models and SAEs kept in the HuggingFace hub cache exactly as the hub client lays it out:
/// <c>models--org--name/{blobs,refs,snapshots}</c>, each snapshot file a relative symbolic link into <c>blobs/</c>.</summary>
public class HfCacheTests
{
    /// <summary>Lays <paramref name="source"/> (a folder, recursively) into <paramref name="cacheRoot"/> as the hub client does:
    /// each file once in blobs/ under its sha256, the snapshot's files relative links to it, refs/main naming the snapshot.</summary>
    internal static string AddToHubCache(string cacheRoot, string repoId, string source, string revision = "0123456789abcdef0123456789abcdef01234567")
    {
        string repo = Path.Combine(cacheRoot, "models--" + repoId.Replace("/", "--"));
        string blobs = Path.Combine(repo, "blobs"), snapshot = Path.Combine(repo, "snapshots", revision);
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), revision);
        foreach (var file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(source, file);
            string hash;
            using (var s = File.OpenRead(file)) hash = Convert.ToHexStringLower(SHA256.HashData(s));
            string blob = Path.Combine(blobs, hash);
            if (!File.Exists(blob)) File.Copy(file, blob);
            string link = Path.Combine(snapshot, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(link)!);
            File.CreateSymbolicLink(link, Path.GetRelativePath(Path.GetDirectoryName(link)!, blob));   // ../../blobs/<sha256>
        }
        return snapshot;
    }

    [Fact]
    public void AModelAndItsSaesLoadFromSymlinkedSnapshots()
    {
        using var cache = new Fixtures.TempDir();
        string snapshot = AddToHubCache(cache.Path, "org/gpt2-tiny", Fixtures.Golden("gpt2-tiny"));
        Assert.StartsWith("../../blobs/", new FileInfo(Path.Combine(snapshot, "model.safetensors")).LinkTarget);
        Assert.Equal(snapshot, HfHub.ResolveModelFolder("org/gpt2-tiny", cache.Path));
        Assert.Equal(new FileInfo(Path.Combine(Fixtures.Golden("gpt2-tiny"), "model.safetensors")).Length, FileLinks.Length(Path.Combine(snapshot, "model.safetensors")));

        using var linked = Model.Load(snapshot);
        using var plain = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int[][] ids = [[1, 2, 3, 4, 5]];
        Assert.Equal(plain.Run(ids).Logits!.Data, linked.Run(ids).Logits!.Data);

        // An SAE kept in a hub repo (SAELens releases are: one folder per hook inside the snapshot).
        using var sae = SparseAutoencoder.Load(Path.Combine(snapshot, "sae", "topk"), linked.Backend);
        using var reference = SparseAutoencoder.Load(Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", "topk"), plain.Backend);
        var x = Enumerable.Range(0, 64).Select(i => MathF.Sin(i)).ToArray();
        Assert.Equal(reference.Encode(x, 1).FeatureActs, sae.Encode(x, 1).FeatureActs);
    }

    [Fact]
    public void TheCliRunsOnACachedModelAndSae()
    {
        using var cache = new Fixtures.TempDir();
        string snapshot = AddToHubCache(cache.Path, "org/gpt2-tiny", Fixtures.Golden("gpt2-tiny"));
        string outPath = cache.File("acts.safetensors");
        var (code, _, stderr) = Cli.CliTests.Run("run", "--model", snapshot, "--ids", "1,2,3", "--sae", Path.Combine(snapshot, "sae", "standard"),
            "--out", outPath, "--top", "1");
        Assert.True(code == 0, stderr);
        using var f = SafeTensorsFile.Open(outPath);
        Assert.Equal(new long[] { 1, 3, 256 }, f.Info("blocks.1.hook_resid_pre.hook_sae_acts_post").Shape);
    }

    [Fact]
    public void ADanglingLinkIsAOneLineError()
    {
        using var dir = new Fixtures.TempDir();
        File.CreateSymbolicLink(dir.File("model.safetensors"), "../blobs/missing");
        var e = Assert.Throws<PolyEngineException>(() => FileLinks.Length(dir.File("model.safetensors")));
        Assert.Contains("does not exist", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}

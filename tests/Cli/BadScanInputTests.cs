using System.IO.Compression;
using PolyEngine.Formats;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Cli;

/// <summary>
/// Options and files that used to crash with a stack trace or be swallowed: each is now one line on stderr starting
/// with "error:", naming what and where, with exit 2 — or, where a value is merely large, a run that keeps everything.
/// </summary>
public class BadScanInputTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");
    static string Sae => Path.Combine(Gpt2, "sae", "topk");

    static string Corpus(Fixtures.TempDir dir, int tokens = 40, uint vocab = 1000)
    {
        string path = dir.File("c.u32");
        File.WriteAllBytes(path, Enumerable.Range(0, tokens).SelectMany(i => BitConverter.GetBytes((uint)(i * 7 % vocab))).ToArray());
        return path;
    }

    static void AssertOneLineError(string[] args, string expected, bool noWork = false)
    {
        var (code, stdout, stderr) = Run(args);
        if (noWork) Assert.Equal("", stdout);   // refused before anything ran
        Assert.True(code == 2, $"exit {code}: {stderr}");
        Assert.StartsWith("error: ", stderr);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("--threads", "-1", "--threads -1 is not a thread count")]
    [InlineData("--threshold", "NaN", "--threshold NaN is not a finite number")]
    [InlineData("--threshold", "Infinity", "is not a finite number")]
    [InlineData("--max-tokens", "0", "--max-tokens 0 leaves nothing to scan")]
    [InlineData("--max-tokens", "-5", "leaves nothing to scan")]
    [InlineData("--batch", "0", "--batch 0 must be positive")]
    [InlineData("--context-size", "65", "--context-size 65 is longer than the model's context n_ctx = 64")]
    [InlineData("--context-size", "0", "--context-size 0 is too small")]
    [InlineData("--bogus", "1", "Unrecognized command or argument '--bogus'")]
    [InlineData("--bogus", "2", "see `polyengine features --help`")]
    [InlineData("--threads", "many", "Cannot parse argument 'many' for option '--threads'")]
    public void BadScanOptionsAreOneLine(string option, string value, string expected)
    {
        using var dir = new Fixtures.TempDir();
        AssertOneLineError(["features", "--model", Gpt2, "--sae", Sae, "--corpus", Corpus(dir), "--out", dir.File("out"), option, value], expected);
    }

    [Fact]
    public void HugeTopCountsKeepEveryPartner()
    {
        using var dir = new Fixtures.TempDir();
        var (code, _, stderr) = Run("coactivate", "--model", Gpt2, "--sae", Sae, "--corpus", Corpus(dir), "--top", "2147483647", "--format", "csv", "--out", dir.File("c"));
        Assert.True(code == 0, stderr);
        Assert.Equal(0, Run("coactivate", "--model", Gpt2, "--sae", Sae, "--corpus", Corpus(dir), "--top", "all", "--format", "csv", "--out", dir.File("all")).Code);
        Assert.Equal(File.ReadAllBytes(dir.File("all/pairs.csv")), File.ReadAllBytes(dir.File("c/pairs.csv")));   // every partner, as --top all
        (code, _, stderr) = Run("interference", "--sae", Sae, "--top", "2147483647", "--out", dir.File("i"));
        Assert.True(code == 0, stderr);
        Assert.Equal(0, Run("run", "--model", Gpt2, "--ids", "1,2", "--top", "1000").Code);   // the whole vocabulary
        AssertOneLineError(["run", "--model", Gpt2, "--ids", "1,2", "--top", "2147483647"], "top-k 2147483647 is not between 0 and the vocabulary size d_vocab = 1000");
    }

    [Fact]
    public void BadSaeFilesAreOneLine()
    {
        using var dir = new Fixtures.TempDir();
        string corpus = Corpus(dir);
        string NewSae(string name)
        {
            string folder = dir.File(name);
            Directory.CreateDirectory(folder);
            foreach (var f in Directory.GetFiles(Sae)) File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
            return folder;
        }
        string array = NewSae("array");
        File.WriteAllText(Path.Combine(array, "cfg.json"), "[1, 2]");
        AssertOneLineError(["features", "--model", Gpt2, "--sae", array, "--corpus", corpus, "--out", dir.File("o1")], "cfg.json: must be a JSON object of SAE settings, found array");

        string boolean = NewSae("bool");   // W_dec stored as BOOL: as many bytes as elements
        using (var f = SafeTensorsFile.Open(Path.Combine(Sae, "sae_weights.safetensors")))
        {
            var w = new SafeTensorsWriter();
            foreach (var t in f.Tensors.OrderBy(t => t.Begin))
                if (t.Name == "W_dec") w.AddRaw("W_dec", SafeTensorDType.BOOL, t.Shape, new byte[t.ElementCount], t.ElementCount);
                else w.AddRaw(t.Name, t.DType, t.Shape, f.Bytes(t.Name).ToArray(), t.ElementCount);
            w.Save(Path.Combine(boolean, "sae_weights.safetensors"));
        }
        AssertOneLineError(["features", "--model", Gpt2, "--sae", boolean, "--corpus", corpus, "--out", dir.File("o2")], "tensor 'W_dec' is BOOL; an SAE's weights must be floats");

        string pattern = NewSae("pattern");
        var cfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(pattern, "cfg.json")))!.AsObject();
        cfg["hook_name"] = "blocks.0.attn.hook_pattern";
        File.WriteAllText(Path.Combine(pattern, "cfg.json"), cfg.ToJsonString());
        AssertOneLineError(["features", "--model", Gpt2, "--sae", pattern, "--corpus", corpus, "--out", dir.File("o3")], "the attention pattern [batch, head, query, key], which is no vector per position");
    }

    [Fact]
    public void TokenIdsOutsideTheVocabularyNameTheFileAndPlace()
    {
        using var dir = new Fixtures.TempDir();
        Corpus(dir);   // c.u32: ids below 1000, fine
        File.WriteAllBytes(dir.File("d.u32"), new uint[] { 5, 6, 7, 1234, 8 }.SelectMany(BitConverter.GetBytes).ToArray());
        AssertOneLineError(["features", "--model", Gpt2, "--sae", Sae, "--corpus", dir.Path, "--out", dir.File("o")],
            $"--corpus {dir.File("d.u32")}: token id 1234 (document 0, token 3) is outside the vocabulary 0..999 of this model");
    }

    [Fact]
    public void BrokenExplanationFilesAreOneLine()
    {
        using var dir = new Fixtures.TempDir();
        var lines = Enumerable.Range(0, 256).Select(j => $"{{\"index\": {j}, \"description\": \"f{j}\", \"embedding\": [{j % 7 + 1}, 1, 0.5]}}");
        string text = string.Join("\n", lines) + "\n";
        using (var gz = new GZipStream(File.Create(dir.File("ex.jsonl.gz")), CompressionLevel.Optimal)) gz.Write(System.Text.Encoding.UTF8.GetBytes(text));
        Assert.Equal(0, Run("interference", "--sae", Sae, "--explanations", dir.File("ex.jsonl.gz"), "--out", dir.File("ok")).Code);
        var bytes = File.ReadAllBytes(dir.File("ex.jsonl.gz"));
        File.WriteAllBytes(dir.File("cut.jsonl.gz"), bytes[..(bytes.Length * 2 / 3)]);   // a download cut short
        var (code, _, stderr) = Run("interference", "--sae", Sae, "--explanations", dir.File("cut.jsonl.gz"), "--out", dir.File("o1"));
        Assert.Equal(2, code);
        Assert.Contains("cut.jsonl.gz", stderr);
        Assert.Matches("truncated or damaged|damaged", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        File.WriteAllBytes(dir.File("two.jsonl.gz"), [.. bytes, .. bytes]);   // `cat a.gz b.gz`: checked against its last member only, so refused with the way out
        AssertOneLineError(["interference", "--sae", Sae, "--explanations", dir.File("two.jsonl.gz"), "--out", dir.File("o4")], "a multi-member gzip must be gunzipped first");
        File.WriteAllBytes(dir.File("notrailer.jsonl.gz"), bytes[..^8]);   // everything but the trailer
        AssertOneLineError(["interference", "--sae", Sae, "--explanations", dir.File("notrailer.jsonl.gz"), "--out", dir.File("o2")], "notrailer.jsonl.gz");

        File.WriteAllText(dir.File("huge.jsonl"), string.Join("\n", Enumerable.Range(0, 3).Select(_ => "{\"index\": 1, \"embedding\": [3e38, 1, 1]}")));
        AssertOneLineError(["interference", "--sae", Sae, "--explanations", dir.File("huge.jsonl"), "--out", dir.File("o3")],
            "huge.jsonl:2: the embeddings of feature 1 add up past float32's range");
    }

    [Fact]
    public void OutputPathsThatCannotBeWrittenAreOneLineBeforeAnyWork()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("file"), "x");
        string below = Path.Combine(dir.File("file"), "x");
        AssertOneLineError(["toy", "--family", "gpt2", "--out", below], "cannot create the folder", noWork: true);
        AssertOneLineError(["toy", "--family", "gpt2", "--out", dir.File("file")], "is a file; give a folder", noWork: true);
        AssertOneLineError(["toy-sae", "--model", Gpt2, "--hook", "blocks.0.hook_resid_post", "--out", below], "cannot create the folder", noWork: true);
        AssertOneLineError(["toy-corpus", "--out", Path.Combine(below, "c.jsonl")], "does not exist", noWork: true);
        AssertOneLineError(["toy-explanations", "--sae", Sae, "--out", ""], "--out is empty", noWork: true);
        AssertOneLineError(["run", "--model", Gpt2, "--ids", "1", "--out", "/proc/polyengine-test/x.safetensors"], "--out", noWork: true);
        AssertOneLineError(["features", "--model", Gpt2, "--sae", Sae, "--corpus", Corpus(dir), "--out", "/proc/polyengine-test"], "--out /proc/polyengine-test", noWork: true);
        AssertOneLineError(["coactivate", "--model", Gpt2, "--sae", Sae, "--corpus", Corpus(dir), "--out", dir.File("file")], "is a file", noWork: true);
        AssertOneLineError(["interference", "--sae", Sae, "--out", below], "cannot create the folder", noWork: true);
    }
}

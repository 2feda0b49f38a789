using System.IO.Compression;
using DuckDB.NET.Data;
using PolyEngine.Cli.Commands;
using PolyEngine.Formats;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Cli;

/// <summary>
/// The CLI as a TransformerLens / SAELens / pandas user meets it: which BOS applied and why, rows of different lengths,
/// SAEs spliced in or only read, .npz output, scan output folders that are files or cannot be created (one line, before
/// any compute), a finished scan rerun (complete, exit 0), and scan tables that DuckDB reads with real list columns.
/// </summary>
public class RunAndScanOutputTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    [Fact]
    public void RunSaysWhichBosAppliedAndWhy()
    {
        using var dir = new Fixtures.TempDir();
        var (code, stdout, stderr) = Run("run", "--model", Gpt2, "--prompt", "a,b", "--top", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("bos: prepended, token 999 (text, as TransformerLens does)", stdout);
        Assert.Contains("row 0 (4 tokens)", stdout);   // BOS + a , b
        (code, stdout, _) = Run("run", "--model", Gpt2, "--prompt", "a,b", "--bos", "off", "--top", "1");
        Assert.Contains("bos: none (--bos off)", stdout);
        Assert.Contains("row 0 (3 tokens)", stdout);
        (code, stdout, _) = Run("run", "--model", Gpt2, "--ids", "1,2", "--top", "1");
        Assert.Contains("bos: none (ids run as given)", stdout);
        (code, stdout, _) = Run("run", "--model", Gpt2, "--ids", "1,2", "--bos", "on", "--top", "1");
        Assert.Contains("row 0 (3 tokens), next token after", stdout);
        // With an SAE, its prepend_bos decides (the fixtures' SAEs say false).
        (code, stdout, stderr) = Run("run", "--model", Gpt2, "--prompt", "a,b", "--sae", Path.Combine(Gpt2, "sae", "standard"), "--out", dir.File("s.safetensors"), "--top", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("bos: none (the SAE's prepend_bos is false)", stdout);
        Assert.Contains("--bos 'maybe' is not auto, on or off", Run("run", "--model", Gpt2, "--ids", "1", "--bos", "maybe").Err);
    }

    [Fact]
    public void RunTakesRowsOfDifferentLengthsAndWritesNpz()
    {
        using var dir = new Fixtures.TempDir();
        string npz = dir.File("acts.npz"), st = dir.File("acts.safetensors");
        var (code, stdout, stderr) = Run("run", "--model", Gpt2, "--ids", "11,250,37,4;500,2", "--hooks", "blocks.0.hook_resid_post", "--out", npz, "--top", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("row 1 (2 tokens), next token after", stdout);
        Assert.Equal(0, Run("run", "--model", Gpt2, "--ids", "11,250,37,4;500,2", "--hooks", "blocks.0.hook_resid_post", "--out", st, "--top", "0").Code);
        using var f = SafeTensorsFile.Open(st);
        Assert.Equal(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }, f.ReadInt64("attention_mask"));
        Assert.Equal(new long[] { 11, 250, 37, 4, 500, 2, 0, 0 }, f.ReadInt64("input_ids"));
        using var model = Model.Load(Gpt2);
        var alone = model.Run([[500, 2]]).Logits!.Data;
        Compare.Close(alone, f.ReadFloat32("logits").AsSpan(4 * 1000, 2 * 1000), 1e-5, "row 1 as if alone");
        // The .npz holds the same arrays as .npy entries numpy reads: magic, version 1.0, a dict header, then the data.
        using var zip = ZipFile.OpenRead(npz);
        Assert.Equal(["__metadata__.npy", "attention_mask.npy", "blocks.0.hook_resid_post.npy", "input_ids.npy", "logits.npy"], zip.Entries.Select(e => e.FullName).Order(StringComparer.Ordinal));
        var meta = Npy(zip.GetEntry("__metadata__.npy")!);
        Assert.Matches(@"^\{'descr': '<U\d+', 'fortran_order': False, 'shape': \(\), \}$", meta.Header);
        var metaText = System.Text.Encoding.UTF32.GetString(meta.Data);   // numpy's <U is UTF-32 little-endian
        Assert.Equal("false", System.Text.Json.JsonDocument.Parse(metaText).RootElement.GetProperty("prepend_bos").GetString());
        var logits = Npy(zip.GetEntry("logits.npy")!);
        Assert.Equal("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4, 1000), }", logits.Header);
        Assert.Equal(f.ReadFloat32("logits"), System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(logits.Data).ToArray());
        var ids = Npy(zip.GetEntry("input_ids.npy")!);
        Assert.Equal("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 4), }", ids.Header);
        var bad = Run("run", "--model", Gpt2, "--ids", "1", "--out", dir.File("x.npy"));
        Assert.Contains("unknown output format '.npy'", bad.Err);
    }

    static (string Header, byte[] Data) Npy(ZipArchiveEntry entry)
    {
        using var s = entry.Open();
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        var b = ms.ToArray();
        Assert.Equal([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0], b[..8]);
        int len = BitConverter.ToUInt16(b, 8);
        Assert.Equal(0, (10 + len) % 64);   // data aligned as numpy writes it
        return (System.Text.Encoding.ASCII.GetString(b, 10, len).TrimEnd(), b[(10 + len)..]);
    }

    [Fact]
    public void RunSpliceChangesTheLogitsAndSaysSo()
    {
        using var dir = new Fixtures.TempDir();
        string sae = Path.Combine(Gpt2, "sae", "standard"), read = dir.File("read.safetensors"), spliced = dir.File("spliced.safetensors");
        Assert.Equal(0, Run("run", "--model", Gpt2, "--ids", "11,250,37", "--sae", sae, "--out", read, "--top", "0").Code);
        var (code, stdout, stderr) = Run("run", "--model", Gpt2, "--ids", "11,250,37", "--sae", sae, "--splice", "--out", spliced, "--top", "0");
        Assert.True(code == 0, stderr);
        Assert.Contains("splice: blocks.1.hook_resid_pre replaced by the SAE reconstruction downstream", stdout);
        using var r = SafeTensorsFile.Open(read);
        using var s = SafeTensorsFile.Open(spliced);
        using var model = Model.Load(Gpt2);
        Assert.Equal(model.Run([[11, 250, 37]]).Logits!.Data, r.ReadFloat32("logits"));   // read only: the model's own logits
        Assert.False(r.ReadFloat32("logits").AsSpan().SequenceEqual(s.ReadFloat32("logits")));
        Assert.Equal(r.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_acts_post"), s.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_acts_post"));
        Assert.Equal("true", s.Metadata["sae_splice"]);
        Assert.Contains("--splice splices the --sae SAEs in; give --sae", Run("run", "--model", Gpt2, "--ids", "1", "--splice").Err);
    }

    public static TheoryData<string> ScanVerbs() => new() { "features", "coactivate", "interference" };

    static string[] ScanArgs(string verb, string toy, string sae, string corpus, string outDir) => verb == "interference"
        ? ["interference", "--sae", sae, "--out", outDir]
        : [verb, "--model", toy, "--sae", sae, "--corpus", corpus, "--out", outDir];

    [Theory]
    [MemberData(nameof(ScanVerbs))]
    public void ScanOutputFoldersAreCheckedAndAFinishedRunIsComplete(string verb)
    {
        using var dir = new Fixtures.TempDir();
        string toy = Gpt2, sae = Path.Combine(Gpt2, "sae", "topk"), corpus = dir.File("c.u32");
        File.WriteAllBytes(corpus, Enumerable.Range(0, 40).SelectMany(i => BitConverter.GetBytes((uint)(i * 7 % 1000))).ToArray());
        File.WriteAllText(dir.File("a-file"), "x");
        foreach (var (outDir, expected) in new[]
        {
            (dir.File("a-file"), "is a file; give a folder"),
            (Path.Combine(dir.File("a-file"), "below"), "cannot create the folder"),
            ("", "--out is empty"),
        })
        {
            var (code, _, stderr) = Run(ScanArgs(verb, toy, sae, corpus, outDir));
            Assert.Equal(2, code);
            Assert.Contains(expected, stderr);
            Assert.Single(stderr.Trim().Split('\n'));
            Assert.DoesNotContain("   at ", stderr);
        }
        string good = dir.File("out");
        var first = Run(ScanArgs(verb, toy, sae, corpus, good));
        Assert.True(first.Code == 0, first.Err);
        Assert.Equal("", first.Err);   // progress is drawn only on a terminal; captured output stays clean
        var files = Directory.GetFiles(good).Where(f => !Path.GetFileName(f).StartsWith('.')).ToDictionary(f => f, File.ReadAllBytes);   // the outputs
        var again = Run(ScanArgs(verb, toy, sae, corpus, good));
        Assert.True(again.Code == 0, again.Err);
        Assert.Contains("already holds this run, complete", again.Out);
        foreach (var (f, bytes) in files) Assert.Equal(bytes, File.ReadAllBytes(f));   // nothing rewritten
        var other = Run([.. ScanArgs(verb, toy, sae, corpus, good), "--format", "csv"]);
        Assert.NotEqual(0, other.Code);
        Assert.Contains("--overwrite", other.Err);
    }

    [Fact]
    public void ScanTablesOpenInDuckDbWithListColumns()
    {
        using var dir = new Fixtures.TempDir();
        string corpus = dir.File("c.u32"), outDir = dir.File("feat");
        File.WriteAllBytes(corpus, Enumerable.Range(0, 40).SelectMany(i => BitConverter.GetBytes((uint)(i * 7 % 1000))).ToArray());
        var (code, _, stderr) = Run("features", "--model", Gpt2, "--sae", Path.Combine(Gpt2, "sae", "topk"), "--corpus", corpus, "--top-k", "2",
            "--context-size", "8", "--out", outDir);
        Assert.True(code == 0, stderr);
        using var db = new DuckDBConnection("DataSource=:memory:");
        db.Open();
        using var cmd = db.CreateCommand();
        cmd.CommandText = $"SELECT count(*), min(len(tokens)), max(len(tokens)), bool_and(len(token_strings) = len(tokens)), " +
                          $"bool_and(token_activations[max_position + 1] = activation), bool_and(tokens[1] = (document_offset * 7) % 1000), max(document) " +
                          $"FROM '{Path.Combine(outDir, "contexts.parquet")}'";
        using var reader = cmd.ExecuteReader();
        Assert.True(reader.Read());
        Assert.True(reader.GetInt64(0) > 0);
        Assert.Equal((8L, 8L), (Convert.ToInt64(reader.GetValue(1)), Convert.ToInt64(reader.GetValue(2))));   // 40 tokens in windows of 8
        Assert.True(reader.GetBoolean(3));
        Assert.True(reader.GetBoolean(4));
        Assert.True(reader.GetBoolean(5));
        Assert.Equal(0L, Convert.ToInt64(reader.GetValue(6)));
    }

    [Fact]
    public void TheTimeLeftKeepsHoursPastADay()
    {
        Assert.Equal("ETA 30:05:09", ProgressDisplay.Eta(30 * 3600 + 5 * 60 + 9));
        Assert.Equal("ETA 00:00:59", ProgressDisplay.Eta(59.4));
        Assert.Equal("ETA 99:59:59", ProgressDisplay.Eta(1e9));
        Assert.Equal("ETA --:--:--", ProgressDisplay.Eta(null));
    }

    [Fact]
    public void ADanglingConfigLinkIsOneLineSayingSo()
    {
        using var dir = new Fixtures.TempDir();
        string snapshot = Formats.HfCacheTests.AddToHubCache(dir.Path, "org/tiny", Gpt2);
        string blob = new FileInfo(Path.Combine(snapshot, "config.json")).ResolveLinkTarget(true)!.FullName;
        File.Delete(blob);   // the snapshot copied without its blobs/
        var (code, _, stderr) = Run("run", "--model", snapshot, "--ids", "1,2");
        Assert.Equal(2, code);
        Assert.Contains("config.json: symbolic link to", stderr);
        Assert.Contains("does not exist", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}

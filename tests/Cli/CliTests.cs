using PolyEngine.Formats;
using Xunit;

namespace PolyEngine.Tests.Cli;

/// <summary>The `polyengine` verbs end to end, in process: output, files written, and one-line errors with a non-zero exit.</summary>
public class CliTests
{
    /// <summary>Runs the CLI in process; what it printed to stdout and stderr.</summary>
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int code = PolyEngine.Cli.Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    static string Gpt2 => Fixtures.Golden("gpt2-tiny");
    static string NeoX => Fixtures.Golden("neox-tiny");

    [Fact]
    public void RunWritesLogitsHooksAndIdsThatMatchTheLibrary()
    {
        using var dir = new Fixtures.TempDir();
        string outPath = dir.File("acts.safetensors");
        var (code, stdout, stderr) = Run("run", "--model", Gpt2, "--ids", "1,2,3,4;5,6,7,8", "--hooks", "blocks.*.hook_resid_post,blocks.0.attn.hook_pattern,blocks.1.attn.hook_z",
            "--out", outPath, "--top", "3", "--device", "cpu", "--threads", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("device: cpu (1 thread", stdout);
        Assert.Contains("row 1 (4 tokens)", stdout);
        using var f = SafeTensorsFile.Open(outPath);
        Assert.Equal(new long[] { 2, 4 }, f.Info("input_ids").Shape);
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6, 7, 8 }, f.ReadInt64("input_ids"));
        Assert.Equal(new long[] { 2, 4, 1000 }, f.Info("logits").Shape);
        Assert.Equal(new long[] { 2, 4, 64 }, f.Info("blocks.1.hook_resid_post").Shape);
        Assert.Equal(new long[] { 2, 4, 4, 4 }, f.Info("blocks.0.attn.hook_pattern").Shape);
        Assert.Equal(new long[] { 2, 4, 4, 16 }, f.Info("blocks.1.attn.hook_z").Shape);
        Assert.Equal(new long[] { 1, 1, 1, 1, 1, 1, 1, 1 }, f.ReadInt64("attention_mask"));
        Assert.Equal(7, f.Tensors.Count);
        using var model = Model.Load(Gpt2);
        Assert.Equal(model.Run([[1, 2, 3, 4], [5, 6, 7, 8]]).Logits!.Data, f.ReadFloat32("logits"));
    }

    [Fact]
    public void RunWithSaesExportsSaeLensNamedTensorsThatMatchTheGolden()
    {
        using var dir = new Fixtures.TempDir();
        string outPath = dir.File("sae.safetensors");
        using var g = SafeTensorsFile.Open(Path.Combine(Gpt2, "golden.safetensors"));
        var ids = g.ReadInt64("input_ids");
        string idList = string.Join(";", Enumerable.Range(0, 2).Select(r => string.Join(",", ids.Skip(r * 16).Take(16))));
        var (code, stdout, stderr) = Run("run", "--model", Gpt2, "--ids", idList, "--sae", Path.Combine(Gpt2, "sae", "topk-v6cfg"), "--out", outPath, "--top", "0");
        Assert.True(code == 0, stderr);
        Assert.Contains("at blocks.1.hook_resid_pre; input as the unprocessed HF model computes it", stdout);
        using var f = SafeTensorsFile.Open(outPath);
        Assert.Equal(new long[] { 2, 16, 256 }, f.Info("blocks.1.hook_resid_pre.hook_sae_acts_pre").Shape);
        Assert.Equal(new long[] { 2, 16, 64 }, f.Info("blocks.1.hook_resid_pre.hook_sae_output").Shape);
        using var tg = SafeTensorsFile.Open(Path.Combine(Gpt2, "sae", "topk-v6cfg", "golden.safetensors"));
        Compare.Close(tg.ReadFloat32("hidden_pre"), f.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_acts_pre"), 1e-4, "cli topk pre");
        Compare.Close(tg.ReadFloat32("feature_acts"), f.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_acts_post"), 1e-4, "cli topk acts");
        Compare.Close(tg.ReadFloat32("sae_out"), f.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_output"), 1e-4, "cli topk sae_out");
        var expectedError = tg.ReadFloat32("sae_in").Zip(tg.ReadFloat32("sae_out"), (a, b) => a - b).ToArray();
        Compare.Close(expectedError, f.ReadFloat32("blocks.1.hook_resid_pre.hook_sae_error"), 1e-4, "cli topk sae_error");
        // Two SAEs at one hook would share names: refused before any compute.
        var (code2, _, stderr2) = Run("run", "--model", Gpt2, "--ids", "1,2", "--sae",
            Path.Combine(Gpt2, "sae", "jumprelu") + "," + Path.Combine(Gpt2, "sae", "topk"), "--out", dir.File("x.safetensors"));
        Assert.NotEqual(0, code2);
        Assert.Contains("give one SAE per hook", stderr2);
        Assert.False(File.Exists(dir.File("x.safetensors")));
    }

    [Fact]
    public async Task CoactivateWritesPairsTriangleAndManifest()
    {
        using var dir = new Fixtures.TempDir();
        string toy = dir.File("toy"), sae = dir.File("sae"), corpus = dir.File("corpus.jsonl"), outDir = dir.File("out");
        Assert.Equal(0, Run("toy", "--family", "neox", "--preset", "tiny", "--seed", "2", "--out", toy).Code);
        Assert.Equal(0, Run("toy-sae", "--model", toy, "--hook", "blocks.0.hook_resid_post", "--d-sae", "48", "--arch", "standard", "--out", sae).Code);
        Assert.Equal(0, Run("toy-corpus", "--docs", "6", "--sentences", "2", "--seed", "4", "--out", corpus).Code);
        var (code, stdout, stderr) = Run("coactivate", "--model", toy, "--sae", sae, "--corpus", corpus, "--top", "all", "--out", outDir);
        Assert.True(code == 0, stderr);
        Assert.Contains("counters: uint32 per pair", stdout);
        Assert.Contains("most co-occurring pairs", stdout);
        await using var parquet = File.OpenRead(Path.Combine(outDir, "pairs.parquet"));
        var table = await Parquet.Serialization.ParquetSerializer.DeserializeAsync<PolyEngine.Output.PairRow>(parquet);
        Assert.Equal(["sae", "feature_a", "feature_b", "count_a", "count_b", "count_ab", "jaccard", "pmi", "lift"], table.Schema.Fields.Select(f => f.Name));
        var rows = table.Data;
        using var st = SafeTensorsFile.Open(Path.Combine(outDir, "coactivation.safetensors"));
        var pairs = st.ReadInt64("sae.pairs");
        Assert.Equal(48L * 47 / 2, pairs.Length);
        Assert.Equal(pairs.Count(c => c > 0), rows.Count);          // --top all: one row per co-occurring pair
        foreach (var row in rows)
        {
            Assert.True(row.FeatureA < row.FeatureB);
            Assert.Equal(pairs[PolyEngine.Scans.CoactivationCounter.Index(row.FeatureA, row.FeatureB, 48)], row.CountAB);
        }
        using var manifest = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")));
        Assert.True(manifest.RootElement.GetProperty("results").GetProperty("tokens").GetInt64() > 0);
        Assert.Equal("all", manifest.RootElement.GetProperty("options").GetProperty("top").GetString());
        // The same run again is complete already (exit 0, nothing rewritten); another run into the folder is refused; CSV has the documented columns.
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(outDir, "pairs.parquet"));
        var again = Run("coactivate", "--model", toy, "--sae", sae, "--corpus", corpus, "--out", outDir, "--top", "all");
        Assert.True(again.Code == 0, again.Err);
        Assert.Contains("already holds this run, complete", again.Out);
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(Path.Combine(outDir, "pairs.parquet")));
        Assert.Contains("holds a different run", Run("coactivate", "--model", toy, "--sae", sae, "--corpus", corpus, "--threshold", "0.5", "--out", outDir).Err);
        Assert.False(File.Exists(Path.Combine(outDir, PolyEngine.Scans.ScanCheckpoint.FileName)));   // removed when the run completed
        Assert.Equal(0, Run("coactivate", "--model", toy, "--sae", sae, "--corpus", corpus, "--format", "csv", "--top", "3", "--overwrite", "--out", outDir).Code);
        Assert.Equal("sae,feature_a,feature_b,count_a,count_b,count_ab,jaccard,pmi,lift", File.ReadLines(Path.Combine(outDir, "pairs.csv")).First());

        // features: the per-feature table and the contexts, on the same inputs.
        string featDir = dir.File("feat");
        var (fcode, fout, ferr) = Run("features", "--model", toy, "--sae", sae, "--corpus", corpus, "--top-k", "3", "--out", featDir);
        Assert.True(fcode == 0, ferr);
        Assert.Contains("features per token", fout);
        await using var fs = File.OpenRead(Path.Combine(featDir, "features.parquet"));
        var feats = await Parquet.Serialization.ParquetSerializer.DeserializeAsync<PolyEngine.Output.FeatureRow>(fs);
        Assert.Equal(48, feats.Data.Count);
        Assert.Equal(["sae", "feature", "fire_count", "frequency", "mean_activation", "max_activation"], feats.Schema.Fields.Select(f => f.Name));
        long total = manifest.RootElement.GetProperty("results").GetProperty("tokens").GetInt64();
        Assert.All(feats.Data, f => Assert.InRange(f.FireCount, 0, total));
        // Each feature's marginal in the co-activation counts (token units) is its firing count.
        var marginals = st.ReadInt64("sae.marginals");
        Assert.Equal(marginals, feats.Data.OrderBy(f => f.Feature).Select(f => f.FireCount));
        await using var cs = File.OpenRead(Path.Combine(featDir, "contexts.parquet"));
        var ctx = await Parquet.Serialization.ParquetSerializer.DeserializeAsync<PolyEngine.Output.ContextRow>(cs);
        Assert.All(ctx.Data, c => Assert.InRange(c.Rank, 0, 2));
        // List columns: per-token ids, decoded strings and activations, with the window's document and offset.
        Assert.Equal(["sae", "feature", "rank", "activation", "window", "document", "document_offset", "max_position", "tokens", "token_strings", "token_activations"],
            ctx.Schema.Fields.Select(f => f.Name));
        Assert.All(ctx.Data, c => Assert.Equal(c.Activation, c.TokenActivations[c.MaxPosition], 5));
        Assert.All(ctx.Data, c => Assert.Equal(c.Tokens.Length, c.TokenStrings.Length));
        Assert.All(ctx.Data, c => Assert.Equal(c.Tokens.Length, c.TokenActivations.Length));
        Assert.All(ctx.Data, c => Assert.InRange(c.Document, 0, 5));   // six documents
        using (var tok = Model.Load(toy))
        {
            var docs = PolyEngine.Formats.Corpus.Open(corpus, () => tok.Tokenizer).Documents().ToList();
            Assert.All(ctx.Data, c => Assert.Equal(docs[(int)c.Document].Skip((int)c.Offset).Take(c.Tokens.Length), c.Tokens));   // no BOS: the toy SAE says prepend_bos false
            Assert.All(ctx.Data, c => Assert.Equal(c.Tokens.Select(t => tok.Tokenizer.Decode([t])), c.TokenStrings));
        }
    }

    [Fact]
    public void RunAcceptsPromptsAndIdFiles()
    {
        using var dir = new Fixtures.TempDir();
        using var toy = new Fixtures.TempDir();
        Assert.Equal(0, Run("toy", "--family", "neox", "--preset", "tiny", "--seed", "3", "--out", toy.Path).Code);
        var (code, stdout, stderr) = Run("run", "--model", toy.Path, "--prompt", "Hello world", "--top", "2");
        Assert.True(code == 0, stderr);
        Assert.Contains("next token after \" world\"", stdout);
        File.WriteAllText(dir.File("ids.json"), "[[1,2,3],[4,5,6],[7,8,9]]");
        (code, stdout, stderr) = Run("run", "--model", NeoX, "--ids-file", dir.File("ids.json"));
        Assert.True(code == 0, stderr);
        Assert.Contains("row 2 (3 tokens)", stdout);
    }

    public static TheoryData<string[], string> BadInvocations() => new()
    {
        { ["run", "--model", Gpt2, "--ids", "1,2000"], "token id 2000" },
        { ["run", "--model", Gpt2, "--ids", string.Join(",", Enumerable.Repeat("1", 65))], "longer than the model's context n_ctx = 64" },
        { ["run", "--model", Gpt2, "--prompt", ""], "--prompt is empty" },
        { ["run", "--model", Gpt2, "--ids", "1,2", "--hooks", "blocks.7.hook_resid_pre", "--out", "/tmp/x.safetensors"], "valid names: hook_embed" },
        { ["run", "--model", Gpt2, "--ids", "1,2", "--out", "/no/such/dir/x.safetensors"], "does not exist" },
        { ["run", "--model", Gpt2, "--ids", "1,2", "--prompt", "x"], "exactly one of --prompt" },
        { ["run", "--model", Gpt2, "--ids", "1,2", "--device", "tpu"], "--device 'tpu' is unknown" },
        { ["run", "--model", "/no/such/model", "--ids", "1"], "model folder not found" },
        { ["run", "--model", "some-org/not-cached-model", "--ids", "1"], "huggingface-cli download some-org/not-cached-model" },
        { ["run", "--model", NeoX, "--prompt", "hi"], "tokenizer.json not found" },
        { ["inspect", "/no/such/file.safetensors"], "not found" },
        { ["toy", "--family", "llama", "--out", "/tmp/x"], "--family 'llama' is unknown" },
        { ["toy", "--family", "gpt2", "--preset", "huge", "--out", "/tmp/x"], "--preset 'huge' is unknown" },
        { ["bench", "forward", "--model", Gpt2, "--batch", "0"], "--batch and --seq must be positive" },
    };

    [Theory]
    [MemberData(nameof(BadInvocations))]
    public void BadInputIsOneLineOnStderrAndNonZeroExit(string[] args, string expected)
    {
        var (code, _, stderr) = Run(args);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.StartsWith("error: ", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public void UnwritableOutputIsCaughtBeforeTheRunAndNothingIsHalfWritten()
    {
        using var dir = new Fixtures.TempDir();
        string outPath = dir.File("x.safetensors");
        Directory.CreateDirectory(outPath);   // a folder where the file should go
        var (code, _, stderr) = Run("run", "--model", Gpt2, "--ids", "1,2", "--out", outPath);
        Assert.NotEqual(0, code);
        Assert.Contains("is a folder", stderr);
        Assert.Single(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void InspectShowsTheMappingAndTensors()
    {
        var (code, stdout, _) = Run("inspect", NeoX);
        Assert.Equal(0, code);
        Assert.Contains("GPTNeoXForCausalLM", stdout);
        Assert.Contains("rotary 4 dims, base 10000", stdout);
        Assert.Contains("residual parallel", stdout);
        Assert.Contains("gpt_neox.layers.1.attention.query_key_value.weight", stdout);
        (code, stdout, _) = Run("inspect", Path.Combine(Fixtures.Samples, "overall.safetensors"));
        Assert.Equal(0, code);
        Assert.Contains("9 tensors", stdout);
        Assert.Contains("metadata test = a", stdout);
    }

    [Fact]
    public void BenchForwardPrintsJson()
    {
        var (code, stdout, stderr) = Run("bench", "forward", "--model", Gpt2, "--batch", "2", "--seq", "8", "--iters", "1", "--json", "--threads", "1");
        Assert.True(code == 0, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var r = doc.RootElement;
        Assert.True(r.GetProperty("tokens_per_second").GetDouble() > 0);
        Assert.Equal(2, r.GetProperty("batch").GetInt32());
        Assert.Equal(8, r.GetProperty("seq").GetInt32());
        Assert.Equal(1, r.GetProperty("threads").GetInt32());
        Assert.StartsWith("cpu", r.GetProperty("device").GetString());
    }

    [Fact]
    public void EveryVerbHasHelpWithExamples()
    {
        foreach (var verb in new[] { new[] { "run" }, ["inspect"], ["toy"], ["demo"], ["bench", "forward"], ["bench", "coactivate"], ["features"],
                     ["coactivate"], ["toy-corpus"], ["toy-sae"], ["devices"], ["kernels", "check"], ["interference"], ["bench", "interference"], ["toy-explanations"],
                     ["steer"], ["bench", "steer"], ["gradient"], ["gradient-vectors"], ["bench", "gradient"], ["inject"], ["experiment", "feature"],
                     ["experiment", "token"], ["experiment", "prompt"], ["experiment", "neuron"], ["report"], ["serve"], ["bench", "serve"], ["merge"] })
        {
            var (code, stdout, _) = Run([.. verb, "--help"]);
            Assert.Equal(0, code);
            Assert.Contains("Examples:", stdout);
            Assert.Contains("polyengine " + string.Join(" ", verb), stdout);
        }
    }
}

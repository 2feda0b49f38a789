using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Output;
using PolyEngine.Toys;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Backward;

/// <summary>
/// The paper's token-locus vectors from activation records: both recipes against the gradients they are defined by,
/// the sub-token mapping of a Neuronpedia record against the tokenizer's own prefix counts, contexts tables, the
/// TransformerLens degenerate objective, the CLI (whose vectors steer reads) and one-line bad inputs.
/// </summary>
public class GradientVectorTests : IClassFixture<FullVocabGpt2>
{
    readonly string _gpt2;
    public GradientVectorTests(FullVocabGpt2 toy) => _gpt2 = toy.Path;

    static readonly HookName Mlp1 = HookName.Parse("blocks.1.hook_mlp_out");

    static float[] Unit(double[] v)
    {
        double n = Math.Sqrt(v.Sum(x => x * x));
        return v.Select(x => (float)(x / n)).ToArray();
    }

    /// <summary>Σ over positions of the gradient at each position (of the objective at that position), normalised.</summary>
    static float[] Expected(Model m, int[] ids, HookName hook, IEnumerable<int> positions)
    {
        int d = m.Spec.DModel;
        var sum = new double[d];
        foreach (int p in positions)
        {
            var g = Gradient.ToEmbeddings(m, ids, hook, p);
            for (int i = 0; i < d; i++) sum[i] += g[p * d + i];
        }
        return Unit(sum);
    }

    [Fact]
    public void RecordsWithIdsFollowBothRecipes()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int[] ids = [5, 17, 300, 2, 41, 8, 77, 12];
        float[] values = [0.1f, 0.85f, 0f, 1f, 0.79f, 0.9f, 0.2f, 0.5f];
        var record = new ActivationRecord("context rank 0", [.. ids.Select(i => $"t{i}")], ids, values, 3);
        var tl = GradientVectors.FromRecords(m, [record], Mlp1, new GradientVectorOptions())[0];
        Assert.Equal([1, 3, 5], tl.Positions);   // ≥ 0.8 · max
        Compare.Close(Expected(m, ids, Mlp1, [1, 3, 5]), tl.Vector, 1e-6, "tl recipe");
        var hf = GradientVectors.FromRecords(m, [record], Mlp1, new GradientVectorOptions { Recipe = GradientRecipe.HuggingFace })[0];
        Assert.Equal([3], hf.Positions);
        Compare.Close(Expected(m, ids, Mlp1, [3]), hf.Vector, 1e-6, "hf recipe");
        var half = GradientVectors.FromRecords(m, [record], Mlp1, new GradientVectorOptions { Ratio = 0.5f })[0];
        Assert.Equal([1, 3, 4, 5, 7], half.Positions);
        Assert.Equal(1.0, Math.Sqrt(tl.Vector!.Sum(x => (double)x * x)), 5);
    }

    [Fact]
    public void NeuronpediaTokensMapToTheirSubTokens()
    {
        using var m = Model.Load(_gpt2);
        string[] tokens = [" The", " cat", " sat", " blorfingtonian", " on", " mats"];
        float[] values = [0.1f, 0.9f, 0.2f, 1f, 0.3f, 0.85f];
        var record = new ActivationRecord("record 0", tokens, null, values, 3);
        // Independently: each token's positions are the tokens its prefix adds (the words start with a space, so they do not merge).
        var count = Enumerable.Range(0, tokens.Length + 1).Select(i => m.Tokenizer.Encode(string.Concat(tokens.Take(i))).Length).ToArray();
        int[] Span(int t) => [.. Enumerable.Range(count[t], count[t + 1] - count[t])];
        Assert.True(count[4] - count[3] > 1, "the made-up word should split into several sub-tokens");
        var ids = m.Tokenizer.Encode(string.Concat(tokens));

        var tl = GradientVectors.FromRecords(m, [record], Mlp1, new GradientVectorOptions())[0];
        Assert.Equal(Span(1).Concat(Span(3)).Concat(Span(5)), tl.Positions);
        Compare.Close(Expected(m, ids, Mlp1, tl.Positions), tl.Vector, 1e-6, "tl recipe, re-tokenised");
        var hf = GradientVectors.FromRecords(m, [record], Mlp1, new GradientVectorOptions { Recipe = GradientRecipe.HuggingFace })[0];
        Assert.Equal([count[3]], hf.Positions);   // the first sub-token of the strongest token
    }

    [Fact]
    public void ATokenWithoutPositionsOrNoActivationIsReported()
    {
        using var m = Model.Load(_gpt2);
        var empty = new ActivationRecord("record 2", [" a", "", " b"], null, [0.1f, 1f, 0.2f], 1);
        var e = Assert.Throws<PolyEngineException>(() => GradientVectors.FromRecords(m, [empty], Mlp1, new GradientVectorOptions()));
        Assert.Contains("record 2, token 1 (''): it does not re-tokenise", e.Message);
        var flat = new ActivationRecord("record 5", [" a", " b"], null, [0f, 0f], 0);
        var none = GradientVectors.FromRecords(m, [flat], Mlp1, new GradientVectorOptions())[0];
        Assert.Null(none.Vector);
        Assert.Contains("no positive activation", none.Note);
        Assert.Contains("--ratio 0", Assert.Throws<PolyEngineException>(() => GradientVectors.FromRecords(m, [flat], Mlp1, new GradientVectorOptions { Ratio = 0 })).Message);
    }

    [Fact]
    public void AContextsTableGivesItsFeaturesRecordsByRank()
    {
        using var dir = new Fixtures.TempDir();
        ContextRow Row(int feature, int rank, int[] ids) => new()
        {
            Sae = "s", Feature = feature, Rank = rank, Tokens = ids, TokenStrings = [.. ids.Select(i => $"<{i}>")],
            TokenActivations = [.. ids.Select((_, i) => (float)i)], MaxPosition = ids.Length - 1,
        };
        TableWriter.Write(dir.File("contexts.parquet"), [Row(4, 1, [7, 8, 9]), Row(2, 0, [1, 2]), Row(4, 0, [3, 4, 5, 6])], TableFormat.Parquet);
        var records = ActivationRecords.Load(dir.File("contexts.parquet"), 4);
        Assert.Equal(["context rank 0", "context rank 1"], records.Select(r => r.Source));
        Assert.Equal([3, 4, 5, 6], records[0].Ids!);
        Assert.Equal([0f, 1f, 2f, 3f], records[0].Values);
        Assert.Equal(3, records[0].MaxValueTokenIndex);
        Assert.Contains("give --feature N", Assert.Throws<PolyEngineException>(() => ActivationRecords.Load(dir.File("contexts.parquet"))).Message);
        Assert.Equal([2, 4], ActivationRecords.LoadAll(dir.File("contexts.parquet"), null).Keys.Order());
        var damaged = Row(5, 0, [1, 2, 3]);
        damaged.MaxPosition = 7;
        TableWriter.Write(dir.File("damaged.parquet"), [damaged], TableFormat.Parquet);
        Assert.Contains("feature 5, rank 0 has 3 tokens, 3 activations, 3 token strings and max position 7", Assert.Throws<PolyEngineException>(() => ActivationRecords.Load(dir.File("damaged.parquet"), 5)).Message);
        File.WriteAllText(dir.File("np.json"), """{"activations": [{"tokens": [" a", " b"], "values": [1, 2], "maxValueTokenIndex": 1.5}]}""");
        Assert.Contains("maxValueTokenIndex 1.5 is not a token index", Assert.Throws<PolyEngineException>(() => ActivationRecords.Load(dir.File("np.json"))).Message);
        Assert.Contains("no contexts for it", Assert.Throws<PolyEngineException>(() => ActivationRecords.Load(dir.File("contexts.parquet"), 9)).Message);
    }

    [Fact]
    public void TransformerLensWeightsCentreTheObjectiveAndRefuseTheDegenerateOne()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int d = m.Spec.DModel;
        var e = Assert.Throws<PolyEngineException>(() => GradientObjective.Parse("sum", m, Mlp1).UnderTransformerLensWeights(Mlp1, d));
        Assert.Contains("degenerate", e.Message);
        var v = Enumerable.Range(0, d).Select(i => (float)i).ToArray();
        var tl = new GradientObjective("v", v).UnderTransformerLensWeights(Mlp1, d);
        Assert.Equal(0, tl.Direction!.Average(x => (double)x), 5);
        Assert.Equal(v[5] - v[2], tl.Direction![5] - tl.Direction[2], 5);
        Assert.Contains("hook_attn_out and hook_mlp_out", Assert.Throws<PolyEngineException>(() =>
            new GradientObjective("v", v).UnderTransformerLensWeights(HookName.Parse("blocks.1.hook_resid_post"), d)).Message);
    }

    [Fact]
    public void TheCliWritesVectorsSteerReads()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("feature.json"), """
            {"modelId": "gpt2", "index": "7", "activations": [
              {"tokens": [" The", " cat", " sat", " on"], "values": [0.1, 2.0, 0.3, 1.7], "maxValueTokenIndex": 1},
              {"tokens": [" dogs", " bark", "ed"], "values": [0.5, 0.1, 0.0]},
              {"tokens": [" zero", " here"], "values": [0, 0]}
            ]}
            """);
        var (code, stdout, stderr) = Run("gradient-vectors", "--model", _gpt2, "--records", dir.File("feature.json"), "--hook", "blocks.1.hook_mlp_out",
            "--format", "csv", "--out", dir.File("g.npy"));
        Assert.True(code == 0, stderr);
        Assert.Contains("2 vectors from 3 records", stdout);
        Assert.Contains("record 2: no vector (no positive activation", stdout);
        var vectors = VectorFile.Load(dir.File("g.npy"));
        using var m = Model.Load(_gpt2);
        var records = ActivationRecords.Load(dir.File("feature.json"));
        var expected = GradientVectors.FromRecords(m, records, Mlp1, new GradientVectorOptions());
        Assert.Equal(2, vectors.Length);
        Compare.Close(expected[0].Vector, vectors[0], 0, "vector 0");
        Compare.Close(expected[1].Vector, vectors[1], 0, "vector 1");
        var table = File.ReadAllLines(dir.File("g.records.csv"));
        Assert.Equal(4, table.Length);
        Assert.StartsWith("vector,source,hook,recipe,objective,positions", table[0]);
        Assert.StartsWith("-1,record 2,", table[3]);

        File.WriteAllLines(dir.File("p.jsonl"), ["{\"text\": \" The cat\", \"target_strings\": [\" sat\"]}"]);
        (code, stdout, stderr) = Run("steer", "--model", _gpt2, "--hook", "blocks.1.hook_mlp_out", "--vectors", dir.File("g.npy"),
            "--prompts", dir.File("p.jsonl"), "--scales", "-2,2", "--format", "csv", "--out", dir.File("sweep"));
        Assert.True(code == 0, stderr);
        Assert.Contains("2 vectors × 2 scales", stdout);
    }

    public static TheoryData<string[], string> BadRequests() => new()
    {
        { ["--records", "{dir}/missing.json", "--hook", "blocks.1.hook_mlp_out"], "file not found" },
        { ["--records", "{dir}/feature.json", "--hook", "blocks.1.hook_mlp_out", "--recipe", "tx"], "--recipe tx: choose tl or hf" },
        { ["--records", "{dir}/feature.json", "--hook", "blocks.1.hook_mlp_out", "--ratio", "1.5"], "--ratio 1.5" },
        { ["--records", "{dir}/feature.json", "--hook", "blocks.1.hook_mlp_out", "--weights", "tl"], "degenerate" },
        { ["--records", "{dir}/feature.json", "--hook", "ln_final.hook_normalized"], "LM head side" },
        { ["--records", "{dir}/bad.json", "--hook", "blocks.1.hook_mlp_out"], "record 0 has 2 tokens and 1 values" },
        { ["--records", "{dir}/feature.json", "--hook", "blocks.1.hook_mlp_out", "--objective", "{dir}/feature.json"], "--objective" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void ABadRequestIsOneLineAndWritesNothing(string[] args, string expected)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("feature.json"), """{"activations": [{"tokens": [" a", " b"], "values": [1.0, 0.5]}]}""");
        File.WriteAllText(dir.File("bad.json"), """[{"tokens": [" a", " b"], "values": [1.0]}]""");
        var (code, _, stderr) = Run(["gradient-vectors", "--model", _gpt2, .. args.Select(a => a.Replace("{dir}", dir.Path)), "--out", dir.File("g.npy")]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("g.npy")));
        Assert.False(File.Exists(dir.File("g.records.parquet")));
    }
}

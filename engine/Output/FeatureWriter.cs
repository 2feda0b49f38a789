using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>One feature's statistics (features table).</summary>
public sealed class FeatureRow
{
    [JsonPropertyName("sae")] public string Sae { get; set; } = "";
    [JsonPropertyName("feature")] public int Feature { get; set; }
    [JsonPropertyName("fire_count")] public long FireCount { get; set; }
    [JsonPropertyName("frequency")] public double Frequency { get; set; }
    /// <summary>Mean activation over the tokens where the feature fires (NaN when it never fires).</summary>
    [JsonPropertyName("mean_activation")] public double MeanActivation { get; set; }
    [JsonPropertyName("max_activation")] public double MaxActivation { get; set; }
}

/// <summary>One top activating context of a feature (contexts table).</summary>
public sealed class ContextRow
{
    [JsonPropertyName("sae")] public string Sae { get; set; } = "";
    [JsonPropertyName("feature")] public int Feature { get; set; }
    [JsonPropertyName("rank")] public int Rank { get; set; }
    [JsonPropertyName("activation")] public double Activation { get; set; }
    /// <summary>The context window's index in the scan.</summary>
    [JsonPropertyName("window")] public long Window { get; set; }
    /// <summary>The document the window comes from (0-based, in corpus order).</summary>
    [JsonPropertyName("document")] public long Document { get; set; }
    /// <summary>Where the window's first corpus token sits in its document (a prepended BOS is not a corpus token).</summary>
    [JsonPropertyName("document_offset")] public long Offset { get; set; }
    /// <summary>The position in <see cref="Tokens"/> where the feature is strongest.</summary>
    [JsonPropertyName("max_position")] public int MaxPosition { get; set; }
    /// <summary>The window's token ids (BOS first when one was prepended).</summary>
    [JsonPropertyName("tokens")] public int[] Tokens { get; set; } = [];
    /// <summary>Each token decoded on its own (empty when the model has no tokenizer).</summary>
    [JsonPropertyName("token_strings")] public string[] TokenStrings { get; set; } = [];
    /// <summary>The feature's activation at each token.</summary>
    [JsonPropertyName("token_activations")] public float[] TokenActivations { get; set; } = [];
}

/// <summary>
/// Writes a feature scan: <c>features.parquet</c> (or .csv), <c>contexts.parquet</c> (each feature's top-k windows with
/// their document and offset, and the token ids, decoded tokens and per-token activations as list columns — in CSV,
/// JSON arrays), and <c>manifest.json</c>.
/// </summary>
public static class FeatureWriter
{
    /// <summary>The files a feature scan in <paramref name="format"/> writes.</summary>
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) =>
        [$"features{TableWriter.Extension(format)}", $"contexts{TableWriter.Extension(format)}", "manifest.json"];

    /// <summary>A shard's raw statistics beside its tables (<see cref="FeatureScan.SaveShard"/>).</summary>
    public const string ShardStats = "stats.safetensors";

    /// <summary>The two tables from their rows; returns the numbers of rows.</summary>
    public static void WriteTables(string outDir, IReadOnlyList<FeatureRow> features, IReadOnlyList<ContextRow> contexts, TableFormat format)
    {
        Directory.CreateDirectory(outDir);
        TableWriter.Write(Path.Combine(outDir, "features" + TableWriter.Extension(format)), features, format);
        TableWriter.Write(Path.Combine(outDir, "contexts" + TableWriter.Extension(format)), contexts, format);
    }

    /// <summary>A feature's row of the features table.</summary>
    public static FeatureRow Row(string sae, FeatureStatistics st, int j) => new()
    {
        Sae = sae, Feature = j, FireCount = st.FireCounts[j], Frequency = st.Tokens == 0 ? 0 : (double)st.FireCounts[j] / st.Tokens,
        MeanActivation = st.FireCounts[j] == 0 ? double.NaN : st.ActivationSum(j) / st.FireCounts[j], MaxActivation = st.MaxActivations[j],
    };

    /// <summary>Writes the tables and the manifest (naming the shard when the scan ran one); returns the names of the files written.</summary>
    public static IReadOnlyList<string> Write(string outDir, IReadOnlyList<FeatureStatistics> stats, long tokens, long windows, double seconds, Model model,
        string corpusPath, IReadOnlyList<string> corpusFiles, TableFormat format, string device, JsonObject options, Shard? shard = null)
    {
        Directory.CreateDirectory(outDir);
        var names = SaeNames.Of(stats.Select(s => s.Sae).ToList());
        var features = new List<FeatureRow>();
        var contexts = new List<ContextRow>();
        var decode = Decoder(model);
        for (int i = 0; i < stats.Count; i++)
        {
            var st = stats[i];
            for (int j = 0; j < st.FireCounts.Length; j++)
            {
                features.Add(Row(names[i], st, j));
                int rank = 0;
                foreach (var c in st.TopContexts(j))
                    contexts.Add(new ContextRow
                    {
                        Sae = names[i], Feature = j, Rank = rank++, Activation = c.Activation, Window = c.Window, Document = c.Document, Offset = c.Offset,
                        MaxPosition = c.Position, Tokens = c.Tokens, TokenStrings = c.Tokens.Select(decode).ToArray(), TokenActivations = c.TokenActivations,
                    });
            }
        }
        WriteTables(outDir, features, contexts, format);
        var manifest = ScanManifest.Build("polyengine features", model, stats.Select(s => s.Sae).ToList(), names, corpusPath, corpusFiles, device,
            options, new JsonObject
            {
                ["tokens"] = tokens, ["context_windows"] = windows, ["seconds"] = seconds, ["tokens_per_second"] = tokens / Math.Max(seconds, 1e-9),
                ["feature_rows"] = features.Count, ["context_rows"] = contexts.Count,
            });
        if (shard is { Count: > 1 } s) manifest["shard"] = s.ToString();
        ScanManifest.Save(outDir, manifest);
        return PlannedFiles(format);
    }

    /// <summary>Each token id decoded on its own (memoised: contexts repeat tokens), or "" when the model has no tokenizer.</summary>
    static Func<int, string> Decoder(Model model)
    {
        Tokenization.ModelTokenizer tok;
        try { tok = model.Tokenizer; }
        catch (PolyEngineException) { return _ => ""; }
        var cache = new Dictionary<int, string>();
        return id => cache.TryGetValue(id, out var s) ? s : cache[id] = tok.Decode([id]);
    }
}

using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PolyEngine.Formats;
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
    [JsonPropertyName("window")] public long Window { get; set; }
    [JsonPropertyName("max_position")] public int MaxPosition { get; set; }
    /// <summary>The window's token ids, space-separated.</summary>
    [JsonPropertyName("tokens")] public string Tokens { get; set; } = "";
    /// <summary>The feature's activation at each token, space-separated.</summary>
    [JsonPropertyName("token_activations")] public string TokenActivations { get; set; } = "";
}

/// <summary>
/// Writes a feature scan: <c>features.parquet</c> (or .csv), <c>contexts.parquet</c> (each feature's top-k windows, the
/// token ids and per-token activations as space-separated lists: <c>np.array(s.split(), dtype=int)</c>), and <c>manifest.json</c>.
/// </summary>
public static class FeatureWriter
{
    public static void Write(string outDir, IReadOnlyList<FeatureStatistics> stats, long tokens, long windows, double seconds, Model model,
        string corpusPath, IReadOnlyList<string> corpusFiles, TableFormat format, string device, JsonObject options)
    {
        Directory.CreateDirectory(outDir);
        var names = ScanManifest.SaeNames(stats.Select(s => s.Sae).ToList());
        var features = new List<FeatureRow>();
        var contexts = new List<ContextRow>();
        for (int i = 0; i < stats.Count; i++)
        {
            var st = stats[i];
            for (int j = 0; j < st.FireCounts.Length; j++)
            {
                features.Add(new FeatureRow
                {
                    Sae = names[i], Feature = j, FireCount = st.FireCounts[j], Frequency = st.Tokens == 0 ? 0 : (double)st.FireCounts[j] / st.Tokens,
                    MeanActivation = st.FireCounts[j] == 0 ? double.NaN : st.ActivationSums[j] / st.FireCounts[j], MaxActivation = st.MaxActivations[j],
                });
                int rank = 0;
                foreach (var c in st.TopContexts(j))
                    contexts.Add(new ContextRow
                    {
                        Sae = names[i], Feature = j, Rank = rank++, Activation = c.Activation, Window = c.Window, MaxPosition = c.Position,
                        Tokens = string.Join(" ", c.Tokens),
                        TokenActivations = string.Join(" ", c.TokenActivations.Select(a => a.ToString("R", System.Globalization.CultureInfo.InvariantCulture))),
                    });
            }
        }
        TableWriter.Write(Path.Combine(outDir, "features" + TableWriter.Extension(format)), features, format);
        TableWriter.Write(Path.Combine(outDir, "contexts" + TableWriter.Extension(format)), contexts, format);
        ScanManifest.Save(outDir, ScanManifest.Build("polyengine features", model, stats.Select(s => s.Sae).ToList(), names, corpusPath, corpusFiles, device,
            options, new JsonObject
            {
                ["tokens"] = tokens, ["context_windows"] = windows, ["seconds"] = seconds, ["tokens_per_second"] = tokens / Math.Max(seconds, 1e-9),
                ["feature_rows"] = features.Count, ["context_rows"] = contexts.Count,
            }));
    }
}

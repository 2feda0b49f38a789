using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PolyEngine.Formats;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>One row of a pair table: an unordered feature pair (a &lt; b) of one SAE and its statistics.</summary>
public sealed class PairRow
{
    [JsonPropertyName("sae")] public string Sae { get; set; } = "";
    [JsonPropertyName("feature_a")] public int FeatureA { get; set; }
    [JsonPropertyName("feature_b")] public int FeatureB { get; set; }
    [JsonPropertyName("count_a")] public long CountA { get; set; }
    [JsonPropertyName("count_b")] public long CountB { get; set; }
    [JsonPropertyName("count_ab")] public long CountAB { get; set; }
    [JsonPropertyName("jaccard")] public double Jaccard { get; set; }
    [JsonPropertyName("pmi")] public double Pmi { get; set; }
    [JsonPropertyName("lift")] public double Lift { get; set; }
}

/// <summary>
/// Writes a co-activation scan to a folder: <c>pairs.parquet</c> (or .csv) — each feature's top-N partners by count, or
/// every co-occurring pair with <c>top = null</c> —, <c>coactivation.safetensors</c> with the full triangle per SAE
/// (<c>{sae}.pairs</c> U32 [F·(F−1)/2], index a·F − a·(a+1)/2 + (b − a − 1); <c>{sae}.marginals</c> I64 [F]) for dense
/// consumers, and <c>manifest.json</c> (inputs with hashes, options, device, timings, counts). Every file atomically.
/// </summary>
public static class CoactivationWriter
{
    public static IReadOnlyList<PairRow> Rows(string sae, CoactivationCounter c, int? top)
    {
        var rows = new List<PairRow>();
        int f = c.Features;
        PairRow Row(int a, int b)
        {
            var s = PairStats.Of(a, b, c.Marginals[a], c.Marginals[b], c.Count(a, b), c.Units);
            return new PairRow { Sae = sae, FeatureA = a, FeatureB = b, CountA = (long)s.CountA, CountB = (long)s.CountB, CountAB = (long)s.CountAB,
                Jaccard = s.Jaccard, Pmi = s.Pmi, Lift = s.Lift };
        }
        if (top is null)
        {
            for (int a = 0; a < f; a++)
                for (int b = a + 1; b < f; b++)
                    if (c.Count(a, b) > 0) rows.Add(Row(a, b));
            return rows;
        }
        // Each feature's top partners by count (ties: the lower id), in one pass over the triangle.
        var heaps = new TopHeaps<uint>(f, Math.Min(top.Value, f - 1));   // at most F − 1 partners: a larger --top keeps them all
        for (int a = 0; a < f - 1; a++)
        {
            var row = c.Row(a);
            for (int b = a + 1; b < f; b++)
            {
                uint n = row[b - a - 1];
                if (n == 0) continue;
                if (heaps.Admits(a, n)) heaps.Offer(a, n, b);
                if (heaps.Admits(b, n)) heaps.Offer(b, n, a);
            }
        }
        var chosen = new SortedSet<(int, int)>();
        for (int a = 0; a < f; a++)
            foreach (var (b, _) in heaps.Sorted(a)) chosen.Add((Math.Min(a, b), Math.Max(a, b)));
        foreach (var (a, b) in chosen) rows.Add(Row(a, b));
        return rows;
    }

    /// <summary>Writes the pair table, the triangle and the manifest; returns the names of the files written.</summary>
    public static IReadOnlyList<string> Write(string outDir, CoactivationResult result, Model model, string corpusPath, IReadOnlyList<string> corpusFiles,
        CoactivationOptions options, int? top, TableFormat format, string device)
    {
        Directory.CreateDirectory(outDir);
        var names = SaeNames.Of(result.Counters.Select(c => c.Sae).ToList());
        var rows = result.Counters.SelectMany((c, i) => Rows(names[i], c.Counter, top)).ToList();
        TableWriter.Write(Path.Combine(outDir, "pairs" + TableWriter.Extension(format)), rows, format);

        var st = new SafeTensorsWriter().AddMetadata("units", result.Counters[0].Counter.Units.ToString())
            .AddMetadata("window", options.Window.ToString()).AddMetadata("index", "a*F - a*(a+1)/2 + (b - a - 1), a < b");
        for (int i = 0; i < result.Counters.Count; i++)
        {
            var c = result.Counters[i].Counter;
            st.Add($"{names[i]}.pairs", c.PairChunks, CoactivationCounter.PairCount(c.Features));
            st.Add($"{names[i]}.marginals", c.Marginals.ToArray().Select(v => (long)v).ToArray(), c.Features);
        }
        st.Save(Path.Combine(outDir, "coactivation.safetensors"));

        var manifest = ScanManifest.Build("polyengine coactivate", model, result.Counters.Select(c => c.Sae).ToList(), names, corpusPath, corpusFiles, device,
            new JsonObject
            {
                ["window"] = options.Window.ToString(), ["threshold"] = options.Threshold, ["context_size"] = options.ContextSize,
                ["batch"] = options.Batch, ["max_tokens"] = options.MaxTokens, ["prepend_bos"] = options.PrependBos, ["top"] = top is null ? "all" : top.Value, ["format"] = format.ToString().ToLowerInvariant(),
            },
            new JsonObject
            {
                ["tokens"] = result.Tokens, ["context_windows"] = result.Windows, ["documents"] = result.Documents,
                ["seconds"] = result.Seconds, ["tokens_per_second"] = result.Tokens / Math.Max(result.Seconds, 1e-9), ["pair_rows"] = rows.Count,
                ["units"] = new JsonArray(result.Counters.Select(c => (JsonNode)JsonValue.Create(c.Counter.Units)!).ToArray()),
                ["counter"] = "uint32 per pair (a count is at most the number of units, refused past 2^32 - 1)",
                ["counter_bytes"] = new JsonArray(result.Counters.Select(c => (JsonNode)JsonValue.Create(CoactivationCounter.BytesFor(c.Sae.Config.DSae))!).ToArray()),
            });
        ScanManifest.Save(outDir, manifest);
        return [$"pairs{TableWriter.Extension(format)}", "coactivation.safetensors", "manifest.json"];
    }

}

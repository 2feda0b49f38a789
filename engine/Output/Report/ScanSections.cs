using System.Globalization;
using System.Text.Json.Nodes;
using static PolyEngine.Output.Report.ReportPage;

namespace PolyEngine.Output.Report;

/// <summary>The report's sections for the scans: interference (App. F / Fig. 9: the cosine CDF with the five bins, the
/// fractions below each edge, the explanation-similarity distribution), co-activation (top pairs and the Jaccard
/// distribution), feature statistics (firing-frequency density) and steering sweeps (mean best change per vector).
/// Each writes the numbers it shows into the run's summary entry.</summary>
static class ScanSections
{
    static readonly double[] BinEdges = [0.1, 0.2, 0.3, 0.4];

    public static void Interference(string run, JsonNode manifest, ReportPage page, JsonObject entry)
    {
        var bins = Tables.Read(run, "bins", "sae", "bin", "pairs", "fraction", "fraction_below_hi");
        var histogram = Tables.Read(run, "histogram", "sae", "hi", "pairs");
        if (bins is null || histogram is null) { page.Note("The bins or histogram table is missing: the run did not finish, or its folder was changed."); return; }
        var saes = bins.Column("sae").Distinct().ToList();
        if (saes.Count == 0) { page.Note("The run has no SAEs in its tables: nothing to show."); return; }
        var numbers = new JsonObject();
        entry["interference"] = numbers;

        string stem = page.NextFigure("interference-cdf");
        Figures.Cdf(stem, "decoder interference: cumulative distribution of pair cosines", "cosine of decoder directions", Series(histogram, saes), BinEdges);
        page.Heading(3, "Interference").Figure(stem, "fraction of pairs at or below each cosine, per SAE; dashed: the bin edges 0.1, 0.2, 0.3, 0.4");
        var rows = new List<IReadOnlyList<string>>();
        foreach (var sae in saes)
        {
            // By bin key, so a table with a bin missing shows a gap, not shifted columns.
            var mine = bins.Rows.Where(r => r["sae"] == sae).GroupBy(r => r["bin"]).ToDictionary(g => g.Key, g => g.First());
            double Of(string bin, string column) => mine.TryGetValue(bin, out var r) ? D(r, column) : double.NaN;
            long pairs = histogram.Rows.Where(r => r["sae"] == sae).Sum(r => (long)D(r, "pairs"));   // every pair, negatives included
            var below = Scans.InterferenceBins.Keys.Take(BinEdges.Length).Select(k => Of(k, "fraction_below_hi")).ToArray();
            numbers[sae] = new JsonObject
            {
                ["pairs"] = pairs,
                ["fraction_in_bin"] = new JsonObject(Scans.InterferenceBins.Keys.Select(k => KeyValuePair.Create(k, (JsonNode?)Json(Of(k, "fraction"))))),
                ["fraction_below"] = new JsonObject(BinEdges.Select((e, i) => KeyValuePair.Create(Key(e), (JsonNode?)Json(below[i])))),
            };
            rows.Add([sae, pairs.ToString("N0", CultureInfo.InvariantCulture), .. below.Select(Percent), .. Scans.InterferenceBins.Keys.Select(k => Percent(Of(k, "fraction")))]);
        }
        page.Table(["sae", "pairs", .. BinEdges.Select(e => $"< {Key(e)}"), .. Scans.InterferenceBins.Keys.Select(k => $"in {k}")], rows);

        var similarity = Tables.Read(run, "similarity", "sae", "tau", "pairs_below", "fraction_below");
        var simHistogram = Tables.Read(run, "similarity_histogram", "sae", "hi", "pairs");
        if (similarity is not null && simHistogram is not null && similarity.Rows.Count > 0)
        {
            var taus = similarity.Rows.Select(r => D(r, "tau")).Distinct().Order().ToArray();
            stem = page.NextFigure("similarity-cdf");
            Figures.Cdf(stem, "explanation similarity: cumulative distribution over all pairs", "cosine of explanation embeddings", Series(simHistogram, saes), taus);
            page.Heading(3, "Semantic similarity").Figure(stem, "fraction of pairs at or below each explanation similarity, per SAE; dashed: the thresholds τ");
            foreach (var sae in saes)
                ((JsonObject)numbers[sae]!)["similarity_below"] = new JsonObject(similarity.Rows.Where(r => r["sae"] == sae)
                    .OrderBy(r => D(r, "tau")).Select(r => KeyValuePair.Create(Key(D(r, "tau")), (JsonNode?)Json(D(r, "fraction_below")))));
            page.Table(["sae", .. taus.Select(t => $"< {Key(t)}")], saes.Select(sae => (IReadOnlyList<string>)
                [sae, .. taus.Select(t => similarity.Rows.FirstOrDefault(r => r["sae"] == sae && D(r, "tau") == t) is { } r ? Percent(D(r, "fraction_below")) : "–")]));
        }
        else if (manifest["saes"]?.AsArray().Any(s => s?["explanations"] is not null) == true)
            page.Note("The run had explanations but no similarity tables: an older PolyEngine wrote it; rerun the scan for the similarity distribution.");
        else page.Paragraph("No explanations were given: no semantic-similarity distribution and no qualified targets.");

        if (manifest["saes"] is JsonArray ms && ms.Any(s => s?["qualified"] is JsonObject))
        {
            var taus = ms.Select(s => s?["qualified"] as JsonObject).Where(q => q is not null).SelectMany(q => q!.Select(kv => kv.Key)).Distinct().ToList();
            page.Heading(3, "Qualified targets (an unrelated partner in every bin)")
                .Table(["sae", .. taus.Select(t => $"τ {t}")], ms.Where(s => s?["qualified"] is JsonObject).Select(s => (IReadOnlyList<string>)
                    [(string?)s!["name"] ?? "", .. taus.Select(t => s["qualified"]![t]?.ToJsonString() ?? "–")]));
            foreach (var s in ms.Where(s => s?["qualified"] is JsonObject && numbers.ContainsKey((string?)s!["name"] ?? "")))
                ((JsonObject)numbers[(string)s!["name"]!]!)["qualified"] = s["qualified"]!.DeepClone();
        }
    }

    /// <summary>Per SAE the histogram's bin tops and counts, in bin order.</summary>
    static List<(string, double[], long[])> Series(Table histogram, IEnumerable<string> saes) =>
        [.. saes.Select(sae =>
        {
            var rows = histogram.Rows.Where(r => r["sae"] == sae).OrderBy(r => D(r, "hi")).ToList();
            return (sae, rows.Select(r => D(r, "hi")).ToArray(), rows.Select(r => (long)D(r, "pairs")).ToArray());
        })];

    const int TopPairs = 10, JaccardBins = 60;
    const double JaccardLog10Min = -6;

    public static void Coactivation(string run, JsonNode manifest, ReportPage page, JsonObject entry)
    {
        string[] required = ["sae", "feature_a", "feature_b", "count_a", "count_b", "count_ab", "jaccard"];
        if (!Tables.Exists(run, "pairs"))
        { page.Note("The pairs table is missing: the run did not finish, or its folder was changed."); return; }
        // The busiest pairs per SAE, streamed (the table may hold every co-occurring pair).
        var top = new Dictionary<string, List<Dictionary<string, string>>>();
        foreach (var r in Tables.Rows(run, "pairs", required))
        {
            if (!top.TryGetValue(r["sae"], out var list)) top[r["sae"]] = list = [];
            list.Add(r);
            if (list.Count > 4 * TopPairs)
            {
                var keep = Busiest(list);
                list.Clear();
                list.AddRange(keep);
            }
        }
        if (top.Count == 0) { page.Note("The pairs table is empty: no two features fired together in the corpus."); entry["top_pairs"] = new JsonArray(); return; }
        var numbers = new JsonObject();
        entry["coactivation"] = numbers;
        page.Heading(3, $"Co-activation: the {TopPairs} pairs that fired together most, per SAE");
        foreach (var (sae, list) in top)
        {
            var best = Busiest(list);
            numbers[sae] = new JsonObject { ["top_pairs"] = new Table(required, best).ToJson() };
            page.Paragraph(sae).Table(["feature a", "feature b", "count a", "count b", "together", "jaccard"], best.Select(r => (IReadOnlyList<string>)
                [r["feature_a"], r["feature_b"], r["count_a"], r["count_b"], r["count_ab"], Num(D(r, "jaccard"))]));
        }
        // The Jaccard distribution over every pair, from the full triangle.
        string triangle = Path.Combine(run, "coactivation.safetensors");
        if (!File.Exists(triangle) || manifest["saes"] is not JsonArray saes) { page.Note("coactivation.safetensors is missing: no Jaccard distribution."); return; }
        var series = new List<(string, double[], double[])>();
        double[] centres = [.. Enumerable.Range(0, JaccardBins).Select(i => JaccardLog10Min * (1 - (i + 0.5) / JaccardBins))];
        foreach (var s in saes)
        {
            string name = (string)s!["name"]!;
            using var lookup = new Scans.CoactivationLookup(triangle, name, (int)s["d_sae"]!);
            var (histogram, never) = lookup.JaccardLog10Histogram(JaccardBins, JaccardLog10Min);
            long together = histogram.Sum();
            series.Add((name, centres, [.. histogram.Select(c => together == 0 ? 0 : c / (double)together)]));
            var n = (JsonObject?)numbers[name] ?? (JsonObject)(numbers[name] = new JsonObject());
            n["pairs_together"] = together;
            n["pairs_never_together"] = never;
            n["jaccard_log10_histogram"] = new JsonObject
            {
                ["lo"] = JaccardLog10Min, ["hi"] = 0, ["bins"] = JaccardBins, ["pairs"] = new JsonArray([.. histogram.Select(c => (JsonNode)c)]),
            };
        }
        string stem = page.NextFigure("jaccard");
        Figures.Lines(stem, "co-activation: Jaccard of the pairs that fired together", "log10 Jaccard", "fraction of those pairs", series);
        page.Figure(stem, "distribution of log10 Jaccard over every pair that fired together at least once, per SAE");
        page.Table(["sae", "pairs that fired together", "pairs that never did"], series.Select(x => (IReadOnlyList<string>)
            [x.Item1, ((long)numbers[x.Item1]!["pairs_together"]!).ToString("N0", CultureInfo.InvariantCulture),
             ((long)numbers[x.Item1]!["pairs_never_together"]!).ToString("N0", CultureInfo.InvariantCulture)]));
    }

    static List<Dictionary<string, string>> Busiest(IEnumerable<Dictionary<string, string>> rows) =>
        [.. rows.OrderByDescending(r => D(r, "count_ab")).ThenBy(r => D(r, "feature_a")).ThenBy(r => D(r, "feature_b")).Take(TopPairs)];

    public static void Features(string run, ReportPage page, JsonObject entry)
    {
        var features = Tables.Read(run, "features", "sae", "feature", "fire_count", "frequency");
        if (features is null) { page.Note("The features table is missing: the run did not finish, or its folder was changed."); return; }
        if (features.Rows.Count == 0) { page.Note("The features table is empty: nothing to show."); return; }
        const int bins = 64;
        const double lo = -8;
        double[] centres = [.. Enumerable.Range(0, bins).Select(i => lo * (1 - (i + 0.5) / bins))];
        var numbers = new JsonObject();
        entry["features"] = numbers;
        var series = new List<(string, double[], double[])>();
        var rows = new List<IReadOnlyList<string>>();
        foreach (var group in features.Rows.GroupBy(r => r["sae"]))
        {
            var freq = group.Select(r => D(r, "frequency")).ToArray();
            var alive = freq.Where(f => f > 0).ToArray();
            var histogram = new long[bins];
            foreach (var f in alive) histogram[Math.Clamp((int)Math.Floor((Math.Log10(f) - lo) / -lo * bins), 0, bins - 1)]++;
            series.Add((group.Key, centres, [.. histogram.Select(c => (double)c)]));
            double median = alive.Length == 0 ? double.NaN : MathNet.Numerics.Statistics.Statistics.Median(alive);
            numbers[group.Key] = new JsonObject
            {
                ["features"] = freq.Length, ["never_fired"] = freq.Length - alive.Length, ["median_frequency_of_the_rest"] = Json(median),
                ["log10_frequency_histogram"] = new JsonObject { ["lo"] = lo, ["hi"] = 0, ["bins"] = bins, ["features"] = new JsonArray([.. histogram.Select(c => (JsonNode)c)]) },
            };
            rows.Add([group.Key, freq.Length.ToString(CultureInfo.InvariantCulture), (freq.Length - alive.Length).ToString(CultureInfo.InvariantCulture), Num(median)]);
        }
        string stem = page.NextFigure("feature-density");
        Figures.Lines(stem, "features: how often each fires", "log10 firing frequency (fraction of tokens)", "features", series);
        page.Heading(3, "Feature density").Figure(stem, "features per bin of log10 firing frequency, per SAE (features that never fired left out)")
            .Table(["sae", "features", "never fired", "median frequency of the rest"], rows);
    }

    public static void Steer(string run, ReportPage page, JsonObject entry)
    {
        var best = Tables.Read(run, "best", "prompt");
        if (best is null) { page.Note("The best table is missing: the run did not finish, or its folder was changed."); return; }
        if (best.Rows.Count == 0) { page.Note("The best table is empty: nothing to show."); return; }
        string item = best.Columns.Contains("neuron") ? "neuron" : "vector";
        var deltas = best.Columns.Where(c => c.StartsWith("delta_", StringComparison.Ordinal) || c.StartsWith("rel_delta_", StringComparison.Ordinal)).ToList();
        var labels = Tables.Read(run, "vectors", "vector", "source", "id")?.Rows.ToDictionary(r => r["vector"], r => $"{r["source"]} {r["id"]}") ?? [];
        var means = best.Rows.GroupBy(r => r[item]).OrderBy(g => D(g.First(), item))
            .Select(g => (Item: g.Key, Label: labels.GetValueOrDefault(g.Key, ""), Prompts: g.Count(), Means: deltas.Select(c => g.Select(r => D(r, c)).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average()).ToArray()))
            .ToList();
        entry["best_means"] = new JsonArray([.. means.Select(m => (JsonNode)new JsonObject(
            [KeyValuePair.Create(item, (JsonNode?)m.Item), KeyValuePair.Create("source", (JsonNode?)m.Label), KeyValuePair.Create("prompts", (JsonNode?)m.Prompts),
             .. deltas.Select((c, k) => KeyValuePair.Create(c, (JsonNode?)Json(m.Means[k])))]))]);
        page.Heading(3, $"Best change per {item}, mean over prompts")
            .Table([item, "source", "prompts", .. deltas], means.Select(m => (IReadOnlyList<string>)[m.Item, m.Label, m.Prompts.ToString(CultureInfo.InvariantCulture), .. m.Means.Select(Num)]));
    }

    static string Key(double edge) => edge.ToString("0.0##", CultureInfo.InvariantCulture);

    /// <summary>A number for summary.json (NaN and infinities as null: JSON has none).</summary>
    internal static JsonNode? Json(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
}

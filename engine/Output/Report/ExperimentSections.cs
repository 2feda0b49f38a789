using System.Globalization;
using System.Text.Json.Nodes;
using static PolyEngine.Output.Report.ReportPage;

namespace PolyEngine.Output.Report;

/// <summary>The report's sections for the intervention experiments: the steering loci (Figs. 3–5: levels bars and the
/// regressions), the neuron locus (Fig. 6: bucket box plots) and token-type injection (Table 1 / 5: success rates with
/// the paper's stars). Each writes its numbers into the run's summary entry.</summary>
static class ExperimentSections
{
    static readonly string[] LevelColumns = ["level", "metric", "cases", "positive_cases", "positive_mean", "positive_ci95_low", "positive_ci95_high",
        "mean", "ci95_low", "ci95_high"];
    static readonly string[] RegressionColumns = ["model", "metric", "term", "n", "coefficient", "ci90_low", "ci90_high", "ci95_low", "ci95_high",
        "ci99_low", "ci99_high"];

    /// <summary>Feature, token and prompt loci: per metric the levels figure, the regression coefficients figure, and both tables.</summary>
    public static void Steering(string run, ReportPage page, JsonObject entry)
    {
        var levels = Tables.Read(run, "levels", LevelColumns);
        if (levels is null) { page.Note("The levels table is missing: the run did not finish, or its folder was changed."); return; }
        entry["levels"] = levels.ToJson();
        if (levels.Rows.Count == 0) { page.Note("The run has no cases: nothing to show (no sampled target had records or sentences to steer)."); return; }
        foreach (var metric in levels.Column("metric").Distinct())
        {
            var rows = levels.Rows.Where(r => r["metric"] == metric).ToList();
            string stem = page.NextFigure(metric);
            Figures.LevelBars(stem, $"{metric}: relative change per level", rows);
            page.Heading(3, metric).Figure(stem, $"{metric}: conditional-positive and unconditional mean relative change per level, 95 % CIs");
        }
        page.Heading(3, "Levels").Append(levels.Html());
        var regressions = Tables.Read(run, "regressions", RegressionColumns);
        if (regressions is not { Rows.Count: > 0 }) { page.Note("No regressions: the run has too few cases to fit models A and B."); return; }
        entry["regressions"] = regressions.ToJson();
        var terms = regressions.Rows.Where(r => r["term"] is "interference" or "similarity").ToList();
        if (terms.Count > 0)
        {
            string stem = page.NextFigure("regressions");
            Figures.Coefficients(stem, "interference and similarity in models A and B", [.. terms.Select(r => (
                $"{r["model"]} {r["metric"]}: {r["term"]}", D(r, "coefficient"),
                new[] { (D(r, "ci90_low"), D(r, "ci90_high")), (D(r, "ci95_low"), D(r, "ci95_high")), (D(r, "ci99_low"), D(r, "ci99_high")) }))]);
            page.Heading(3, "Regressions (models A and B)").Figure(stem, "coefficients of interference and similarity with 90, 95 and 99 % intervals");
        }
        page.Append(regressions.Html());
    }

    /// <summary>Neuron locus: masking vs amplifying per polysemanticity bucket.</summary>
    public static void Neuron(string run, ReportPage page, JsonObject entry)
    {
        var cases = Tables.Read(run, "cases", "bucket", "mask_max_abs_drop", "amplify_max_abs_increase");
        if (cases is null) { page.Note("The cases table is missing: the run did not finish, or its folder was changed."); return; }
        if (cases.Rows.Count == 0) { page.Note("The run has no cases: nothing to show."); entry["buckets"] = new JsonArray(); return; }
        string stem = page.NextFigure("neuron");
        var buckets = Figures.NeuronBoxes(stem, cases.Rows);
        entry["buckets"] = buckets;
        page.Heading(3, "Masking vs amplifying per polysemanticity bucket").Figure(stem, "change of the top-10 weighted cosine per bucket");
        page.Table(["bucket", "direction", "cases", "min", "q1", "median", "q3", "max"], buckets.Select(x => x!.AsObject()).Select(b => (IReadOnlyList<string>)
            [(string)b["bucket"]!, (string)b["direction"]!, ((int)b["cases"]!).ToString(CultureInfo.InvariantCulture),
             .. new[] { "min", "q1", "median", "q3", "max" }.Select(k => Num((double)b[k]!))]));
    }

    /// <summary>Token-type injection: success rates per type and category, starred by Welch's t against random.</summary>
    public static void Injection(string run, ReportPage page, JsonObject entry)
    {
        var summary = Tables.Read(run, "summary", "type", "category", "trials", "count_rate", "prob_rate", "p_value", "prob_p_value");
        if (summary is null) { page.Note("The summary table is missing: the run did not finish, or its folder was changed."); return; }
        entry["summary"] = summary.ToJson();
        if (summary.Rows.Count == 0) { page.Note("The run has no trials: nothing to show."); return; }
        page.Heading(3, "Success rates (stars: Welch's t against random, p < 0.05 *, 0.01 **, 0.001 ***)")
            .Table(["type", "category", "trials", "count rate", "prob rate"], summary.Rows.Select(r => (IReadOnlyList<string>)
                [r["type"], r["category"], r["trials"], Percent(D(r, "count_rate")) + Stars(r["p_value"], r["category"]),
                 Percent(D(r, "prob_rate")) + Stars(r["prob_p_value"], r["category"])]));
    }

    /// <summary>The paper's stars for a p-value (none for the random category itself).</summary>
    public static string Stars(string p, string category)
    {
        if (category == "random" || !double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || double.IsNaN(v)) return "";
        return v < 0.001 ? "***" : v < 0.01 ? "**" : v < 0.05 ? "*" : "";
    }
}

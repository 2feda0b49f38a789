using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Interventions;

namespace PolyEngine.Output;

/// <summary>
/// Writes an experiment's tables and manifest: <c>cases</c> (one row per test case, per metric its baseline, best, best
/// scale, change and relative change), <c>levels</c> (per level and metric, conditional-positive and unconditional means
/// of the relative change with SE and 95 % CI), <c>regressions</c> (models A and B: coefficient, SE, t, p, 90/95/99 %
/// CIs) and <c>manifest.json</c> last; each atomically.
/// </summary>
public static class ExperimentWriter
{
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) =>
        [.. new[] { "cases", "levels", "regressions" }.Select(t => t + TableWriter.Extension(format)), "manifest.json"];

    public static IReadOnlyList<string> Write(string outDir, IReadOnlyList<FeatureCase> cases, IReadOnlyList<SteerMetric> metrics, TableFormat format, JsonObject manifest)
    {
        var files = PlannedFiles(format);
        TableWriter.WriteColumns(Path.Combine(outDir, files[0]), Cases([]), [Cases(cases)], format);
        var levels = ExperimentSummary.Levels(cases, metrics);
        var notes = new List<string>();
        var regressions = ExperimentSummary.Regressions(cases, metrics, notes);
        TableWriter.WriteColumns(Path.Combine(outDir, files[1]), Levels([]), [Levels(levels)], format);
        TableWriter.WriteColumns(Path.Combine(outDir, files[2]), Regressions([]), [Regressions(regressions)], format);
        manifest["notes"] = new JsonArray(notes.Select(n => (JsonNode)n).ToArray());
        ScanManifest.Save(outDir, manifest);
        return files;

        ColumnTable Cases(IReadOnlyList<FeatureCase> rows)
        {
            var cols = new List<TableColumn>
            {
                Col("sae", rows, c => c.Sae), Col("hook", rows, c => c.Hook.ToString()), Col("tau", rows, c => c.Tau), Col("target", rows, c => c.Target),
                Col("level", rows, c => c.Level), Col("partner", rows, c => c.Partner), Col("interference", rows, c => c.Interference),
                Col("similarity", rows, c => c.Similarity), Col("token", rows, c => c.Token), Col("token_id", rows, c => c.TokenId), Col("sentence", rows, c => c.Sentence),
            };
            for (int m = 0; m < metrics.Count; m++)
            {
                int k = m;
                string n = metrics[m].Name();
                cols.AddRange([Col($"{n}_baseline", rows, c => c.Baseline[k]), Col($"{n}_best", rows, c => c.Best[k]), Col($"{n}_best_scale", rows, c => c.BestScale[k]),
                    Col($"{n}_delta", rows, c => c.Delta[k]), Col($"{n}_relative", rows, c => c.Relative[k])]);
            }
            return new ColumnTable([.. cols]);
        }

        ColumnTable Levels(IReadOnlyList<LevelSummary> rows) => new(
        [
            Col("level", rows, l => l.Level), Col("metric", rows, l => l.Metric.Name()), Col("cases", rows, l => l.Cases),
            Col("positive_cases", rows, l => l.Positive.N), Col("fraction_positive", rows, l => l.FractionPositive),
            Col("positive_mean", rows, l => l.Positive.Mean), Col("positive_se", rows, l => l.Positive.StdErr),
            Col("positive_ci95_low", rows, l => l.Positive.Ci95Low), Col("positive_ci95_high", rows, l => l.Positive.Ci95High),
            Col("mean", rows, l => l.All.Mean), Col("se", rows, l => l.All.StdErr), Col("ci95_low", rows, l => l.All.Ci95Low), Col("ci95_high", rows, l => l.All.Ci95High),
        ]);

        ColumnTable Regressions(IReadOnlyList<RegressionTerm> rows) => new(
        [
            Col("model", rows, r => r.Model), Col("metric", rows, r => r.Metric.Name()), Col("term", rows, r => r.Term.Name), Col("n", rows, r => r.N),
            Col("r_squared", rows, r => r.RSquared), Col("coefficient", rows, r => r.Term.Coefficient), Col("se", rows, r => r.Term.StdErr),
            Col("t", rows, r => r.Term.T), Col("p", rows, r => r.Term.P),
            Col("ci90_low", rows, r => r.Term.Ci90Low), Col("ci90_high", rows, r => r.Term.Ci90High), Col("ci95_low", rows, r => r.Term.Ci95Low),
            Col("ci95_high", rows, r => r.Term.Ci95High), Col("ci99_low", rows, r => r.Term.Ci99Low), Col("ci99_high", rows, r => r.Term.Ci99High),
        ]);
    }

    static TableColumn Col<TRow, T>(string name, IReadOnlyList<TRow> rows, Func<TRow, T> value) where T : struct
    {
        var c = new TableColumn<T>(name);
        foreach (var r in rows) c.Add(value(r));
        return c;
    }

    static TableColumn Col<TRow>(string name, IReadOnlyList<TRow> rows, Func<TRow, string> value)
    {
        var c = new TextColumn(name);
        foreach (var r in rows) c.Add(value(r));
        return c;
    }
}

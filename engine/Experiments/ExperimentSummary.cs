using PolyEngine.Interventions;
using PolyEngine.Stats;

namespace PolyEngine.Experiments;

/// <summary>Per level and metric: the mean relative change over the cases where it was positive (the paper's figures) and
/// over every case, each with SE and 95 % CI.</summary>
public sealed record LevelSummary(string Level, SteerMetric Metric, int Cases, MeanStats Positive, double FractionPositive, MeanStats All);

/// <summary>One regression's term, tagged with its model and metric.</summary>
public sealed record RegressionTerm(string Model, SteerMetric Metric, OlsTerm Term, int N, double RSquared);

/// <summary>The statistics of an experiment's cases: level summaries and the paper's models A and B.</summary>
public static class ExperimentSummary
{
    public static IReadOnlyList<LevelSummary> Levels(IReadOnlyList<FeatureCase> cases, IReadOnlyList<SteerMetric> metrics)
    {
        var result = new List<LevelSummary>();
        foreach (var level in cases.Select(c => c.Level).Distinct())
            for (int m = 0; m < metrics.Count; m++)
            {
                var values = cases.Where(c => c.Level == level).Select(c => c.Relative[m]).Where(double.IsFinite).ToList();
                var (pos, frac) = MeanStats.ConditionalPositive(values);
                result.Add(new LevelSummary(level, metrics[m], values.Count, pos, frac, MeanStats.Of(values)));
            }
        return result;
    }

    /// <summary>Models A and B per metric over the interference bins' cases (self and rand have no pair), with the layer
    /// type of each SAE's hook as dummies; a model that cannot be fitted (too few cases, a constant column) is left out and
    /// said in <paramref name="notes"/>.</summary>
    public static IReadOnlyList<RegressionTerm> Regressions(IReadOnlyList<FeatureCase> cases, IReadOnlyList<SteerMetric> metrics, List<string> notes)
    {
        var result = new List<RegressionTerm>();
        var paired = cases.Where(c => c.Level is not (FeatureExperiment.Self or FeatureExperiment.Random)).ToList();
        for (int m = 0; m < metrics.Count; m++)
        {
            var rows = paired.Where(c => double.IsFinite(c.Baseline[m]) && double.IsFinite(c.Best[m]))
                .Select(c => new RegressionRow(c.Baseline[m], c.Best[m], c.Interference, c.Similarity, FeatureExperiment.LayerType(c.Hook))).ToList();
            foreach (var (name, fit) in new (string, Func<IReadOnlyList<RegressionRow>, OlsFit>)[] { ("A", PaperModels.ModelA), ("B", PaperModels.ModelB) })
            {
                var usable = name == "B" ? rows.Where(r => r.Baseline != 0).ToList() : rows;
                try
                {
                    var f = fit(usable);
                    result.AddRange(f.Terms.Select(t => new RegressionTerm(name, metrics[m], t, f.N, f.RSquared)));
                }
                catch (PolyEngineException e) { notes.Add($"model {name} on {metrics[m].Name()}: not fitted ({e.Message})"); }
            }
        }
        return result;
    }
}

namespace PolyEngine.Interventions;

/// <summary>Per prompt and item (vector or neuron), one metric's baseline, its best value over the scales or factors and
/// where it was reached, and the change: Δ = best − baseline, relative Δ = Δ / |baseline| (NaN when the baseline is 0).
/// "Best" is the largest value, or the largest |value| for the correlations (as the authors' code compares them), by
/// <see cref="Stats.BestOfScale"/>: by default only the edits compete (<see cref="Stats.BestStart.None"/>); the authors'
/// feature loop starts its best at 0, their token loop at the baseline. <see cref="BestAmount"/> is NaN when the start won.</summary>
public sealed record SteerBest(int Prompt, int Item, SteerMetric Metric, double Baseline, double Best, float BestAmount, double Delta, double RelativeDelta);

/// <summary>A finished sweep: its rows (per prompt: the baseline, then each edit) and how long it ran.</summary>
public sealed record SteerResult(SteerPlan Plan, IReadOnlyList<SteerRow> Rows, double Seconds)
{
    public double InterventionsPerSecond => Plan.Interventions / Seconds;

    /// <summary>The best-of-scale table (<see cref="SteerBest"/>) of these rows.</summary>
    public IReadOnlyList<SteerBest> Best(Stats.BestStart start = Stats.BestStart.None) => Bests(Plan.Metrics, Rows, start);

    /// <summary>The best-of-scale table of <paramref name="rows"/> (whole prompts: each prompt's baseline and its edits).</summary>
    public static IReadOnlyList<SteerBest> Bests(IReadOnlyList<SteerMetric> metrics, IEnumerable<SteerRow> rows, Stats.BestStart start = Stats.BestStart.None)
    {
        var result = new List<SteerBest>();
        foreach (var prompt in rows.GroupBy(r => r.Prompt))
        {
            var baseline = prompt.FirstOrDefault(r => r.IsBaseline)
                ?? throw new InvalidOperationException($"prompt {prompt.Key} has no baseline row");
            foreach (var item in prompt.Where(r => !r.IsBaseline).GroupBy(r => r.Item))
            {
                var edits = item.ToList();
                for (int m = 0; m < metrics.Count; m++)
                {
                    double b = baseline.Metrics[m];
                    var best = Stats.BestOfScale.Of(edits.Select(r => r.Metrics[m]).ToList(), metrics[m].BestByMagnitude(), start, b);
                    double v = best.Value, delta = v - b;
                    result.Add(new SteerBest(prompt.Key, item.Key, metrics[m], b, v, best.Index < 0 ? float.NaN : edits[best.Index].Amount, delta,
                        b == 0 ? double.NaN : delta / Math.Abs(b)));
                }
            }
        }
        return result;
    }
}

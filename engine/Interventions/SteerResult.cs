namespace PolyEngine.Interventions;

/// <summary>Per prompt and item (vector or neuron), one metric's baseline, its best value over the scales or factors and
/// where it was reached, and the change: Δ = best − baseline, relative Δ = Δ / |baseline| (NaN when the baseline is 0).
/// "Best" is the largest value, or the largest |value| for the correlations (as the authors' code compares them); the
/// baseline is not a candidate (the authors' feature loop starts its best at 0).</summary>
public sealed record SteerBest(int Prompt, int Item, SteerMetric Metric, double Baseline, double Best, float BestAmount, double Delta, double RelativeDelta);

/// <summary>A finished sweep: its rows (per prompt: the baseline, then each edit) and how long it ran.</summary>
public sealed record SteerResult(SteerPlan Plan, IReadOnlyList<SteerRow> Rows, double Seconds)
{
    public double InterventionsPerSecond => Plan.Interventions / Seconds;

    /// <summary>The best-of-scale table (<see cref="SteerBest"/>) of these rows.</summary>
    public IReadOnlyList<SteerBest> Best() => Bests(Plan.Metrics, Rows);

    /// <summary>The best-of-scale table of <paramref name="rows"/> (whole prompts: each prompt's baseline and its edits).</summary>
    public static IReadOnlyList<SteerBest> Bests(IReadOnlyList<SteerMetric> metrics, IEnumerable<SteerRow> rows)
    {
        var result = new List<SteerBest>();
        foreach (var prompt in rows.GroupBy(r => r.Prompt))
        {
            var baseline = prompt.FirstOrDefault(r => r.IsBaseline)
                ?? throw new InvalidOperationException($"prompt {prompt.Key} has no baseline row");
            foreach (var item in prompt.Where(r => !r.IsBaseline).GroupBy(r => r.Item))
                for (int m = 0; m < metrics.Count; m++)
                {
                    bool magnitude = metrics[m].BestByMagnitude();
                    SteerRow? best = null;
                    foreach (var r in item)   // the first of equal values wins: deterministic
                        if (best is null || (magnitude ? Math.Abs(r.Metrics[m]) > Math.Abs(best.Metrics[m]) : r.Metrics[m] > best.Metrics[m]))
                            best = r;
                    double b = baseline.Metrics[m], v = best!.Metrics[m], delta = v - b;
                    result.Add(new SteerBest(prompt.Key, item.Key, metrics[m], b, v, best.Amount, delta, b == 0 ? double.NaN : delta / Math.Abs(b)));
                }
        }
        return result;
    }
}

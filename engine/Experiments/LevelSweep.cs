using PolyEngine.Interventions;
using PolyEngine.Stats;

namespace PolyEngine.Experiments;

/// <summary>One level of an experiment's target: its name (self, a bin, rand), the partner it comes from (−1: none), the
/// pair's interference and similarity, and its vectors (one for the feature locus; a feature's gradient vectors for the
/// token locus).</summary>
public sealed record Level(string Name, int Partner, double Interference, double Similarity, IReadOnlyList<float[]> Vectors);

/// <summary>A test prompt of a target: the token of T_f it tests, which of its sentences, and the steering prompt.</summary>
public sealed record TestPrompt(TopToken Token, int Sentence, SteerPrompt Prompt);

/// <summary>
/// The sweep behind every steering experiment: all (prompt, level vector, scale) of one target through one
/// <see cref="SteerSweep"/>, then per prompt and level, per metric, the best over the level's vectors × scales by
/// <see cref="BestOfScale"/> from the given start. Returns the cases and the interventions run (every edited forward row).
/// </summary>
public static class LevelSweep
{
    public static (List<FeatureCase> Cases, int Interventions) Run(Model model, SaeSample sample, SampleTarget target, IReadOnlyList<TestPrompt> prompts, IReadOnlyList<Level> levels,
        IReadOnlyList<float> scales, IReadOnlyList<SteerMetric> metrics, BestStart start, int rowsBudget)
    {
        var itemLevel = levels.SelectMany((l, i) => l.Vectors.Select(_ => i)).ToArray();
        var plan = new SteerPlan
        {
            Hook = sample.Hook, Prompts = [.. prompts.Select(p => p.Prompt)], Vectors = [.. levels.SelectMany(l => l.Vectors)], Scales = scales,
            Metrics = metrics, RowsBudget = rowsBudget,
        };
        var rows = SteerSweep.Collect(model, plan).Rows;
        int interventions = checked((int)plan.Interventions);
        var cases = new List<FeatureCase>();
        int m = metrics.Count;
        foreach (var byPrompt in rows.GroupBy(r => r.Prompt))
        {
            var baseline = byPrompt.First(r => r.IsBaseline);
            var edits = byPrompt.Where(r => !r.IsBaseline).ToList();
            var (token, sentence, _) = prompts[byPrompt.Key];
            for (int l = 0; l < levels.Count; l++)
            {
                var mine = edits.Where(r => itemLevel[r.Item] == l).ToList();
                if (mine.Count == 0) continue;
                var (b, best, scale, delta, rel) = (new double[m], new double[m], new float[m], new double[m], new double[m]);
                for (int k = 0; k < m; k++)
                {
                    b[k] = baseline.Metrics[k];
                    var pick = BestOfScale.Of(mine.Select(r => r.Metrics[k]).ToList(), metrics[k].BestByMagnitude(), start, b[k]);
                    best[k] = pick.Value;
                    scale[k] = pick.Index < 0 ? float.NaN : mine[pick.Index].Amount;
                    delta[k] = best[k] - b[k];
                    rel[k] = b[k] == 0 ? double.NaN : delta[k] / Math.Abs(b[k]);
                }
                var level = levels[l];
                cases.Add(new FeatureCase(sample.Name, sample.Hook, target.Tau, target.Feature, level.Name, level.Partner, level.Interference, level.Similarity,
                    token.Text, token.Id, sentence, b, best, scale, delta, rel));
            }
        }
        return (cases, interventions);
    }
}

using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Stats;

namespace PolyEngine.Experiments;

/// <summary>How <see cref="TokenExperiment"/> runs; the defaults follow the authors' code.</summary>
public sealed record TokenExperimentOptions
{
    /// <summary>n_top_tokens: T_f's tokens tested per target, and gradient vectors per feature.</summary>
    public int TopTokens { get; init; } = 5;
    public double Ratio { get; init; } = 0.5;
    public int SentencesPerToken { get; init; } = 3;
    public IReadOnlyList<float> Scales { get; init; } = SteerGrids.PaperScales;
    public IReadOnlyList<SteerMetric> Metrics { get; init; } = [SteerMetric.WeightedCosine, SteerMetric.Overlap, SteerMetric.Spearman, SteerMetric.Kendall];
    /// <summary>The code's token loop starts its best at the baseline.</summary>
    public BestStart Start { get; init; } = BestStart.Baseline;
    public ulong Seed { get; init; } = 50;
    public GradientRecipe Recipe { get; init; } = GradientRecipe.TransformerLens;
    /// <summary>The TL recipe's position threshold (0.8 in the code).</summary>
    public float GradientRatio { get; init; } = 0.8f;
    public int RowsBudget { get; init; } = SteerPlan.DefaultRowsBudget;
}

/// <summary>
/// The paper's token-locus experiment (Fig. 4) as the authors' code runs it: only attention- and MLP-output SAEs (the code
/// filters out the others). Each feature's gradient vectors come from its activation records: for each of its top tokens,
/// the record where that token is strongest, through <see cref="GradientVectors"/> at the SAE's hook (the TL recipe by
/// default). Per target and test token: <c>self</c> is the target's vector for that token; each bin pools every vector of
/// every sampled partner in it (the case's partner is the bin's first, its interference and similarity the partners'
/// means); <c>rand</c> is a seeded Gaussian. The best is over the level's vectors × scales, starting at the baseline.
/// </summary>
public static class TokenExperiment
{
    /// <summary>Every target through <see cref="ExperimentDriver"/>. Counts: targets_run, targets_at_other_sites,
    /// targets_without_records, targets_without_tokens, targets_without_cases (no test sentence, or no vector),
    /// tokens_without_sentences, target_vectors, partners_without_vectors (per target that samples them), interventions.</summary>
    public static ExperimentResult Run(Model model, IReadOnlyList<SaeSample> samples, string recordsPath, IReadOnlyDictionary<string, string[]> sentences,
        TokenExperimentOptions o, Action<int, int>? progress = null, Scans.ScanCheckpoint? checkpoint = null,
        IReadOnlyList<(SaeSample, SampleTarget)>? work = null, CancellationToken cancel = default) =>
        ExperimentDriver.Run(work ?? ExperimentDriver.Work(samples), Target(model, recordsPath, sentences, o), checkpoint, progress, cancel: cancel);

    /// <summary>One target's cases (each feature's gradient vectors made once per run).</summary>
    public static Func<SaeSample, SampleTarget, TargetOutcome> Target(Model model, string recordsPath, IReadOnlyDictionary<string, string[]> sentences, TokenExperimentOptions o)
    {
        if (o.TopTokens < 1 || o.SentencesPerToken < 1) throw new PolyEngineException("--top-tokens and --sentences-per-token must be positive");
        var cache = new Dictionary<(string, int), Dictionary<string, float[]>?>();
        var checkedSaes = new HashSet<string>();
        return (sample, target) =>
        {
            if (sample.Hook.Point is not (HookPoint.AttnOut or HookPoint.MlpOut)) return FeatureExperiment.Counted("targets_at_other_sites");
            if (checkedSaes.Add(sample.Name)) FeatureExperiment.CheckedConfig(model, sample);
            var counts = new Dictionary<string, int>();
            void Count(string what, int n = 1) => counts[what] = counts.GetValueOrDefault(what) + n;
            // Vectors are made once per feature and run; what a target counts depends on the target alone, so shards and
            // resumed runs add up to the same counts as one uninterrupted run.
            Dictionary<string, float[]>? VectorsOf(int feature)
            {
                if (cache.TryGetValue((sample.Name, feature), out var v)) return v;
                var records = ExperimentInputs.Records(recordsPath, sample.Name, feature);
                return cache[(sample.Name, feature)] = records is null ? null : Vectors(model, records, sample.Hook, o);
            }
            var records = ExperimentInputs.Records(recordsPath, sample.Name, target.Feature);
            if (records is null) return FeatureExperiment.Counted("targets_without_records");
            var tokens = TopTokens.Of(records, model, 5, o.Ratio).Take(o.TopTokens).ToList();
            if (tokens.Count == 0) return FeatureExperiment.Counted("targets_without_tokens");
            var own = VectorsOf(target.Feature)!;
            Count("target_vectors", own.Count);
            var bins = new List<Level>();
            for (int b = 0; b < target.Bins.Count; b++)
            {
                var partners = target.Bins[b].Where(p => VectorsOf(p.Feature) is { Count: > 0 }).ToList();
                Count("partners_without_vectors", target.Bins[b].Count - partners.Count);
                if (partners.Count == 0) continue;
                bins.Add(new(Scans.InterferenceBins.Keys[b], partners[0].Feature, partners.Average(p => p.Interference), partners.Average(p => p.Similarity),
                    [.. partners.SelectMany(p => VectorsOf(p.Feature)!.Values)]));
            }
            var random = new Level(FeatureExperiment.Random, -1, double.NaN, double.NaN, [FeatureExperiment.RandomVector(o.Seed, sample.Name, target.Feature, sample.Hook.WidthFor(model.Spec))]);
            int noSentences = 0;
            var testPrompts = FeatureExperiment.Prompts(model, tokens, sentences, o.SentencesPerToken, ref noSentences);
            counts["tokens_without_sentences"] = noSentences;
            var cases = new List<FeatureCase>();
            foreach (var token in tokens)
            {
                var prompts = testPrompts.Where(p => p.Token == token).ToList();
                if (prompts.Count == 0) continue;
                var levels = new List<Level>();
                if (own.TryGetValue(token.Text, out var self)) levels.Add(new(FeatureExperiment.Self, target.Feature, 1, 1, [self]));
                levels.AddRange(bins);
                levels.Add(random);
                var (mine, interventions) = LevelSweep.Run(model, sample, target, prompts, levels, o.Scales, o.Metrics, o.Start, o.RowsBudget);
                cases.AddRange(mine);
                Count("interventions", interventions);
            }
            Count(cases.Count > 0 ? "targets_run" : "targets_without_cases");
            return new(cases, counts);
        };
    }

    /// <summary>A feature's gradient vectors, one per top token: from the record where that token is strongest, by the
    /// recipe (the TL one takes that record's positions ≥ 0.8 of the record's max), as the authors' code does — so two top
    /// tokens strongest in the same record get the same vector.</summary>
    static Dictionary<string, float[]> Vectors(Model model, IReadOnlyList<ActivationRecord> records, HookName hook, TokenExperimentOptions o)
    {
        var tokens = TopTokens.Of(records, model, 5, o.Ratio).Take(o.TopTokens).ToList();
        var chosen = tokens.Select(t => records.MaxBy(r => r.Tokens.Select((s, i) => s == t.Text && double.IsFinite(r.Values[i]) ? r.Values[i] : double.NegativeInfinity).Max())!).ToList();
        var vectors = GradientVectors.FromRecords(model, chosen, hook, new GradientVectorOptions { Recipe = o.Recipe, Ratio = o.GradientRatio });
        var result = new Dictionary<string, float[]>();
        for (int i = 0; i < tokens.Count; i++)
            if (vectors[i].Vector is { } v) result[tokens[i].Text] = v;
        return result;
    }
}

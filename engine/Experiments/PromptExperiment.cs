using PolyEngine.Formats;
using PolyEngine.Interventions;

namespace PolyEngine.Experiments;

/// <summary>How <see cref="PromptExperiment"/> runs.</summary>
public sealed record PromptExperimentOptions
{
    public int TopTokens { get; init; } = 5;
    public double Ratio { get; init; } = 0.5;
    public int SentencesPerToken { get; init; } = 3;
    public int Partners { get; init; } = 1;
    /// <summary>The snippet: this many tokens either side of the record's strongest token.</summary>
    public int Window { get; init; } = 5;
    public IReadOnlyList<SteerMetric> Metrics { get; init; } = [SteerMetric.WeightedCosine, SteerMetric.Overlap, SteerMetric.Spearman, SteerMetric.Kendall];
}

/// <summary>
/// The paper's feature-level prompt injection (Fig. 5), made deterministic where the authors' was not (their snippets
/// were hand-tuned and the code is not released): a feature's snippet is its strongest record's tokens within ±window of
/// the strongest one, joined and wrapped in <c>**</c> (App. K.2), and prepended to the test sentence with a space. Levels:
/// <c>self</c> (the target's own snippet) and the first sampled partner of each bin; the 0.0–0.1 bin is the random
/// baseline, as in the paper. Each case compares the injected prompt's metrics with the plain sentence's — one value per
/// level, no scales.
/// </summary>
public static class PromptExperiment
{
    /// <summary>The snippet of a feature's records, or null when they hold no finite activation.</summary>
    public static string? Snippet(IReadOnlyList<ActivationRecord> records, int window)
    {
        var best = records.Where(r => r.Values.Any(float.IsFinite)).MaxBy(r => r.Values.Where(float.IsFinite).Max());
        if (best is null) return null;
        int at = best.MaxValueTokenIndex;
        int from = Math.Max(0, at - window), to = Math.Min(best.Tokens.Length, at + window + 1);
        return "**" + string.Concat(best.Tokens[from..to]).Trim() + "**";
    }

    public static ExperimentResult Run(Model model, IReadOnlyList<SaeSample> samples, string recordsPath, IReadOnlyDictionary<string, string[]> sentences,
        PromptExperimentOptions o, Action<int, int>? progress = null, Scans.ScanCheckpoint? checkpoint = null,
        IReadOnlyList<(SaeSample, SampleTarget)>? work = null, CancellationToken cancel = default) =>
        ExperimentDriver.Run(work ?? ExperimentDriver.Work(samples), Target(model, recordsPath, sentences, o), checkpoint, progress, cancel: cancel);

    public static Func<SaeSample, SampleTarget, TargetOutcome> Target(Model model, string recordsPath, IReadOnlyDictionary<string, string[]> sentences, PromptExperimentOptions o)
    {
        if (o.TopTokens < 1 || o.SentencesPerToken < 1 || o.Partners < 1 || o.Window < 0)
            throw new PolyEngineException("--top-tokens, --sentences-per-token and --partners must be positive, --window not negative");
        return (sample, target) =>
        {
            var records = ExperimentInputs.Records(recordsPath, sample.Name, target.Feature);
            if (records is null) return FeatureExperiment.Counted("targets_without_records");
            var tokens = TopTokens.Of(records, model, 5, o.Ratio).Take(o.TopTokens).ToList();
            if (tokens.Count == 0) return FeatureExperiment.Counted("targets_without_tokens");
            int noSentences = 0;
            var tests = FeatureExperiment.Prompts(model, tokens, sentences, o.SentencesPerToken, ref noSentences);
            var counts = new Dictionary<string, int> { ["tokens_without_sentences"] = noSentences };
            var levels = new List<(string Name, int Partner, double Interference, double Similarity, string Snippet)>();
            if (Snippet(records, o.Window) is { } own) levels.Add((FeatureExperiment.Self, target.Feature, 1, 1, own));
            for (int b = 0; b < target.Bins.Count; b++)
                foreach (var p in target.Bins[b].Take(o.Partners))
                {
                    var theirs = ExperimentInputs.Records(recordsPath, sample.Name, p.Feature);
                    if (theirs is not null && Snippet(theirs, o.Window) is { } snippet) levels.Add((Scans.InterferenceBins.Keys[b], p.Feature, p.Interference, p.Similarity, snippet));
                    else counts["partners_without_records"] = counts.GetValueOrDefault("partners_without_records") + 1;
                }
            if (tests.Count == 0 || levels.Count == 0) return new([], counts);
            // Row t·(levels + 1): test t's plain sentence, then its injected prompts, one per level.
            var prompts = new List<SteerPrompt>();
            foreach (var t in tests)
            {
                prompts.Add(t.Prompt);
                string sentence = sentences[t.Token.Text][t.Sentence];
                foreach (var l in levels) prompts.Add(t.Prompt with { Ids = model.Encode(l.Snippet + " " + sentence, prependBos: false) });
            }
            var rows = SteerSweep.Baselines(model, prompts, o.Metrics);
            int m = o.Metrics.Count, stride = levels.Count + 1;
            var cases = new List<FeatureCase>();
            for (int i = 0; i < tests.Count; i++)
            {
                var plain = rows[i * stride].Metrics;
                for (int l = 0; l < levels.Count; l++)
                {
                    var injected = rows[i * stride + 1 + l].Metrics;
                    var delta = Enumerable.Range(0, m).Select(k => injected[k] - plain[k]).ToArray();
                    cases.Add(new FeatureCase(sample.Name, sample.Hook, target.Tau, target.Feature, levels[l].Name, levels[l].Partner, levels[l].Interference,
                        levels[l].Similarity, tests[i].Token.Text, tests[i].Token.Id, tests[i].Sentence, [.. plain], [.. injected], [.. Enumerable.Repeat(float.NaN, m)],
                        delta, [.. Enumerable.Range(0, m).Select(k => plain[k] == 0 ? double.NaN : delta[k] / Math.Abs(plain[k]))]));
                }
            }
            counts["targets_run"] = 1;
            counts["interventions"] = tests.Count * levels.Count;   // the injected prompts
            return new(cases, counts);
        };
    }
}

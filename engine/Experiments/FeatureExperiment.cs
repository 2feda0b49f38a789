using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Stats;

namespace PolyEngine.Experiments;

/// <summary>How <see cref="FeatureExperiment"/> runs; the defaults follow the authors' code.</summary>
public sealed record FeatureExperimentOptions
{
    /// <summary>T_f: the first n of <c>get_unique_top_act_tokens(5, 0.5)</c> (the code; the paper says r = 0.8).</summary>
    public int TopTokens { get; init; } = 5;
    public double Ratio { get; init; } = 0.5;
    public int SentencesPerToken { get; init; } = 3;
    /// <summary>Partners per bin (the code uses the first sampled one).</summary>
    public int Partners { get; init; } = 1;
    public IReadOnlyList<float> Scales { get; init; } = SteerGrids.PaperScales;
    public IReadOnlyList<SteerMetric> Metrics { get; init; } = [SteerMetric.WeightedCosine, SteerMetric.Overlap, SteerMetric.Spearman, SteerMetric.Kendall];
    /// <summary>The code's feature loop starts its best at 0.</summary>
    public BestStart Start { get; init; } = BestStart.Zero;
    /// <summary>The random level's vector: one Gaussian unit vector per target, from (seed, SAE, target).</summary>
    public ulong Seed { get; init; } = 50;
    /// <summary>App. O's denoising pre-filter: drop targets whose own direction improves the first metric's mean relative
    /// change by less than this (null: off).</summary>
    public double? Denoise { get; init; }
    public int RowsBudget { get; init; } = SteerPlan.DefaultRowsBudget;
}

/// <summary>One test case: a (SAE, target, level, partner, token, sentence) with, per metric, the baseline, the best over the
/// scales, where it was reached, and the change.</summary>
public sealed record FeatureCase(string Sae, HookName Hook, double Tau, int Target, string Level, int Partner, double Interference, double Similarity,
    string Token, int TokenId, int Sentence, double[] Baseline, double[] Best, float[] BestScale, double[] Delta, double[] Relative);

/// <summary>
/// The paper's feature-locus experiment (Fig. 3) as the authors' code runs it: per sampled target f of an SAE, its token set
/// T_f from its activation records, the first sentences of each token, and the levels <c>self</c> (f's unit decoder
/// row), the first sampled partner of each interference bin (its decoder row) and <c>rand</c> (a seeded Gaussian unit
/// vector), each added at the SAE's hook over the scale grid; per metric the best over the scales (starting at 0 as the
/// code does), the change and the relative change. Prompts are the sentences without BOS; the metrics' targets are T_f,
/// the token under test first (the correlations rank against it). Each target is one steering sweep
/// (<see cref="SteerSweep"/>).
/// </summary>
public static class FeatureExperiment
{
    public const string Self = "self", Random = "rand";

    /// <summary>Every target of <paramref name="samples"/> (or <paramref name="work"/>, a shard of them) through
    /// <see cref="ExperimentDriver"/>. Counts: targets_run, targets_without_records, targets_without_tokens,
    /// tokens_without_sentences, targets_denoised, interventions (the edited forward rows).</summary>
    public static ExperimentResult Run(Model model, IReadOnlyList<SaeSample> samples, string recordsPath, IReadOnlyDictionary<string, string[]> sentences,
        FeatureExperimentOptions o, Action<int, int>? progress = null, Scans.ScanCheckpoint? checkpoint = null,
        IReadOnlyList<(SaeSample, SampleTarget)>? work = null, CancellationToken cancel = default) =>
        ExperimentDriver.Run(work ?? ExperimentDriver.Work(samples), Target(model, recordsPath, sentences, o), checkpoint, progress, cancel: cancel);

    /// <summary>One target's cases (the decoder of each SAE read once).</summary>
    public static Func<SaeSample, SampleTarget, TargetOutcome> Target(Model model, string recordsPath, IReadOnlyDictionary<string, string[]> sentences, FeatureExperimentOptions o)
    {
        if (o.TopTokens < 1 || o.SentencesPerToken < 1 || o.Partners < 1) throw new PolyEngineException("--top-tokens, --sentences-per-token and --partners must be positive");
        if (o.Denoise is double dn && !(dn >= 0)) throw new PolyEngineException($"--denoise {dn}: give a non-negative threshold");
        var decoders = new Dictionary<string, (float[] Decoder, int DIn)>();
        return (sample, target) =>
        {
            if (!decoders.TryGetValue(sample.Name, out var dec))
                decoders[sample.Name] = dec = (SparseAutoencoder.ReadDecoder(CheckedConfig(model, sample)), sample.Hook.WidthFor(model.Spec));
            float[] Row(int f) => dec.Decoder.AsSpan(f * dec.DIn, dec.DIn).ToArray();
            var records = ExperimentInputs.Records(recordsPath, sample.Name, target.Feature);
            if (records is null) return Counted("targets_without_records");
            var tokens = TopTokens.Of(records, model, 5, o.Ratio).Take(o.TopTokens).ToList();
            if (tokens.Count == 0) return Counted("targets_without_tokens");
            int noSentences = 0;
            var prompts = Prompts(model, tokens, sentences, o.SentencesPerToken, ref noSentences);
            if (prompts.Count == 0) return new([], new Dictionary<string, int> { ["tokens_without_sentences"] = noSentences });
            // The levels: self, the partners of each bin, rand.
            var levels = new List<Level> { new(Self, target.Feature, 1, 1, [Row(target.Feature)]) };
            for (int b = 0; b < target.Bins.Count; b++)
                foreach (var p in target.Bins[b].Take(o.Partners))
                    levels.Add(new(Scans.InterferenceBins.Keys[b], p.Feature, p.Interference, p.Similarity, [Row(p.Feature)]));
            levels.Add(new(Random, -1, double.NaN, double.NaN, [RandomVector(o.Seed, sample.Name, target.Feature, dec.DIn)]));
            var (mine, interventions) = LevelSweep.Run(model, sample, target, prompts, levels, o.Scales, o.Metrics, o.Start, o.RowsBudget);
            if (o.Denoise is double threshold)
            {
                var own = mine.Where(c => c.Level == Self).Select(c => c.Relative[0]).Where(double.IsFinite).ToList();
                if (own.Count == 0 || own.Average() < threshold)
                    return new([], new Dictionary<string, int> { ["targets_denoised"] = 1, ["tokens_without_sentences"] = noSentences, ["interventions"] = interventions });
            }
            return new(mine, new Dictionary<string, int> { ["targets_run"] = 1, ["tokens_without_sentences"] = noSentences, ["interventions"] = interventions });
        };
    }

    internal static TargetOutcome Counted(string what) => new([], new Dictionary<string, int> { [what] = 1 });

    /// <summary>The SAE of a sample, checked against the model and against what the sample says it is.</summary>
    internal static SaeConfig CheckedConfig(Model model, SaeSample sample)
    {
        var config = SaeConfig.Load(sample.Folder);
        config.CheckAgainst(model.Spec);
        if (config.Hook != sample.Hook || config.DSae != sample.DSae)
            throw new PolyEngineException($"--sample: SAE '{sample.Name}' was sampled at {sample.Hook} with d_sae {sample.DSae}, but {sample.Folder} is at {config.Hook} with {config.DSae}; is the sample for another SAE?");
        return config;
    }

    /// <summary>The test prompts of T_f: each token's first sentences, without BOS; the metrics' targets are T_f with the
    /// token under test first. Tokens without sentences are counted in <paramref name="withoutSentences"/>.</summary>
    internal static List<TestPrompt> Prompts(Model model, IReadOnlyList<TopToken> tokens, IReadOnlyDictionary<string, string[]> sentences, int perToken, ref int withoutSentences)
    {
        var prompts = new List<TestPrompt>();
        int[] ids = [.. tokens.Select(t => t.Id)];
        foreach (var t in tokens)
        {
            if (!sentences.TryGetValue(t.Text, out var list) || list.Length == 0) { withoutSentences++; continue; }
            for (int s = 0; s < Math.Min(perToken, list.Length); s++)
                prompts.Add(new TestPrompt(t, s, new SteerPrompt(model.Encode(list[s], prependBos: false), [t.Id, .. ids.Where(x => x != t.Id)])));
        }
        return prompts;
    }

    /// <summary>The random level's Gaussian vector of a target, from (seed, SAE, target).</summary>
    internal static float[] RandomVector(ulong seed, string sae, int target, int width)
    {
        uint h = 2166136261;
        foreach (char c in sae) h = (h ^ c) * 16777619;
        return new Rng(seed ^ (ulong)target * 0x9E3779B97F4A7C15UL ^ h).Normals([width], 1f);
    }

    /// <summary>The layer type of a hook, as the paper's regressions name it (att, mlp, res_pre, res_mid, res_post, …).</summary>
    public static string LayerType(HookName hook) => hook.Point switch
    {
        HookPoint.AttnOut => "att",
        HookPoint.MlpOut => "mlp",
        HookPoint.ResidPre => "res_pre",
        HookPoint.ResidMid => "res_mid",
        HookPoint.ResidPost => "res_post",
        _ => hook.Point.ToString().ToLowerInvariant(),
    };
}

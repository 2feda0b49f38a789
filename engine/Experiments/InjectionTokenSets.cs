using PolyEngine.Formats;
using PolyEngine.Interventions;

namespace PolyEngine.Experiments;

/// <summary>The thresholds of <see cref="InjectionTokenSets.Build"/> (the authors': r = 0.8, top-100 unique tokens,
/// I &gt; 0.2, S &lt; 0.3, 10 tokens per feature; high from max I ≥ 0.5).</summary>
public sealed record TokenSetOptions
{
    public double Ratio { get; init; } = 0.8;
    public int TopUnique { get; init; } = 100;
    public double InterferenceMin { get; init; } = 0.2;
    public double SimilarityMax { get; init; } = 0.3;
    public double High { get; init; } = 0.5;
    public int TokensPerFeature { get; init; } = 10;

    public void Validate()
    {
        foreach (var (name, v) in new[] { ("--set-ratio", Ratio), ("--set-interference", InterferenceMin), ("--set-similarity", SimilarityMax), ("--set-high", High) })
            if (!(v > 0 && v < 1 || name == "--set-ratio" && v == 1)) throw new PolyEngineException($"{name} {v}: give a threshold in (0, 1)");
        if (High <= InterferenceMin) throw new PolyEngineException($"--set-high {High} must be above --set-interference {InterferenceMin} (medium is between them)");
        if (TopUnique < 1 || TokensPerFeature < 1) throw new PolyEngineException("--set-top-unique and --set-tokens must be positive");
    }
}

/// <summary>One SAE's inputs to the token sets: its decoder [d_sae, d_in], its explanation embeddings, and its features'
/// activation records.</summary>
public sealed record TokenSetSae(string Name, float[] Decoder, int DIn, Explanations Explanations, IReadOnlyDictionary<int, List<ActivationRecord>> Records);

/// <summary>
/// The token sets of a type built from PolyEngine's own outputs, as the authors' <c>get_target_type_and_interference_feature_tokens</c>
/// and their notebook do (docs/METHOD.md §5.3):
/// <list type="number">
/// <item>target features: those whose top-100 unique tokens at r = 0.8 include a token of the type;</item>
/// <item>interference features: features with decoder cosine I &gt; 0.2 and explanation similarity S &lt; 0.3 to some target
/// feature of the same SAE, none of whose own top-100 unique tokens at r = 0.8 is of the type; each keeps its
/// high-activation tokens (unique tokens ≥ 0.8·its max, strongest first) and its largest I;</item>
/// <item>high: the first 10 high-activation tokens of the features with max I ≥ the high threshold; medium: of those with
/// 0.2 &lt; max I below it; tokens in both are removed from both; target: every vocabulary token of the type; random: every
/// non-blank vocabulary string not in target, high or medium (taken before that removal).</item>
/// </list>
/// Tokens are strings, as the authors' union files hold them.
/// </summary>
public static class InjectionTokenSets
{
    public static Dictionary<InjectionCategory, string[]> Build(Model model, string type, IReadOnlyDictionary<int, string> typeOfId, IReadOnlyList<TokenSetSae> saes,
        TokenSetOptions o, Dictionary<string, int> counts)
    {
        o.Validate();
        bool OfType(int id) => typeOfId.TryGetValue(id, out var t) && t == type;
        var highTokens = new List<string>();
        var mediumTokens = new List<string>();
        foreach (var sae in saes)
        {
            int dSae = sae.Decoder.Length / sae.DIn;
            var top = new Dictionary<int, IReadOnlyList<TopToken>>();
            IReadOnlyList<TopToken> TopOf(int f) => top.TryGetValue(f, out var t) ? t
                : top[f] = sae.Records.TryGetValue(f, out var r) ? TopTokens.Of(r, model, o.TopUnique, o.Ratio) : [];
            var targets = sae.Records.Keys.Where(f => TopOf(f).Any(t => OfType(t.Id))).Order().ToList();
            counts[$"{sae.Name}:{type}:target_features"] = targets.Count;
            var unit = Normalized(sae.Decoder, dSae, sae.DIn);
            var emb = new float[sae.Explanations.Dim];
            var embT = new float[sae.Explanations.Dim];
            int interfering = 0;
            foreach (int j in sae.Records.Keys.Order())
            {
                if (targets.Contains(j) || TopOf(j).Any(t => OfType(t.Id)) || !sae.Explanations.UnitMean(j, emb)) continue;
                double maxI = double.NegativeInfinity;
                foreach (int t in targets)
                {
                    if (!sae.Explanations.UnitMean(t, embT)) continue;
                    double i = System.Numerics.Tensors.TensorPrimitives.Dot(unit.AsSpan(j * sae.DIn, sae.DIn), unit.AsSpan(t * sae.DIn, sae.DIn));
                    double s = System.Numerics.Tensors.TensorPrimitives.Dot(emb, embT);
                    if (i > o.InterferenceMin && s < o.SimilarityMax) maxI = Math.Max(maxI, i);
                }
                if (double.IsNegativeInfinity(maxI)) continue;
                interfering++;
                var tokens = TopTokens.Of(sae.Records[j], model, int.MaxValue, o.Ratio).Select(t => t.Text).Take(o.TokensPerFeature);
                (maxI >= o.High ? highTokens : mediumTokens).AddRange(tokens);
            }
            counts[$"{sae.Name}:{type}:interference_features"] = interfering;
        }
        var vocab = Enumerable.Range(0, model.Spec.DVocab).Select(id => (Id: id, Text: model.Tokenizer.Decode([id]))).ToList();
        var target = vocab.Where(v => OfType(v.Id)).Select(v => v.Text).Distinct().ToArray();
        var taken = target.Concat(highTokens).Concat(mediumTokens).ToHashSet();
        var random = vocab.Select(v => v.Text).Where(t => !string.IsNullOrWhiteSpace(t) && !taken.Contains(t)).Distinct().ToArray();
        var both = highTokens.Intersect(mediumTokens).ToHashSet();
        return new()
        {
            [InjectionCategory.Target] = target,
            [InjectionCategory.High] = [.. highTokens.Where(t => !both.Contains(t)).Distinct()],
            [InjectionCategory.Medium] = [.. mediumTokens.Where(t => !both.Contains(t)).Distinct()],
            [InjectionCategory.Random] = random,
        };
    }

    static float[] Normalized(float[] decoder, int rows, int width)
    {
        var unit = (float[])decoder.Clone();
        for (int r = 0; r < rows; r++)
        {
            var row = unit.AsSpan(r * width, width);
            float n = System.Numerics.Tensors.TensorPrimitives.Norm(row);
            if (n > 0) System.Numerics.Tensors.TensorPrimitives.Divide(row, n, row);
        }
        return unit;
    }
}

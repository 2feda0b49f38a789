using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Stats;

namespace PolyEngine.Experiments;

/// <summary>How <see cref="NeuronExperiment"/> runs; the defaults follow the authors' code.</summary>
public sealed record NeuronExperimentOptions
{
    /// <summary>Each feature's alignments: its top <c>AlignTop</c> coordinates of the unit decoder row, kept above <c>AlignMin</c>.</summary>
    public int AlignTop { get; init; } = 3;
    public double AlignMin { get; init; } = 0.2;
    public double ClusterCutoff { get; init; } = 0.4;
    public ClusterMethod Clusters { get; init; } = ClusterMethod.AverageLinkage;
    public int ClustersPerNeuron { get; init; } = 3;
    public int FeaturesPerCluster { get; init; } = 3;
    /// <summary>Test tokens: the tokens nearest the feature's max-activation token by input-embedding cosine (itself first).</summary>
    public int SimilarTokens { get; init; } = 5;
    public int SentencesPerToken { get; init; } = 3;
    /// <summary>The weighted cosine runs over the top-k predictions (10 in the code).</summary>
    public int Top { get; init; } = 10;
    public IReadOnlyList<float> Factors { get; init; } = SteerGrids.NeuronPaperFactors;
    public ulong Seed { get; init; } = 50;
    public int RowsBudget { get; init; } = SteerPlan.DefaultRowsBudget;
}

/// <summary>The neuron experiment's degree buckets (the code's).</summary>
public static class DegreeBuckets
{
    public static readonly (int Low, int High, string Name)[] All =
        [(1, 1, "1"), (2, 5, "2-5"), (6, 20, "6-20"), (21, 50, "21-50"), (51, 100, "51-100"), (101, 200, "101-200"), (201, 500, "201-500"), (501, int.MaxValue, "501+")];

    /// <summary>The bucket of a degree (−1 for degree 0: no cluster connects to the neuron).</summary>
    public static int Of(int degree) => Array.FindIndex(All, b => degree >= b.Low && degree <= b.High);
}

/// <summary>One measured unit: a sampled neuron (its bucket and degree), one of its clusters and one feature of it.</summary>
public sealed record NeuronUnit(string Bucket, int Neuron, int Degree, int Cluster, int Feature);

/// <summary>What <see cref="NeuronExperiment.Plan"/> decided: the SAE's hook, every coordinate's connectivity, the units to
/// measure, and the counts of the clustering (features clustered, clusters, empty buckets).</summary>
public sealed record NeuronPlan(HookName Hook, NeuronConnectivity[] Connectivity, IReadOnlyList<NeuronUnit> Units, Dictionary<string, int> Counts);

/// <summary>A neuron's connectivity: the clusters its aligned features belong to, and those features per cluster.</summary>
public sealed record NeuronConnectivity(int Neuron, int Degree, IReadOnlyDictionary<int, List<int>> FeaturesByCluster);

/// <summary>One (neuron, feature, sentence) case: the top-k weighted cosine without the edit, and for masking (factor &lt; 1)
/// and amplifying (factor &gt; 1) the largest drop and increase, absolute and in percent of the baseline (percent only when
/// the baseline is positive, as the code).</summary>
public sealed record NeuronCase(string Sae, HookName Hook, string Bucket, int Neuron, int Degree, int Cluster, int Feature, string Token, int TokenId, int Sentence,
    double Baseline, NeuronChange Mask, NeuronChange Amplify);

public sealed record NeuronChange(double MaxAbsDrop, double MaxPercentDrop, double MaxAbsIncrease, double MaxPercentIncrease);

/// <summary>
/// The paper's neuron experiment (Fig. 6). A "neuron" is a coordinate of the SAE's input space. Each feature aligns with the
/// top coordinates of its unit decoder row (value &gt; 0.2); features are clustered by their explanation embeddings
/// (average linkage on cosine distance, cut at 0.4, or the pairwise threshold); a neuron's polysemanticity degree is the
/// number of distinct clusters aligned with it. Per degree bucket one seeded neuron, up to 3 of its clusters and up to 3
/// features per cluster; per feature the test tokens are the 5 nearest its max-activation token by input-embedding cosine
/// and the test sentences that token's; the neuron is scaled by each factor at every position, and the weighted cosine
/// over the top-10 predictions is tracked.
/// </summary>
public static class NeuronExperiment
{
    /// <summary>Each neuron's connectivity, from the decoder [d_sae, d_in] and each feature's cluster (−1: unclustered).</summary>
    public static NeuronConnectivity[] Connectivity(float[] decoder, int dSae, int dIn, int[] clusterOf, NeuronExperimentOptions o)
    {
        var byNeuron = Enumerable.Range(0, dIn).Select(_ => new Dictionary<int, List<int>>()).ToArray();
        var row = new float[dIn];
        for (int f = 0; f < dSae; f++)
        {
            if (clusterOf[f] < 0) continue;
            decoder.AsSpan(f * dIn, dIn).CopyTo(row);
            double norm = Math.Sqrt(row.Sum(x => (double)x * x));
            if (norm == 0) continue;
            foreach (int i in Enumerable.Range(0, dIn).OrderByDescending(i => row[i]).ThenBy(i => i).Take(o.AlignTop))
            {
                if (!(row[i] / norm > o.AlignMin)) continue;
                if (!byNeuron[i].TryGetValue(clusterOf[f], out var list)) byNeuron[i][clusterOf[f]] = list = [];
                list.Add(f);
            }
        }
        return [.. byNeuron.Select((c, i) => new NeuronConnectivity(i, c.Count, c))];
    }

    /// <summary>Clusters the features, connects the neurons and draws the units (per degree bucket one neuron, its clusters
    /// and their features) — everything before the measurements, deterministic from the seed.</summary>
    public static NeuronPlan Plan(Model model, string sae, Explanations explanations, NeuronExperimentOptions o)
    {
        if (o.AlignTop < 1 || o.ClustersPerNeuron < 1 || o.FeaturesPerCluster < 1 || o.SimilarTokens < 1 || o.SentencesPerToken < 1 || o.Top < 1)
            throw new PolyEngineException("--align-top, --clusters-per-neuron, --features-per-cluster, --similar, --sentences-per-token and --top must be positive");
        if (!(o.ClusterCutoff > 0 && o.ClusterCutoff < 2)) throw new PolyEngineException($"--cluster-cutoff {o.ClusterCutoff}: give a cosine distance in (0, 2)");
        if (!(o.AlignMin >= 0 && o.AlignMin < 1)) throw new PolyEngineException($"--align-min {o.AlignMin}: give a value in [0, 1) (a unit row's coordinates are at most 1)");
        var config = SaeConfig.Load(sae);
        config.CheckAgainst(model.Spec);
        if (explanations.Features != config.DSae) throw new PolyEngineException($"--explanations: read for {explanations.Features} features, but the SAE has {config.DSae}");
        int dIn = config.DIn, dSae = config.DSae;
        var decoder = SparseAutoencoder.ReadDecoder(config);
        // Cluster the features that have an explanation embedding.
        var counts = new Dictionary<string, int>();
        var unit = new float[(long)dSae * explanations.Dim];
        var kept = new List<int>();
        for (int f = 0; f < dSae; f++)
            if (explanations.Has(f) && explanations.UnitMean(f, unit.AsSpan(kept.Count * explanations.Dim, explanations.Dim))) kept.Add(f);
        counts["features_clustered"] = kept.Count;
        counts["features_without_explanations"] = dSae - kept.Count;
        var labels = Clustering.Cluster(unit.AsSpan(0, kept.Count * explanations.Dim).ToArray(), kept.Count, explanations.Dim, o.ClusterCutoff, o.Clusters);
        var clusterOf = Enumerable.Repeat(-1, dSae).ToArray();
        for (int k = 0; k < kept.Count; k++) clusterOf[kept[k]] = labels[k];
        counts["clusters"] = labels.Length == 0 ? 0 : labels.Max() + 1;
        var connectivity = Connectivity(decoder, dSae, dIn, clusterOf, o);
        var units = new List<NeuronUnit>();
        var rng = new Rng(o.Seed);
        int Pick(int n) => (int)(rng.NextU64() % (ulong)n);
        for (int b = 0; b < DegreeBuckets.All.Length; b++)
        {
            var inBucket = connectivity.Where(c => DegreeBuckets.Of(c.Degree) == b).ToList();
            if (inBucket.Count == 0) { counts["empty_buckets"] = counts.GetValueOrDefault("empty_buckets") + 1; continue; }
            var neuron = inBucket[Pick(inBucket.Count)];
            var clusters = neuron.FeaturesByCluster.Keys.Order().ToList();
            Shuffle(clusters, Pick);
            foreach (int cluster in clusters.Take(o.ClustersPerNeuron))
            {
                var features = neuron.FeaturesByCluster[cluster].Distinct().Order().ToList();
                Shuffle(features, Pick);
                units.AddRange(features.Take(o.FeaturesPerCluster).Select(f => new NeuronUnit(DegreeBuckets.All[b].Name, neuron.Neuron, neuron.Degree, cluster, f)));
            }
        }
        return new NeuronPlan(config.Hook, connectivity, units, counts);
    }

    /// <summary>Measures the plan's units (or one shard of them)
    /// through <see cref="ExperimentDriver"/>, checkpointed and resumable; the plan's counts are added to the result's.</summary>
    public static ExperimentResult<NeuronCase> Run(Model model, NeuronPlan plan, string saeName, string recordsPath, IReadOnlyDictionary<string, string[]> sentences,
        NeuronExperimentOptions o, Shard? shard = null, Scans.ScanCheckpoint? checkpoint = null, Action<int, int>? progress = null,
        Action<int>? resumed = null, CancellationToken cancel = default)
    {
        var work = (shard ?? Shard.All).Of(plan.Units).ToList();
        var similarity = new TokenSimilarity(model.W_E);
        var result = ExperimentDriver.Run(work, u =>
        {
            var counts = new Dictionary<string, int>();
            var cases = Measure(model, plan.Hook, saeName, u, recordsPath, sentences, similarity, o, counts).ToList();
            return new Outcome<NeuronCase>(cases, counts);
        }, checkpoint, progress, resumed, cancel);
        foreach (var (k, v) in plan.Counts) result.Counts[k] = v;
        return result;
    }

    static void Shuffle(List<int> list, Func<int, int> pick)
    {
        for (int i = list.Count - 1; i > 0; i--) { int j = pick(i + 1); (list[i], list[j]) = (list[j], list[i]); }
    }

    static IEnumerable<NeuronCase> Measure(Model model, HookName hook, string sae, NeuronUnit u, string recordsPath,
        IReadOnlyDictionary<string, string[]> sentences, TokenSimilarity similarity, NeuronExperimentOptions o, Dictionary<string, int> counts)
    {
        int feature = u.Feature;
        void Count(string what) => counts[what] = counts.GetValueOrDefault(what) + 1;
        var records = ExperimentInputs.Records(recordsPath, sae, feature);
        if (records is null) { Count("features_without_records"); yield break; }
        var top = TopTokens.Of(records, model, 1, 1e-9);
        if (top.Count == 0) { Count("features_without_tokens"); yield break; }
        var token = top[0];   // the feature's max-activation token
        if (!sentences.TryGetValue(token.Text, out var list) || list.Length == 0) { Count("tokens_without_sentences"); yield break; }
        int[] targets = [.. similarity.Order(token.Id).Take(o.SimilarTokens)];
        var prompts = list.Take(o.SentencesPerToken).Select(s => new SteerPrompt(model.Encode(s, prependBos: false), targets)).ToList();
        var plan = new SteerPlan
        {
            Hook = hook, Prompts = prompts, Neurons = [u.Neuron], Factors = o.Factors, Metrics = [SteerMetric.WeightedCosine], TopK = o.Top, RowsBudget = o.RowsBudget,
        };
        var weights = similarity.MaxCosine(targets);
        double TopWeighted(SteerRow r) => Enumerable.Range(0, r.TopIds!.Length).Sum(j => (double)r.TopProbabilities![j] * weights[r.TopIds[j]]);
        foreach (var byPrompt in SteerSweep.Collect(model, plan).Rows.GroupBy(r => r.Prompt))
        {
            double raw = TopWeighted(byPrompt.First(r => r.IsBaseline));
            var edits = byPrompt.Where(r => !r.IsBaseline).Select(r => (r.Amount, Value: TopWeighted(r))).ToList();
            NeuronChange Track(IEnumerable<(float Amount, double Value)> rows)
            {
                double absDrop = 0, pctDrop = 0, absUp = 0, pctUp = 0;
                foreach (var (_, v) in rows)
                {
                    double delta = v - raw;
                    absDrop = Math.Max(absDrop, -delta);
                    absUp = Math.Max(absUp, delta);
                    if (raw > 0) { pctDrop = Math.Max(pctDrop, -100 * delta / raw); pctUp = Math.Max(pctUp, 100 * delta / raw); }
                }
                return new(absDrop, raw > 0 ? pctDrop : double.NaN, absUp, raw > 0 ? pctUp : double.NaN);
            }
            yield return new NeuronCase(sae, hook, u.Bucket, u.Neuron, u.Degree, u.Cluster, feature, token.Text, token.Id, byPrompt.Key, raw,
                Track(edits.Where(e => e.Amount < 1)), Track(edits.Where(e => e.Amount > 1)));
        }
        Count("features_run");
    }
}

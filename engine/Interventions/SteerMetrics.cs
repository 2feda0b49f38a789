namespace PolyEngine.Interventions;

/// <summary>
/// The outcome metrics of an intervention, at the last real position, with P = softmax over the whole vocabulary (d_vocab
/// rows, padding rows included as the config has them) and the prompt's target set T:
/// <list type="bullet">
/// <item><c>weighted_cosine</c> = Σ_t P_t·max_{u∈T} cos(E_t, E_u), E the input embedding W_E (the paper's eq. 1);</item>
/// <item><c>overlap</c> = Σ_{u∈T} P_u; <c>kl</c> = KL(P_clean ‖ P) in nats (0 for the baseline);</item>
/// <item><c>spearman</c>, <c>kendall</c>: as the authors' code computes them — scipy's coefficient between two sequences of
/// token ids, position by position: the ids sorted by P (descending) and the ids sorted by cosine to the test token (the
/// prompt's first target). Both sequences are permutations, so Spearman is 1 − 6Σd²/(n(n²−1)) over positions;</item>
/// <item><c>spearman_rank</c>, <c>kendall_rank</c>: the rank-based variant the metric was presumably meant to be — each
/// token's rank under P against its rank under the cosine, over tokens.</item>
/// </list>
/// The first three are reduced on the backend (<see cref="Kernels.IReductionOps.RowMetrics"/>); the rank metrics sort the
/// whole vocabulary on the host, so asking for them copies those rows' logits off the device.
/// </summary>
public enum SteerMetric { WeightedCosine, Overlap, Kl, Spearman, Kendall, SpearmanRank, KendallRank }

public static class SteerMetrics
{
    /// <summary>The default set: the three reduced on the backend.</summary>
    public static readonly SteerMetric[] Default = [SteerMetric.WeightedCosine, SteerMetric.Overlap, SteerMetric.Kl];

    /// <summary>The column name (<c>weighted_cosine</c>, …).</summary>
    public static string Name(this SteerMetric m) => m switch
    {
        SteerMetric.WeightedCosine => "weighted_cosine",
        SteerMetric.Overlap => "overlap",
        SteerMetric.Kl => "kl",
        SteerMetric.Spearman => "spearman",
        SteerMetric.Kendall => "kendall",
        SteerMetric.SpearmanRank => "spearman_rank",
        SteerMetric.KendallRank => "kendall_rank",
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    /// <summary>Whether "best over scales" is the largest |value| (the correlations, as the authors' code compares them)
    /// rather than the largest value.</summary>
    public static bool BestByMagnitude(this SteerMetric m) => m is SteerMetric.Spearman or SteerMetric.Kendall or SteerMetric.SpearmanRank or SteerMetric.KendallRank;

    /// <summary>Whether the metric needs the whole probability row on the host (a sort of the vocabulary).</summary>
    public static bool NeedsRanks(this SteerMetric m) => m.BestByMagnitude();

    /// <summary>Parses <c>--metrics</c>: comma-separated names; a one-line error listing the names for anything else.</summary>
    public static SteerMetric[] Parse(string? list)
    {
        if (string.IsNullOrWhiteSpace(list)) return Default;
        var all = Enum.GetValues<SteerMetric>().ToDictionary(Name);
        var chosen = new List<SteerMetric>();
        foreach (var name in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!all.TryGetValue(name, out var m))
                throw new PolyEngineException($"--metrics: '{name}' is not a metric; choose from {string.Join(", ", all.Keys)}");
            if (!chosen.Contains(m)) chosen.Add(m);
        }
        return chosen.ToArray();
    }

    /// <summary>The rank metrics of one logits row [vocab] against the ids sorted by similarity to the test token:
    /// (spearman, kendall, spearman_rank, kendall_rank), in double. The ids are sorted by logit, which orders them as the
    /// probabilities do without float32 probabilities' ties (every probability below 1e-45 is 0).</summary>
    public static (double Spearman, double Kendall, double SpearmanRank, double KendallRank) Ranks(ReadOnlySpan<float> logits, int[] similarityOrder)
    {
        int n = logits.Length;
        if (similarityOrder.Length != n) throw new ArgumentException($"similarity order has {similarityOrder.Length} ids, the row {n}");
        var predictions = Descending(logits);
        var rankP = Inverse(predictions);
        var rankS = Inverse(similarityOrder);
        return (SpearmanOfPermutations(predictions, similarityOrder), KendallOfPermutations(predictions, similarityOrder),
            SpearmanOfPermutations(rankP, rankS), KendallOfPermutations(rankP, rankS));
    }

    /// <summary>Indices sorted by value, descending, ties to the lower index (a stable sort).</summary>
    public static int[] Descending(ReadOnlySpan<float> values)
    {
        var ids = Enumerable.Range(0, values.Length).ToArray();
        var keys = values.ToArray();
        for (int i = 0; i < keys.Length; i++) keys[i] = -keys[i];
        Array.Sort(keys, ids);   // introsort is unstable: fix ties below
        for (int i = 0; i < ids.Length;)
        {
            int j = i + 1;
            while (j < ids.Length && keys[j] == keys[i]) j++;
            if (j - i > 1) Array.Sort(ids, i, j - i);
            i = j;
        }
        return ids;
    }

    static int[] Inverse(int[] permutation)
    {
        var inv = new int[permutation.Length];
        for (int i = 0; i < permutation.Length; i++) inv[permutation[i]] = i;
        return inv;
    }

    /// <summary>Spearman's ρ of two permutations of 0..n−1 taken as value sequences (no ties): 1 − 6Σd²/(n(n²−1)).</summary>
    public static double SpearmanOfPermutations(int[] a, int[] b)
    {
        int n = a.Length;
        if (n < 2) return double.NaN;
        double d2 = 0;
        for (int i = 0; i < n; i++) { double d = a[i] - b[i]; d2 += d * d; }
        return 1 - 6 * d2 / ((double)n * ((double)n * n - 1));
    }

    /// <summary>Kendall's τ of two permutations of 0..n−1 taken as value sequences (no ties, so τ-a = τ-b):
    /// (concordant − discordant) / (n(n−1)/2), the discordant pairs counted as inversions by a merge sort in O(n log n).</summary>
    public static double KendallOfPermutations(int[] a, int[] b)
    {
        int n = a.Length;
        if (n < 2) return double.NaN;
        var byA = new int[n];   // b's values in the order of a's values
        for (int i = 0; i < n; i++) byA[a[i]] = b[i];
        long discordant = Inversions(byA, new int[n], 0, n);
        double pairs = (double)n * (n - 1) / 2;
        return (pairs - 2.0 * discordant) / pairs;
    }

    static long Inversions(int[] x, int[] tmp, int lo, int hi)
    {
        if (hi - lo < 2) return 0;
        int mid = (lo + hi) / 2;
        long count = Inversions(x, tmp, lo, mid) + Inversions(x, tmp, mid, hi);
        int i = lo, j = mid, k = lo;
        while (i < mid && j < hi)
        {
            if (x[i] <= x[j]) tmp[k++] = x[i++];
            else { count += mid - i; tmp[k++] = x[j++]; }
        }
        while (i < mid) tmp[k++] = x[i++];
        while (j < hi) tmp[k++] = x[j++];
        Array.Copy(tmp, lo, x, lo, hi - lo);
        return count;
    }
}

using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;

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
/// The first three are reduced on the backend (<see cref="Kernels.IReductionOps.RowMetrics"/>); the rank metrics from exact
/// integer statistics the backend computes by sorting each row's vocabulary (<see cref="Kernels.IReductionOps.RankStats"/>),
/// so no logits row leaves the device for them either.
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

    /// <summary>Whether the metric needs each row's vocabulary sorted (<see cref="Kernels.IReductionOps.RankStats"/>).</summary>
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

    /// <summary>Row <paramref name="r"/>'s rank metrics (spearman, kendall, spearman_rank, kendall_rank) from a backend's
    /// <see cref="RankRows"/>, in double. The ids are sorted by logit, which orders them as the probabilities do without
    /// float32 probabilities' ties (every probability below 1e-45 is 0).</summary>
    public static (double Spearman, double Kendall, double SpearmanRank, double KendallRank) Ranks(RankRows stats, int r) =>
        (Spearman(stats.Vocab, stats.Products[r]), Kendall(stats.Vocab, stats.Discordant[r]),
         Spearman(stats.Vocab, stats.RankProducts[r]), Kendall(stats.Vocab, stats.RankDiscordant[r]));

    /// <summary>Indices sorted by value, descending, ties to the lower index (a stable sort).</summary>
    public static int[] Descending(ReadOnlySpan<float> values) => LogitReductions.Descending(values);

    /// <summary>Spearman's ρ of two permutations of 0..n−1 taken as value sequences (no ties): 1 − 6Σd²/(n(n²−1)).</summary>
    public static double SpearmanOfPermutations(int[] a, int[] b)
    {
        long products = 0;
        for (int i = 0; i < a.Length; i++) products += (long)a[i] * b[i];
        return Spearman(a.Length, products);
    }

    /// <summary>ρ = 1 − 6Σd²/(n(n²−1)) of two permutations of 0..n−1 whose products sum to <paramref name="products"/>:
    /// Σd² = 2·Σi² − 2·Σ a_i b_i, exact in integers.</summary>
    static double Spearman(int n, long products)
    {
        if (n < 2) return double.NaN;
        long squares = (long)(n - 1) * n * (2L * n - 1) / 6;
        double d2 = 2.0 * (squares - products);
        return 1 - 6 * d2 / ((double)n * ((double)n * n - 1));
    }

    /// <summary>Kendall's τ of two permutations of 0..n−1 taken as value sequences (no ties, so τ-a = τ-b):
    /// (concordant − discordant) / (n(n−1)/2), the discordant pairs counted as inversions by a merge sort in O(n log n).</summary>
    public static double KendallOfPermutations(int[] a, int[] b)
    {
        int n = a.Length;
        var byA = new int[n];   // b's values in the order of a's values
        for (int i = 0; i < n; i++) byA[a[i]] = b[i];
        return Kendall(n, LogitReductions.Inversions(byA, new int[n], 0, n));
    }

    static double Kendall(int n, long discordant)
    {
        if (n < 2) return double.NaN;
        double pairs = (double)n * (n - 1) / 2;
        return (pairs - 2.0 * discordant) / pairs;
    }
}

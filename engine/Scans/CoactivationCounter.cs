namespace PolyEngine.Scans;

/// <summary>
/// Exact co-occurrence counts for every pair of features of one SAE, by sparse pair enumeration: a unit (token, window
/// or document) with active set S adds 1 to each feature of S and to each of the |S|·(|S|−1)/2 pairs — never a dense
/// Bᵀ·B. Pairs (a &lt; b) live in a triangle-packed array at a·F − a·(a+1)/2 + (b − a − 1).
/// Counters are uint32: a pair's count is at most the number of units, and <see cref="AddUnit"/> refuses a 2³²-th unit,
/// so no counter can wrap; memory is 4·F·(F−1)/2 bytes (1.2 GB at F = 24,576), stated by <see cref="BytesFor"/>.
/// </summary>
public sealed class CoactivationCounter
{
    readonly uint[] _pairs;
    readonly ulong[] _marginals;

    public CoactivationCounter(int features)
    {
        if (features < 2) throw new ArgumentOutOfRangeException(nameof(features), "need at least two features");
        Features = features;
        _pairs = new uint[PairCount(features)];
        _marginals = new ulong[features];
    }

    CoactivationCounter(int features, uint[] pairs, ulong[] marginals, ulong units)
    {
        Features = features;
        _pairs = pairs;
        _marginals = marginals;
        Units = units;
    }

    /// <summary>A counter from saved state (a checkpoint).</summary>
    internal static CoactivationCounter Restore(int features, uint[] pairs, ulong[] marginals, ulong units) => new(features, pairs, marginals, units);

    public int Features { get; }
    public ulong Units { get; private set; }
    public ReadOnlySpan<uint> Pairs => _pairs;
    /// <summary>The counters themselves, for writers that save them without a copy.</summary>
    internal uint[] PairArray => _pairs;
    public ReadOnlySpan<ulong> Marginals => _marginals;

    public static long PairCount(int features) => (long)features * (features - 1) / 2;
    public static long BytesFor(int features) => PairCount(features) * sizeof(uint) + features * sizeof(ulong);

    public static long Index(int a, int b, int features) => (long)a * features - (long)a * (a + 1) / 2 + (b - a - 1);

    public uint Count(int a, int b)
    {
        if (a == b) return (uint)_marginals[a];
        if (a > b) (a, b) = (b, a);
        return _pairs[Index(a, b, Features)];
    }

    /// <summary>Counts one unit whose active features are <paramref name="activeSorted"/> (ascending, distinct).</summary>
    public void AddUnit(ReadOnlySpan<int> activeSorted)
    {
        if (Units == uint.MaxValue) throw new InvalidOperationException("2^32 − 1 units counted: a uint32 pair counter could overflow; split the corpus");
        Units++;
        int f = Features;
        for (int i = 0; i < activeSorted.Length; i++)
        {
            int a = activeSorted[i];
            _marginals[a]++;
            long row = (long)a * f - (long)a * (a + 1) / 2 - a - 1;   // Index(a, b) = row + b
            for (int j = i + 1; j < activeSorted.Length; j++) _pairs[row + activeSorted[j]]++;
        }
    }

    /// <summary>Adds another counter's counts (same feature count): shards of a corpus combine exactly.</summary>
    public void Add(CoactivationCounter other)
    {
        if (other.Features != Features) throw new ArgumentException("feature counts differ");
        checked { Units += other.Units; }
        if (Units > uint.MaxValue) throw new InvalidOperationException("more than 2^32 − 1 units: a uint32 pair counter could overflow");
        for (long i = 0; i < _pairs.LongLength; i++) _pairs[i] += other._pairs[i];
        for (int i = 0; i < Features; i++) _marginals[i] += other._marginals[i];
    }
}

/// <summary>Pair statistics over N units: Jaccard = ab/(a + b − ab), lift = ab·N/(a·b), PMI = ln(lift).</summary>
public readonly record struct PairStats(int FeatureA, int FeatureB, ulong CountA, ulong CountB, ulong CountAB, double Jaccard, double Pmi, double Lift)
{
    public static PairStats Of(int a, int b, ulong countA, ulong countB, ulong countAB, ulong units)
    {
        double lift = countA == 0 || countB == 0 ? double.NaN : (double)countAB * units / ((double)countA * countB);
        double union = (double)countA + countB - countAB;
        return new PairStats(a, b, countA, countB, countAB, union == 0 ? double.NaN : countAB / union, Math.Log(lift), lift);
    }
}

namespace PolyEngine.Scans;

/// <summary>
/// Exact co-occurrence counts for every pair of features of one SAE, by sparse pair enumeration: a unit (token, window
/// or document) with active set S adds 1 to each feature of S and to each of the |S|·(|S|−1)/2 pairs — never a dense
/// Bᵀ·B. Pairs (a &lt; b) are numbered in triangle order, a·F − a·(a+1)/2 + (b − a − 1), and held in chunks of whole
/// rows (at most <see cref="ChunkElements"/> counters each, 1 GiB): a .NET array holds fewer than 2³¹ elements, and a
/// 65,537-wide SAE already has more pairs than that. Counters are uint32: a pair's count is at most the number of units,
/// and <see cref="AddUnit"/> refuses a 2³²-th unit, so no counter can wrap; memory is stated by <see cref="BytesFor"/>
/// (1.2 GB at F = 24,576, 8.6 GB at F = 65,536).
/// </summary>
public sealed class CoactivationCounter
{
    /// <summary>Counters per chunk, 1 GiB (a chunk holds whole rows, so it grows to F − 1 when that is larger).</summary>
    public const long ChunkElements = 1L << 28;

    readonly uint[][] _chunks;      // the triangle in row order, split between rows
    readonly int[] _rowChunk;       // [F]: the chunk holding row a
    readonly long[] _rowBase;       // [F]: pair (a, b) is _chunks[_rowChunk[a]][_rowBase[a] + b]
    readonly ulong[] _marginals;    // [F]

    public CoactivationCounter(int features) : this(features, ChunkElements) { }

    /// <summary>A counter whose chunks hold at most <paramref name="chunkElements"/> counters (tests use small chunks).</summary>
    internal CoactivationCounter(int features, long chunkElements)
    {
        if (features < 2) throw new ArgumentOutOfRangeException(nameof(features), "need at least two features");
        Features = features;
        _marginals = new ulong[features];
        _rowChunk = new int[features];
        _rowBase = new long[features];
        var sizes = Layout(features, chunkElements, _rowChunk, _rowBase);
        _chunks = sizes.Select(n => new uint[n]).ToArray();
    }

    /// <summary>The chunk sizes for <paramref name="f"/> features — whole rows, each chunk at most max(<paramref name="limit"/>,
    /// F − 1) counters — and, when given, each row's chunk and base (pair (a, b) at base[a] + b).</summary>
    internal static List<long> Layout(int f, long limit, int[]? rowChunk = null, long[]? rowBase = null)
    {
        limit = Math.Max(limit, f - 1);
        var sizes = new List<long>();
        long fill = 0;
        for (int a = 0; a < f - 1; a++)
        {
            long row = f - a - 1;
            if (fill + row > limit) { sizes.Add(fill); fill = 0; }
            if (rowChunk is not null) rowChunk[a] = sizes.Count;
            if (rowBase is not null) rowBase[a] = fill - (a + 1);
            fill += row;
        }
        sizes.Add(fill);
        if (rowChunk is not null) rowChunk[f - 1] = sizes.Count - 1;
        return sizes;
    }

    /// <summary>Loads saved state (a checkpoint) into this counter, in place (no second triangle in memory): the triangle
    /// read in pieces by <paramref name="readPairs"/> (pair offset, destination).</summary>
    internal void Restore(Action<long, Span<uint>> readPairs, ulong[] marginals, ulong units)
    {
        if (marginals.Length != Features) throw new ArgumentException($"{marginals.Length} marginals for {Features} features");
        long offset = 0;
        foreach (var chunk in _chunks)
        {
            readPairs(offset, chunk);
            offset += chunk.LongLength;
        }
        marginals.CopyTo(_marginals, 0);
        Units = units;
    }

    public int Features { get; }
    public ulong Units { get; private set; }
    /// <summary>The counters in triangle order, as chunks of whole rows (concatenated, they are the triangle).</summary>
    public IReadOnlyList<uint[]> PairChunks => _chunks;
    public ReadOnlySpan<ulong> Marginals => _marginals;

    public static long PairCount(int features) => (long)features * (features - 1) / 2;

    /// <summary>What a counter allocates: 4 bytes a pair, and per feature its marginal and row place.</summary>
    public static long BytesFor(int features) => PairCount(features) * sizeof(uint) + (long)features * (sizeof(ulong) + sizeof(int) + sizeof(long));

    public static long Index(int a, int b, int features) => (long)a * features - (long)a * (a + 1) / 2 + (b - a - 1);

    /// <summary>Row <paramref name="a"/> of the triangle: the counts of the pairs (a, a+1) … (a, F−1).</summary>
    public ReadOnlySpan<uint> Row(int a) => RowSpan(a);

    Span<uint> RowSpan(int a) => a >= Features - 1 ? Span<uint>.Empty   // the last feature pairs with no later one
        : _chunks[_rowChunk[a]].AsSpan(checked((int)(_rowBase[a] + a + 1)), Features - a - 1);

    public uint Count(int a, int b)
    {
        if (a == b) return (uint)_marginals[a];
        if (a > b) (a, b) = (b, a);
        return _chunks[_rowChunk[a]][_rowBase[a] + b];
    }

    /// <summary>Counts one unit whose active features are <paramref name="activeSorted"/> (ascending, distinct).</summary>
    public void AddUnit(ReadOnlySpan<int> activeSorted)
    {
        if (Units == uint.MaxValue) throw new InvalidOperationException("2^32 − 1 units counted: a uint32 pair counter could overflow; split the corpus");
        Units++;
        for (int i = 0; i < activeSorted.Length; i++)
        {
            int a = activeSorted[i];
            _marginals[a]++;
            var chunk = _chunks[_rowChunk[a]];
            long row = _rowBase[a];
            for (int j = i + 1; j < activeSorted.Length; j++) chunk[row + activeSorted[j]]++;
        }
    }

    /// <summary>Adds another counter's counts (same feature count): shards of a corpus combine exactly.</summary>
    public void Add(CoactivationCounter other)
    {
        if (other.Features != Features) throw new ArgumentException("feature counts differ");
        if (Units + other.Units > uint.MaxValue) throw new InvalidOperationException("more than 2^32 − 1 units: a uint32 pair counter could overflow");
        Units += other.Units;
        for (int a = 0; a < Features - 1; a++)
        {
            var mine = RowSpan(a);
            var theirs = other.Row(a);
            for (int i = 0; i < mine.Length; i++) mine[i] += theirs[i];
        }
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

using System.Numerics;

namespace PolyEngine.Scans;

/// <summary>
/// For each of many owners, the <see cref="K"/> strongest candidates (score descending, then id ascending: a total order,
/// so the kept set does not depend on the order of offers) as size-K min-heaps in flat arrays. The interference scan
/// keeps each feature's top partners by cosine this way (float scores), the co-activation tables each feature's top
/// partners by count (uint scores, exact), in O(owners·K) memory.
/// </summary>
public sealed class TopHeaps<TScore> where TScore : unmanaged, INumber<TScore>
{
    readonly TScore[] _score;   // [owners, K]: slot 0 of an owner is its weakest kept candidate once full
    readonly int[] _id;
    readonly int[] _size;

    public TopHeaps(int owners, int k)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "keep at least one candidate");
        Owners = owners;
        K = k;
        _score = new TScore[checked((long)owners * k)];
        _id = new int[_score.LongLength];
        _size = new int[owners];
    }

    public int Owners { get; }
    public int K { get; }

    public int Size(int owner) => _size[owner];

    /// <summary>Offers (score, id) to <paramref name="owner"/>; kept when the heap has room or it beats the weakest kept.</summary>
    public void Offer(int owner, TScore score, int id)
    {
        long o = (long)owner * K;
        int size = _size[owner];
        if (size < K)
        {
            int c = size;
            _size[owner] = size + 1;
            while (c > 0)
            {
                int parent = (c - 1) / 2;
                if (!Weaker(score, id, _score[o + parent], _id[o + parent])) break;
                _score[o + c] = _score[o + parent];
                _id[o + c] = _id[o + parent];
                c = parent;
            }
            _score[o + c] = score;
            _id[o + c] = id;
            return;
        }
        if (!Weaker(_score[o], _id[o], score, id)) return;
        int i = 0;
        while (true)
        {
            int l = 2 * i + 1, r = l + 1, m = i;
            TScore ms = score;
            int mi = id;
            if (l < K && Weaker(_score[o + l], _id[o + l], ms, mi)) { m = l; ms = _score[o + l]; mi = _id[o + l]; }
            if (r < K && Weaker(_score[o + r], _id[o + r], ms, mi)) m = r;
            if (m == i) break;
            _score[o + i] = _score[o + m];
            _id[o + i] = _id[o + m];
            i = m;
        }
        _score[o + i] = score;
        _id[o + i] = id;
    }

    /// <summary>Whether (score, id) of a candidate could enter <paramref name="owner"/>'s heap (a cheap pre-check).</summary>
    public bool Admits(int owner, TScore score) => _size[owner] < K || score >= _score[(long)owner * K];

    static bool Weaker(TScore s, int id, TScore s2, int id2) => s < s2 || (s == s2 && id > id2);

    /// <summary>The kept candidates of <paramref name="owner"/>, strongest first.</summary>
    public (int Id, TScore Score)[] Sorted(int owner)
    {
        long o = (long)owner * K;
        var kept = new (int Id, TScore Score)[_size[owner]];
        for (int i = 0; i < kept.Length; i++) kept[i] = (_id[o + i], _score[o + i]);
        Array.Sort(kept, (a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Id.CompareTo(b.Id));
        return kept;
    }

    /// <summary>The raw arrays, for checkpoints (<see cref="Restore"/> takes them back).</summary>
    internal (TScore[] Scores, int[] Ids, int[] Sizes) State => (_score, _id, _size);

    internal static TopHeaps<TScore> Restore(int owners, int k, TScore[] scores, int[] ids, int[] sizes)
    {
        var h = new TopHeaps<TScore>(owners, k);
        if (scores.Length != h._score.Length || ids.Length != h._id.Length || sizes.Length != owners)
            throw new PolyEngineException("checkpoint heaps do not match the scan's shape; delete the checkpoint or use --overwrite");
        scores.CopyTo(h._score, 0);
        ids.CopyTo(h._id, 0);
        sizes.CopyTo(h._size, 0);
        return h;
    }
}

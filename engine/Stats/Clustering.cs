namespace PolyEngine.Stats;

/// <summary>How features are grouped into clusters for the neuron experiment.</summary>
public enum ClusterMethod
{
    /// <summary>Average-linkage agglomerative clustering on cosine distance, cut at the distance (SciPy's
    /// <c>linkage(method="average")</c> + <c>fcluster(t, "distance")</c>).</summary>
    AverageLinkage,
    /// <summary>Connected components of the pairs at cosine distance ≤ the cutoff (single linkage at the cut).</summary>
    PairwiseThreshold,
}

/// <summary>
/// Clusters of unit vectors (explanation embeddings) by cosine distance 1 − cos. Average linkage runs the nearest-neighbour
/// chain algorithm on a condensed float distance matrix, O(n²) time and n(n − 1)/2 floats of memory, and keeps the
/// merges at average distance ≤ the cutoff; the pairwise threshold is a union–find over the pairs within it, O(n²)
/// time and O(n) memory. Labels are 0.. in order of each cluster's lowest member. Distances are float32 (SciPy's are
/// float64), so a merge within about 1e-6 of the cut may fall on the other side of it.
/// </summary>
public static class Clustering
{
    public static int[] Cluster(float[] unit, int n, int dim, double cutoff, ClusterMethod method)
    {
        if (unit.Length != (long)n * dim) throw new ArgumentException($"Cluster: {unit.Length} values for {n}×{dim}");
        if (n == 0) return [];
        return method == ClusterMethod.AverageLinkage ? AverageLinkage(unit, n, dim, cutoff) : Threshold(unit, n, dim, cutoff);
    }

    static double Distance(float[] u, int dim, int a, int b) =>
        1 - System.Numerics.Tensors.TensorPrimitives.Dot(u.AsSpan(a * dim, dim), u.AsSpan(b * dim, dim));

    static int[] Threshold(float[] u, int n, int dim, double cutoff) =>
        Components(n, Enumerable.Range(0, n).SelectMany(a => Enumerable.Range(a + 1, n - a - 1).Where(b => Distance(u, dim, a, b) <= cutoff).Select(b => (a, b))));

    static int[] AverageLinkage(float[] u, int n, int dim, double cutoff)
    {
        if ((long)n * (n - 1) / 2 > Array.MaxLength) throw new PolyEngineException($"average linkage over {n} features needs {(long)n * (n - 1) / 2:N0} distances; use the pairwise threshold (--clusters threshold)");
        var d = new float[(long)n * (n - 1) / 2];
        long Index(int i, int j) { if (i > j) (i, j) = (j, i); return (long)n * i - (long)i * (i + 1) / 2 + (j - i - 1); }
        Parallel.For(0, n, i => { for (int j = i + 1; j < n; j++) d[Index(i, j)] = (float)Distance(u, dim, i, j); });
        var size = Enumerable.Repeat(1, n).ToArray();
        var active = Enumerable.Repeat(true, n).ToArray();
        var merges = new List<(int X, int Y, float Height)>();
        var chain = new List<int>();
        int remaining = n;
        while (remaining > 1)
        {
            if (chain.Count == 0) chain.Add(Array.IndexOf(active, true));
            while (true)
            {
                int a = chain[^1], prev = chain.Count > 1 ? chain[^2] : -1, best = -1;
                float bestD = float.PositiveInfinity;
                for (int b = 0; b < n; b++)
                {
                    if (!active[b] || b == a) continue;
                    float db = d[Index(a, b)];
                    if (db < bestD || (db == bestD && b == prev)) { bestD = db; best = b; }
                }
                if (best == prev) break;
                chain.Add(best);
            }
            int x = chain[^1], y = chain[^2];
            chain.RemoveRange(chain.Count - 2, 2);
            merges.Add((x, y, d[Index(x, y)]));
            // Merge y into x (Lance–Williams for average linkage).
            for (int k = 0; k < n; k++)
            {
                if (!active[k] || k == x || k == y) continue;
                d[Index(x, k)] = (size[x] * d[Index(x, k)] + size[y] * d[Index(y, k)]) / (size[x] + size[y]);
            }
            size[x] += size[y];
            active[y] = false;
            remaining--;
        }
        // Average linkage is reducible, so the merges' heights form a monotone dendrogram whatever order the chain found
        // them in: the flat clusters at the cut are the unions of the merges at or below it.
        return Components(n, merges.Where(m => m.Height <= cutoff).Select(m => (m.X, m.Y)));
    }

    /// <summary>The connected components of <paramref name="n"/> items joined by <paramref name="pairs"/> (union–find),
    /// labelled 0.. in order of each component's lowest member.</summary>
    static int[] Components(int n, IEnumerable<(int A, int B)> pairs)
    {
        var parent = Enumerable.Range(0, n).ToArray();
        int Find(int v) { while (parent[v] != v) v = parent[v] = parent[parent[v]]; return v; }
        foreach (var (a, b) in pairs) { int ra = Find(a), rb = Find(b); if (ra != rb) parent[Math.Max(ra, rb)] = Math.Min(ra, rb); }
        var map = new Dictionary<int, int>();
        return [.. Enumerable.Range(0, n).Select(Find).Select(r => map.TryGetValue(r, out int l) ? l : map[r] = map.Count)];
    }
}

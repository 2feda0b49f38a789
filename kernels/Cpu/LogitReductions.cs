using System.Runtime.Intrinsics;

namespace PolyEngine.Kernels.Cpu;

/// <summary>The logits-side reductions on host rows: top-k (<see cref="TopLogitRows"/>), row metrics (<see cref="LogitRowMetrics"/>)
/// and rank statistics (<see cref="RankRows"/>). Scalar reference: Reference/ReductionReference.</summary>
public static class LogitReductions
{
    public static TopLogitRows Top(ArraySegment<float> logits, int rows, int vocab, int k, int threads)
    {
        k = Math.Min(k, vocab);
        var ids = new int[rows * k];
        var top = new float[rows * k];
        var lse = new float[rows];
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
        {
            var row = logits.AsSpan(r * vocab, vocab);
            lse[r] = LogSumExp(row);
            var best = SparseEncode.TopKIndices(row, k);
            var values = new float[k];
            for (int j = 0; j < k; j++) values[j] = row[best[j]];
            int slot = r * k;
            foreach (int j in Enumerable.Range(0, k).OrderByDescending(j => values[j]).ThenBy(j => best[j]))
            {
                ids[slot] = best[j];
                top[slot++] = values[j];
            }
        });
        return new TopLogitRows(rows, k, ids, top, lse);
    }

    /// <summary>Row metrics (<see cref="IReductionOps.RowMetrics"/>) parallel over rows, in double: per row one pass of
    /// e_t = exp(x_t − max) (vectorized double exps), lse = max + log Σe, expectations Σ e_t w_t / Σe; the KL through
    /// its group's reference constants, KL = Σ Q log Q − Σ Q x + lse · Σ Q (Q = the reference's P, per group once).</summary>
    public static LogitRowMetrics Metrics(ArraySegment<float> logits, int rows, int vocab, int[] group, ArraySegment<float> weights, int nWeights,
        ArraySegment<float>? reference, int threads)
    {
        var lse = new float[rows];
        var dots = new float[rows * nWeights];
        var kl = reference is null ? null : new float[rows];
        // Per group: Q [vocab] (double), Σ Q log Q and Σ Q.
        int groups = reference is null ? 0 : group.Max() + 1;
        var q = new double[groups][];
        var qLogQ = new double[groups];
        var qSum = new double[groups];
        if (reference is { } refs)
            Parallel.For(0, groups, new ParallelOptions { MaxDegreeOfParallelism = threads }, g =>
            {
                if (!group.Contains(g)) return;
                var e = q[g] = new double[vocab];
                var x = refs.AsSpan(g * vocab, vocab);
                double l = Exps(x, e, out double sum);
                l += Math.Log(sum);
                double s = 0, sl = 0;
                for (int t = 0; t < vocab; t++)
                {
                    double qt = e[t] / sum;
                    e[t] = qt;
                    s += qt;
                    sl += qt * (x[t] - l);
                }
                (qLogQ[g], qSum[g]) = (sl, s);
            });
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => new double[vocab], (r, _, e) =>
        {
            var row = logits.AsSpan(r * vocab, vocab);
            int g = group[r];
            double l = Exps(row, e, out double sum);
            l += Math.Log(sum);
            lse[r] = (float)l;
            if (reference is not null) kl![r] = (float)(qLogQ[g] - Dot(q[g], row) + l * qSum[g]);
            for (int j = 0; j < nWeights; j++)
                dots[r * nWeights + j] = (float)(Dot(e, weights.AsSpan((g * nWeights + j) * vocab, vocab)) / sum);
            return e;
        }, _ => { });
        return new LogitRowMetrics(rows, nWeights, lse, dots, kl);
    }

    /// <summary>Rank statistics (<see cref="IReductionOps.RankStats"/>) parallel over rows: a stable sort of each row, the
    /// sums, and the discordant pairs as inversions counted by a merge sort, O(vocab log vocab) per row.</summary>
    public static RankRows Ranks(ArraySegment<float> logits, int rows, int vocab, int[] group, int[][] orders, int threads)
    {
        var rankS = orders.Select(Inverse).ToArray();
        var (prod, rprod, disc, rdisc) = (new long[rows], new long[rows], new long[rows], new long[rows]);
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
        {
            var stats = RankRow(logits.AsSpan(r * vocab, vocab), orders[group[r]], rankS[group[r]]);
            (prod[r], rprod[r], disc[r], rdisc[r]) = stats;
        });
        return new RankRows(rows, vocab, prod, rprod, disc, rdisc);
    }

    /// <summary>One row's <see cref="RankRows"/> entries against similarity order <paramref name="s"/> and its inverse.</summary>
    public static (long Products, long RankProducts, long Discordant, long RankDiscordant) RankRow(ReadOnlySpan<float> logits, int[] s, int[] rankS)
    {
        int n = logits.Length;
        var p = Descending(logits);
        long prod = 0, rprod = 0;
        var byP = new int[n];    // S's values in the order of P's values: Kendall's discordant pairs are its inversions
        var byRank = new int[n]; // rankS in the order of rankP
        for (int i = 0; i < n; i++)
        {
            prod += (long)p[i] * s[i];
            rprod += (long)i * rankS[p[i]];
            byP[p[i]] = s[i];
            byRank[i] = rankS[p[i]];
        }
        var tmp = new int[n];
        return (prod, rprod, Inversions(byP, tmp, 0, n), Inversions(byRank, tmp, 0, n));
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

    /// <summary>The inverse of a permutation: inv[p[i]] = i.</summary>
    public static int[] Inverse(int[] permutation)
    {
        var inv = new int[permutation.Length];
        for (int i = 0; i < permutation.Length; i++) inv[permutation[i]] = i;
        return inv;
    }

    /// <summary>The inversions of x[lo, hi) (pairs i &lt; j with x[i] &gt; x[j]), counted by a merge sort that sorts it.</summary>
    public static long Inversions(int[] x, int[] tmp, int lo, int hi)
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

    /// <summary>e_t = exp(x_t − max x) in double; returns max x and Σ e in <paramref name="sum"/>.</summary>
    static double Exps(ReadOnlySpan<float> x, Span<double> e, out double sum)
    {
        double max = System.Numerics.Tensors.TensorPrimitives.Max(x);
        int t = 0;
        var acc = Vector256<double>.Zero;
        if (Vector256.IsHardwareAccelerated)
            for (var m = Vector256.Create(max); t + 8 <= x.Length; t += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(x.Slice(t, 8)));
                var a = Vector256.Exp(lo - m);
                var b = Vector256.Exp(hi - m);
                a.CopyTo(e.Slice(t, 4));
                b.CopyTo(e.Slice(t + 4, 4));
                acc += a + b;
            }
        sum = Vector256.Sum(acc);
        for (; t < x.Length; t++) sum += e[t] = Math.Exp(x[t] - max);
        return max;
    }

    /// <summary>Σ a_t b_t in double.</summary>
    static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<float> b)
    {
        int t = 0;
        var acc = Vector256<double>.Zero;
        if (Vector256.IsHardwareAccelerated)
            for (; t + 8 <= b.Length; t += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(b.Slice(t, 8)));
                acc = Vector256.MultiplyAddEstimate(Vector256.Create(a.Slice(t, 4)), lo, acc);
                acc = Vector256.MultiplyAddEstimate(Vector256.Create(a.Slice(t + 4, 4)), hi, acc);
            }
        double sum = Vector256.Sum(acc);
        for (; t < b.Length; t++) sum += a[t] * b[t];
        return sum;
    }

    /// <summary>max + log Σ exp(x − max), the sum in double.</summary>
    public static float LogSumExp(ReadOnlySpan<float> row)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
        double sum = 0;
        foreach (var v in row) sum += Math.Exp(v - max);
        return (float)(max + Math.Log(sum));
    }
}

/// <summary>The reduction family on the CPU.</summary>
sealed class CpuReductions(CpuBackend backend) : IReductionOps
{
    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        var l = CpuBackend.Seg(logits);
        if ((long)rows * vocab > l.Count) throw new ArgumentException($"TopLogits: logits hold {l.Count} floats, {rows}×{vocab} needed");
        if (k < 1) throw new ArgumentException($"TopLogits: k must be positive, got {k}");
        return LogitReductions.Top(l, rows, vocab, k, backend.Threads);
    }

    public RankRows RankStats(DeviceBuffer logits, int rows, int vocab, int[] group, int[][] orders)
    {
        var l = CpuBackend.Seg(logits);
        RankStatsCheck.Check(group, rows, vocab, l.Count, orders);
        return LogitReductions.Ranks(l, rows, vocab, group, orders, backend.Threads);
    }

    public LogitRowMetrics RowMetrics(DeviceBuffer logits, int rows, int vocab, int[] group, DeviceBuffer? weights, int nWeights, DeviceBuffer? reference)
    {
        var l = CpuBackend.Seg(logits);
        RowMetricsCheck.Groups(group, rows, vocab, l.Count, weights?.Length ?? 0, nWeights, reference?.Length);
        return LogitReductions.Metrics(l, rows, vocab, group, weights is null ? default : CpuBackend.Seg(weights), nWeights,
            reference is null ? (ArraySegment<float>?)null : CpuBackend.Seg(reference), backend.Threads);
    }
}

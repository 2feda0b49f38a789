namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar reference of the reductions: each row's top-k logits by a full stable sort, its log-sum-exp in double.</summary>
public static class ReductionReference
{
    public static TopLogitRows TopLogits(float[] logits, int rows, int vocab, int k)
    {
        k = Math.Min(k, vocab);
        var ids = new int[rows * k];
        var top = new float[rows * k];
        var lse = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab).ToArray();
            double max = row.Max();
            lse[r] = (float)(max + Math.Log(row.Sum(v => Math.Exp(v - max))));
            var order = Enumerable.Range(0, vocab).OrderByDescending(i => row[i]).ThenBy(i => i).Take(k).ToArray();
            for (int j = 0; j < k; j++) { ids[r * k + j] = order[j]; top[r * k + j] = row[order[j]]; }
        }
        return new TopLogitRows(rows, k, ids, top, lse);
    }

    /// <summary><see cref="IReductionOps.RowMetrics"/> in double: P = exp(l − lse) per row; expectations Σ P·w; KL = Σ Q·(log Q − log P).</summary>
    public static LogitRowMetrics RowMetrics(float[] logits, int rows, int vocab, int[] group, float[]? weights, int nWeights, float[]? reference)
    {
        var lse = new float[rows];
        var dots = new float[rows * nWeights];
        var kl = reference is null ? null : new float[rows];
        static double Lse(ReadOnlySpan<float> x)
        {
            double max = double.NegativeInfinity;
            foreach (var v in x) max = Math.Max(max, v);
            double sum = 0;
            foreach (var v in x) sum += Math.Exp(v - max);
            return max + Math.Log(sum);
        }
        for (int r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab);
            int g = group[r];
            double l = Lse(row);
            lse[r] = (float)l;
            for (int j = 0; j < nWeights; j++)
            {
                var w = weights.AsSpan((g * nWeights + j) * vocab, vocab);
                double acc = 0;
                for (int t = 0; t < vocab; t++) acc += Math.Exp(row[t] - l) * w[t];
                dots[r * nWeights + j] = (float)acc;
            }
            if (reference is null) continue;
            var q = reference.AsSpan(g * vocab, vocab);
            double lq = Lse(q), sum = 0;
            for (int t = 0; t < vocab; t++) sum += Math.Exp(q[t] - lq) * ((q[t] - lq) - (row[t] - l));
            kl![r] = (float)sum;
        }
        return new LogitRowMetrics(rows, nWeights, lse, dots, kl);
    }

    /// <summary><see cref="RankRows"/> by the definitions: P by comparing every pair of logits, the sums and every pair counted.</summary>
    public static RankRows RankStats(float[] logits, int rows, int vocab, int[] group, int[][] orders)
    {
        var (prod, rprod, disc, rdisc) = (new long[rows], new long[rows], new long[rows], new long[rows]);
        for (int r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab).ToArray();
            var s = orders[group[r]];
            // rankP(t) = the ids before t: larger logits, or equal logits and a lower id.
            var rankP = new int[vocab];
            for (int t = 0; t < vocab; t++)
                for (int u = 0; u < vocab; u++)
                    if (row[u] > row[t] || (row[u] == row[t] && u < t)) rankP[t]++;
            var p = new int[vocab];
            var rankS = new int[vocab];
            for (int t = 0; t < vocab; t++) p[rankP[t]] = t;
            for (int i = 0; i < vocab; i++) rankS[s[i]] = i;
            for (int i = 0; i < vocab; i++)
            {
                prod[r] += (long)p[i] * s[i];
                rprod[r] += (long)rankP[i] * rankS[i];
                for (int j = i + 1; j < vocab; j++)
                {
                    if ((long)(p[i] - p[j]) * (s[i] - s[j]) < 0) disc[r]++;
                    if ((long)(rankP[i] - rankP[j]) * (rankS[i] - rankS[j]) < 0) rdisc[r]++;
                }
            }
        }
        return new RankRows(rows, vocab, prod, rprod, disc, rdisc);
    }
}

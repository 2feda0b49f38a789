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
}

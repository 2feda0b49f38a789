namespace PolyEngine.Kernels.Cpu;

/// <summary>The logits-side reduction (<see cref="TopLogitRows"/>) on host rows, and its scalar reference.</summary>
public static class LogitReductions
{
    public static TopLogitRows Top(float[] logits, int rows, int vocab, int k, int threads)
    {
        k = Math.Min(k, vocab);
        var ids = new int[rows * k];
        var top = new float[rows * k];
        var lse = new float[rows];
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
        {
            var row = new ReadOnlySpan<float>(logits, r * vocab, vocab);
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

    /// <summary>max + log Σ exp(x − max), the sum in double.</summary>
    public static float LogSumExp(ReadOnlySpan<float> row)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
        double sum = 0;
        foreach (var v in row) sum += Math.Exp(v - max);
        return (float)(max + Math.Log(sum));
    }

    /// <summary>Scalar reference: a full stable sort of each row, the log-sum-exp in double.</summary>
    public static TopLogitRows Reference(float[] logits, int rows, int vocab, int k)
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

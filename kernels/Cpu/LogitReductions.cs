namespace PolyEngine.Kernels.Cpu;

/// <summary>The logits-side reduction (<see cref="TopLogitRows"/>) on host rows. Scalar reference: Reference/ReductionReference.</summary>
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
}

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

    /// <summary>Row metrics (<see cref="IReductionOps.RowMetrics"/>) parallel over rows, sums in double.</summary>
    public static LogitRowMetrics Metrics(ArraySegment<float> logits, int rows, int vocab, int[] group, ArraySegment<float> weights, int nWeights,
        ArraySegment<float>? reference, int threads)
    {
        var lse = new float[rows];
        var dots = new float[rows * nWeights];
        var kl = reference is null ? null : new float[rows];
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => new float[vocab], (r, _, p) =>
        {
            var row = logits.AsSpan(r * vocab, vocab);
            int g = group[r];
            float l = LogSumExp(row);
            lse[r] = l;
            System.Numerics.Tensors.TensorPrimitives.Subtract(row, l, p);   // log P
            var logP = (ReadOnlySpan<float>)p;
            if (reference is { } refs)
            {
                var q = refs.AsSpan(g * vocab, vocab);
                float lq = LogSumExp(q);
                double sum = 0;
                for (int t = 0; t < vocab; t++)
                {
                    double logQ = q[t] - lq;
                    sum += Math.Exp(logQ) * (logQ - logP[t]);
                }
                kl![r] = (float)sum;
            }
            System.Numerics.Tensors.TensorPrimitives.Exp(p, p);   // P
            for (int j = 0; j < nWeights; j++)
            {
                var w = weights.AsSpan((g * nWeights + j) * vocab, vocab);
                double acc = 0;
                for (int t = 0; t < vocab; t++) acc += (double)p[t] * w[t];
                dots[r * nWeights + j] = (float)acc;
            }
            return p;
        }, _ => { });
        return new LogitRowMetrics(rows, nWeights, lse, dots, kl);
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

    public LogitRowMetrics RowMetrics(DeviceBuffer logits, int rows, int vocab, int[] group, DeviceBuffer? weights, int nWeights, DeviceBuffer? reference)
    {
        var l = CpuBackend.Seg(logits);
        RowMetricsCheck.Groups(group, rows, vocab, l.Count, weights?.Length ?? 0, nWeights, reference?.Length);
        return LogitReductions.Metrics(l, rows, vocab, group, weights is null ? default : CpuBackend.Seg(weights), nWeights,
            reference is null ? (ArraySegment<float>?)null : CpuBackend.Seg(reference), backend.Threads);
    }
}

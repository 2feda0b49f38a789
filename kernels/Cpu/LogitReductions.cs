using System.Runtime.Intrinsics;

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

    public LogitRowMetrics RowMetrics(DeviceBuffer logits, int rows, int vocab, int[] group, DeviceBuffer? weights, int nWeights, DeviceBuffer? reference)
    {
        var l = CpuBackend.Seg(logits);
        RowMetricsCheck.Groups(group, rows, vocab, l.Count, weights?.Length ?? 0, nWeights, reference?.Length);
        return LogitReductions.Metrics(l, rows, vocab, group, weights is null ? default : CpuBackend.Seg(weights), nWeights,
            reference is null ? (ArraySegment<float>?)null : CpuBackend.Seg(reference), backend.Threads);
    }
}

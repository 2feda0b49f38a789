using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>The in-place hook edit and the logits-side reduction against their scalar references at odd shapes;
/// <see cref="IlgpuBackendTests"/> runs the same sweeps on the emulated CUDA kernels.</summary>
public class RowEditAndLogitTests
{
    public static TheoryData<int, int, int, bool> EditShapes() => new()
    {
        { 1, 1, 1, false }, { 2, 5, 3, false }, { 3, 4, 17, true }, { 1, 9, 33, true }, { 4, 2, 8, false },
    };

    internal static (float[] X, float[] Mul, float[] Add, int[] From) EditInputs(int batch, int seq, int width, bool perPosition)
    {
        int per = (perPosition ? batch * seq : batch) * width;
        return (SparseEncodeTests.Uniform(batch * seq * width, 1, 3f), SparseEncodeTests.Uniform(per, 2, 2f), SparseEncodeTests.Uniform(per, 3),
            Enumerable.Range(0, batch).Select(b => b % (seq + 1)).ToArray());
    }

    [Theory]
    [MemberData(nameof(EditShapes))]
    public void EditRowsMatchesTheReference(int batch, int seq, int width, bool perPosition)
    {
        var (x, mul, add, from) = EditInputs(batch, seq, width, perPosition);
        var cpu = new CpuBackend(2);
        foreach (var (m, a) in new[] { (mul, add), (mul, null), (null, add) })
        {
            var buf = cpu.Upload(x);
            cpu.Rows.Edit(buf, batch, seq, width, new RowEdit(m is null ? null : cpu.Upload(m), a is null ? null : cpu.Upload(a), perPosition, from));
            var actual = new float[x.Length];
            cpu.Download(buf, actual);
            Compare.Close(RowsReference.Edit(x, batch, seq, width, m, a, perPosition, from), actual, 1e-6, $"edit {batch}×{seq}×{width}", 1e-6);
        }
        Assert.Throws<ArgumentException>(() => cpu.Rows.Edit(cpu.Upload(x), batch, seq, width, new RowEdit(cpu.Upload(mul.AsSpan(0, mul.Length - 1)), null, perPosition, from)));
    }

    public static TheoryData<int, int, int> TopShapes() => new() { { 1, 1, 1 }, { 3, 10, 4 }, { 2, 257, 16 }, { 5, 40, 40 }, { 2, 7, 9 } };

    [Theory]
    [MemberData(nameof(TopShapes))]
    public void TopLogitsMatchTheReference(int rows, int vocab, int k)
    {
        foreach (var logits in new[] { SparseEncodeTests.Tied(rows * vocab, vocab), SparseEncodeTests.Uniform(rows * vocab, k, 8f) })
        {
            var expected = ReductionReference.TopLogits(logits, rows, vocab, k);
            var actual = new CpuBackend(2).Reductions.TopLogits(new CpuBackend(1).Upload(logits), rows, vocab, k);
            Assert.Equal(Math.Min(k, vocab), actual.K);
            Assert.Equal(expected.Ids, actual.Ids);
            Assert.Equal(expected.Logits, actual.Logits);
            Compare.Close(expected.LogSumExp, actual.LogSumExp, 1e-5, $"lse {rows}×{vocab}", 1e-6);
            for (int r = 0; r < rows; r++) Assert.InRange(Enumerable.Range(0, actual.K).Sum(j => actual.At(r, j).Probability), 0, 1.00001);
        }
    }

    public static TheoryData<int, int, int, int> MetricShapes() => new()
    {
        { 1, 1, 1, 0 }, { 3, 10, 2, 2 }, { 4, 257, 3, 1 }, { 2, 1000, 1, 3 }, { 5, 129, 2, 0 },
    };

    internal static (float[] Logits, int[] Group, float[]? Weights, float[] Reference) MetricInputs(int rows, int vocab, int groups, int nWeights) =>
        (SparseEncodeTests.Uniform(rows * vocab, 11, 9f), Enumerable.Range(0, rows).Select(r => (r * 7 + 1) % groups).ToArray(),
         nWeights == 0 ? null : SparseEncodeTests.Uniform(groups * nWeights * vocab, 12, 2f),
         SparseEncodeTests.Uniform(groups * vocab, 13, 9f));

    internal static void AssertMetrics(LogitRowMetrics expected, LogitRowMetrics actual, string what)
    {
        Compare.Close(expected.LogSumExp, actual.LogSumExp, 1e-5, $"{what} lse", 1e-6);
        Compare.Close(expected.Expectations, actual.Expectations, 1e-6, $"{what} expectations", 1e-5);
        if (expected.Kl is null) Assert.Null(actual.Kl);
        else Compare.Close(expected.Kl, actual.Kl!, 1e-6, $"{what} kl", 1e-5);
    }

    [Theory]
    [MemberData(nameof(MetricShapes))]
    public void RowMetricsMatchTheReference(int rows, int vocab, int groups, int nWeights)
    {
        var (logits, group, weights, reference) = MetricInputs(rows, vocab, groups, nWeights);
        var cpu = new CpuBackend(2);
        foreach (var refs in new[] { reference, null })
        {
            var expected = ReductionReference.RowMetrics(logits, rows, vocab, group, weights, nWeights, refs);
            var actual = cpu.Reductions.RowMetrics(cpu.Upload(logits), rows, vocab, group, weights is null ? null : cpu.Upload(weights), nWeights,
                refs is null ? null : cpu.Upload(refs));
            AssertMetrics(expected, actual, $"{rows}×{vocab}, {groups} groups, {nWeights} weights");
        }
        // A row against its own reference has KL 0, and a probability-1 weight row (all ones) has expectation 1.
        var self = cpu.Reductions.RowMetrics(cpu.Upload(logits), 1, vocab, [0], cpu.Upload(Enumerable.Repeat(1f, vocab).ToArray()), 1, cpu.Upload(logits));
        Assert.InRange(self.Kl![0], -1e-6, 1e-6);
        Assert.InRange(self.Expectation(0, 0), 1 - 1e-6, 1 + 1e-6);
        Assert.Throws<ArgumentException>(() => cpu.Reductions.RowMetrics(cpu.Upload(logits), rows, vocab, [.. group[..^1], groups + 5], null, 0, cpu.Upload(reference)));
    }

    public static TheoryData<int, int, int> RankShapes() => new() { { 1, 1, 1 }, { 1, 2, 1 }, { 3, 7, 2 }, { 4, 33, 3 }, { 2, 100, 1 }, { 5, 129, 2 } };

    /// <summary>Logits with ties (rounded to halves), a −0 beside +0s, rows of groups, and random similarity orders.</summary>
    internal static (float[] Logits, int[] Group, int[][] Orders) RankInputs(int rows, int vocab, int groups)
    {
        var logits = SparseEncodeTests.Uniform(rows * vocab, 21, 2f).Select(v => MathF.Round(v * 2) / 2).ToArray();
        logits[0] = -0f;
        var rng = new System.Random(vocab);
        var orders = Enumerable.Range(0, groups).Select(_ => Enumerable.Range(0, vocab).OrderBy(_ => rng.Next()).ToArray()).ToArray();
        return (logits, Enumerable.Range(0, rows).Select(r => (r * 5 + 2) % groups).ToArray(), orders);
    }

    internal static void AssertRanks(RankRows expected, RankRows actual)
    {
        Assert.Equal(expected.Products, actual.Products);
        Assert.Equal(expected.RankProducts, actual.RankProducts);
        Assert.Equal(expected.Discordant, actual.Discordant);
        Assert.Equal(expected.RankDiscordant, actual.RankDiscordant);
    }

    [Theory]
    [MemberData(nameof(RankShapes))]
    public void RankStatsMatchTheReference(int rows, int vocab, int groups)
    {
        var (logits, group, orders) = RankInputs(rows, vocab, groups);
        var cpu = new CpuBackend(2);
        AssertRanks(ReductionReference.RankStats(logits, rows, vocab, group, orders), cpu.Reductions.RankStats(cpu.Upload(logits), rows, vocab, group, orders));
        // A row in its own similarity order (logits descending by the order) is concordant: no discordant pair.
        var own = new float[vocab];
        for (int i = 0; i < vocab; i++) own[orders[0][i]] = vocab - i;
        var self = cpu.Reductions.RankStats(cpu.Upload(own), 1, vocab, [0], orders);
        Assert.Equal(0, self.Discordant[0]);
        Assert.Equal(0, self.RankDiscordant[0]);
        Assert.Throws<ArgumentException>(() => cpu.Reductions.RankStats(cpu.Upload(logits), rows, vocab, group, [.. orders.Take(groups - 1), new int[vocab + 1]]));
    }
}

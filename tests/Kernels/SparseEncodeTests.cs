using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>The SAE encoder's row ops (input normalisation, activation + sparse extraction) against their scalar references
/// at odd shapes; <see cref="IlgpuBackendTests"/> runs the same sweeps on the emulated CUDA kernels.</summary>
public class SparseEncodeTests
{
    /// <summary>Values on a coarse grid (many exact ties), about half of them negative.</summary>
    public static float[] Tied(int n, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => r.Next(-8, 9) / 4f).ToArray();
    }

    public static float[] Uniform(int n, int seed, float scale = 1f)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>Rows, width and k across the segment boundary of the device kernels (256 columns) and k ≥ width.</summary>
    public static TheoryData<int, int, int> SparseShapes() => new()
    {
        { 1, 1, 1 }, { 3, 5, 2 }, { 2, 255, 7 }, { 4, 256, 1 }, { 3, 257, 16 }, { 2, 600, 50 }, { 5, 9, 9 }, { 2, 6, 11 },
    };

    internal static void AssertSameSparse(SparseRows expected, SparseRows actual, string what)
    {
        Assert.Equal(expected.Rows, actual.Rows);
        Assert.Equal(expected.Width, actual.Width);
        Assert.True(expected.RowStart.SequenceEqual(actual.RowStart), $"{what}: row starts differ");
        Assert.True(expected.Index.AsSpan(0, expected.Count).SequenceEqual(actual.Index.AsSpan(0, actual.Count)), $"{what}: indices differ");
        Assert.True(expected.Value.AsSpan(0, expected.Count).SequenceEqual(actual.Value.AsSpan(0, actual.Count)), $"{what}: values differ");
    }

    [Theory]
    [MemberData(nameof(SparseShapes))]
    public void SparsifyMatchesTheDenseReference(int rows, int width, int k)
    {
        foreach (var pre in new[] { Tied(rows * width, width), Uniform(rows * width, k, 3f) })
        {
            var threshold = Uniform(width, 99).Select(v => Math.Abs(v)).ToArray();
            var cpu = new CpuBackend(2);
            var buf = cpu.Upload(pre);
            foreach (var act in Enum.GetValues<SparseActivation>())
            {
                var expected = SaeReference.Sparsify(pre, rows, width, act, k, threshold);
                var actual = cpu.Sae.Sparsify(buf, rows, width, new SparseRule(act, k, cpu.Upload(threshold)));
                AssertSameSparse(expected, actual, $"{act} {rows}×{width} k {k}");
                Assert.Equal(expected.ToDense(), actual.ToDense());
                Assert.All(actual.Value.Take(actual.Count), v => Assert.True(v > 0));
                if (act == SparseActivation.TopK)
                    for (int r = 0; r < rows; r++) Assert.True(actual.Indices(r).Length <= Math.Min(k, width));
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 2)]
    [InlineData(4, 7)]
    [InlineData(2, 129)]
    public void NormalizeRowsMatchesTheReference(int rows, int d)
    {
        var x = Uniform(rows * d, d, 4f).Select((v, i) => v + i % 3).ToArray();   // a nonzero mean per row
        var subtract = Uniform(d, 5);
        var cpu = new CpuBackend(2);
        foreach (var norm in Enum.GetValues<RowNormalization>())
            foreach (bool center in new[] { false, true })
                foreach (var sub in new[] { null, subtract })
                {
                    if (d == 1 && norm != RowNormalization.None && center) continue;   // a centred 1-wide row is 0: no norm to divide by
                    var expected = SaeReference.NormalizeRows(x, d, norm, center, sub);
                    var y = cpu.Allocate(rows * d);
                    cpu.Sae.NormalizeRows(cpu.Upload(x), y, rows, d, norm, center, sub is null ? null : cpu.Upload(sub));
                    var actual = new float[rows * d];
                    cpu.Download(y, actual);
                    Compare.Close(expected, actual, 1e-5, $"{norm} center {center} subtract {sub is not null} {rows}×{d}", 1e-5);
                    // in place (y aliases x)
                    var inPlace = cpu.Upload(x);
                    cpu.Sae.NormalizeRows(inPlace, inPlace, rows, d, norm, center, sub is null ? null : cpu.Upload(sub));
                    cpu.Download(inPlace, actual);
                    Compare.Close(expected, actual, 1e-5, $"in place {norm} {rows}×{d}", 1e-5);
                }
    }

    [Fact]
    public void SparseRowsRoundTripsAndFindsValues()
    {
        var s = SparseRows.FromRows(6, [([1, 4], [0.5f, 2f]), ([], []), ([0, 5], [1f, 3f])]);
        Assert.Equal(4, s.Count);
        Assert.Equal([0, 2, 2, 4], s.RowStart);
        Assert.Equal(2f, s.At(0, 4));
        Assert.Equal(0f, s.At(0, 3));
        Assert.Equal(0f, s.At(1, 0));
        Assert.Equal(3f, s.At(2, 5));
        Assert.Equal(new float[] { 0, 0.5f, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3 }, s.ToDense());
        Assert.Throws<ArgumentException>(() => new SparseRows(2, 6, [0, 1], [0], [1f]));
    }
}

using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>Every CPU op against its scalar reference, sweeping sizes so that every vector and tile tail is hit.</summary>
public class CpuKernelTests
{
    static float[] Random(int n, int seed, float scale = 1f)
    {
        var r = new System.Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    public static TheoryData<int, int, int> GemmShapes()
    {
        var data = new TheoryData<int, int, int>();
        // m crosses the 6- and 12-row strips and the 96-row block; k crosses the 768 block; n crosses 16-wide panels and 64-panel chunks.
        foreach (var (m, k, n) in new[] { (1, 1, 1), (0, 5, 7), (5, 3, 15), (6, 16, 16), (7, 17, 17), (13, 31, 33), (12, 7, 40),
                     (145, 9, 18), (151, 300, 47), (3, 513, 5), (19, 64, 1025), (6, 257, 31), (25, 1537, 20), (24, 769, 16) })
            data.Add(m, k, n);
        return data;
    }

    [Theory]
    [MemberData(nameof(GemmShapes))]
    public void GemmMatchesReference(int m, int k, int n)
    {
        var a = Random(m * k, 1);
        var bias = Random(n, 3);
        foreach (var layout in new[] { WeightLayout.InOut, WeightLayout.OutIn })
        {
            var w = Random(k * n, 2);
            var expected = new float[m * n];
            LinearReference.Forward(a, w, layout, bias, expected, m, k, n);
            var packed = Gemm.Pack(w, k, n, layout);
            // Both micro-kernels where the CPU has AVX-512 (12×16 Vector512, 6×16 Vector256), else the 6×16 one.
            foreach (bool wide in System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? new[] { true, false } : [false])
                foreach (int threads in new[] { 1, 2, 5 })
                {
                    var c = Enumerable.Repeat(float.NaN, m * n).ToArray();   // output must be fully overwritten
                    Gemm.Multiply(a, packed, bias, c, m, threads, wide);
                    Compare.Close(expected, c, 1e-5 * Math.Sqrt(k) + 1e-6, $"gemm {m}x{k}x{n} {layout} {threads} threads{(wide ? " (12×16)" : "")}", 1e-5);
                }
            var noBias = new float[m * n];
            LinearReference.Forward(a, w, layout, default, expected, m, k, n);
            Gemm.Multiply(a, packed, default, noBias, m, 2);
            Compare.Close(expected, noBias, 1e-5 * Math.Sqrt(k) + 1e-6, $"gemm {m}x{k}x{n} {layout} no bias", 1e-5);
        }
    }

    [Fact]
    public void GemmRejectsWrongSizes()
    {
        var packed = Gemm.Pack(new float[12], 3, 4, WeightLayout.InOut);
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[5], packed, default, new float[8], 2, 1));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[6], packed, default, new float[7], 2, 1));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[6], packed, new float[3], new float[8], 2, 1));
        Assert.Throws<ArgumentException>(() => Gemm.Pack(new float[11], 3, 4, WeightLayout.InOut));
    }

    [Fact]
    public void LayerNormMatchesReferenceWithTaps()
    {
        foreach (int d in new[] { 1, 2, 7, 8, 9, 31, 64, 65, 768 + 3 })
        {
            int rows = 5;
            var x = Random(rows * d, d, 3f);
            for (int i = 0; i < x.Length; i++) x[i] += 10f;              // a large mean: the variance must not cancel badly
            var g = Random(d, d + 1); var b = Random(d, d + 2);
            var expected = new float[rows * d];
            NormReference.LayerNorm(x, g, b, expected, rows, d, 1e-5f);
            var y = new float[rows * d]; var normed = new float[rows * d]; var scale = new float[rows];
            LayerNorm.Forward(x, g, b, y, rows, d, 1e-5f, normed, scale);
            Compare.Close(expected, y, 2e-5, $"layernorm d={d}", 1e-5);
            for (int i = 0; i < y.Length; i++)
                Assert.True(Math.Abs(normed[i] * g[i % d] + b[i % d] - y[i]) < 1e-5, $"normalized tap d={d} at {i}");
            for (int r = 0; r < rows; r++)
            {
                double mean = 0, var = 0;
                for (int i = 0; i < d; i++) mean += x[r * d + i];
                mean /= d;
                for (int i = 0; i < d; i++) var += Math.Pow(x[r * d + i] - mean, 2);
                Assert.Equal(Math.Sqrt(var / d + 1e-5), scale[r], 4);
            }
        }
    }

    [Fact]
    public void AddLayerNormEqualsAddThenLayerNorm()
    {
        using var b = new CpuBackend(3);
        foreach (int d in new[] { 1, 9, 64, 77 })
        {
            int rows = 11;
            var (x, r, g, bt) = (Random(rows * d, d, 2f), Random(rows * d, d + 1, 2f), Random(d, 2), Random(d, 3));
            var (xb, rb, gb, bb) = (b.Upload(x), b.Upload(r), b.Upload(g), b.Upload(bt));
            var sum1 = b.Allocate(rows * d); var y1 = b.Allocate(rows * d); var n1 = b.Allocate(rows * d); var s1 = b.Allocate(rows);
            b.Rows.Add(xb, rb, sum1, rows * d);
            b.Norm.LayerNorm(sum1, gb, bb, y1, rows, d, 1e-5f, n1, s1);
            var y2 = b.Allocate(rows * d); var n2 = b.Allocate(rows * d); var s2 = b.Allocate(rows);
            b.Norm.AddLayerNorm(xb, rb, rb, gb, bb, y2, rows, d, 1e-5f, n2, s2);       // sum written over b, as the forward does
            float[] Get(DeviceBuffer buf, int n) { var a = new float[n]; b.Download(buf, a); return a; }
            Assert.Equal(Get(sum1, rows * d), Get(rb, rows * d));
            Assert.Equal(Get(y1, rows * d), Get(y2, rows * d));
            Assert.Equal(Get(n1, rows * d), Get(n2, rows * d));
            Assert.Equal(Get(s1, rows), Get(s2, rows));
        }
    }

    [Theory]
    [InlineData(Activation.GeluTanh)]
    [InlineData(Activation.GeluErf)]
    [InlineData(Activation.Relu)]
    public void ActivationsMatchReferenceAtEveryLength(Activation act)
    {
        for (int n = 0; n <= 257; n++)
        {
            var x = Random(n, n, 6f);
            var y = new float[n];
            Activations.Apply(x, y, act);
            var expected = x.Select(v => ActivationReference.Apply(v, act)).ToArray();
            Compare.Close(expected, y, 2e-6, $"{act} n={n}", 2e-6);
        }
        // In place, and the defined special values.
        var special = new[] { 0f, -0f, 1e-30f, -50f, 50f, float.PositiveInfinity, float.NegativeInfinity, float.NaN };
        var outp = (float[])special.Clone();
        Activations.Apply(outp, outp, act);
        Assert.Equal(0f, outp[0]);
        Assert.Equal(0f, outp[3], 5);
        Assert.Equal(50f, outp[4], 4);
        Assert.Equal(float.PositiveInfinity, outp[5]);
        Assert.True(float.IsNaN(outp[7]));
    }

    [Fact]
    public void ErfIsAccurateAcrossItsRange()
    {
        for (double x = -6; x <= 6; x += 0.01)
            Assert.True(Math.Abs(Activations.Erf(x) - ActivationReference.Erf(x)) < 2e-7, $"erf({x})");
        Assert.Equal(0.8427007929497149, ActivationReference.Erf(1.0), 14);   // erf(1), tabulated
    }

    public static TheoryData<int, int, int, int> AttentionShapes() => new()
    {
        { 1, 1, 1, 1 }, { 1, 5, 1, 8 }, { 2, 7, 3, 9 }, { 3, 9, 2, 17 }, { 1, 33, 4, 16 }, { 2, 4, 6, 64 }, { 1, 130, 1, 7 },
    };

    [Theory]
    [MemberData(nameof(AttentionShapes))]
    public void CausalAttentionMatchesReference(int batch, int seq, int heads, int dHead)
    {
        int n = batch * seq * heads * dHead;
        var q = Random(n, 1, 2f); var k = Random(n, 2, 2f); var v = Random(n, 3);
        var z = new float[n]; var pattern = new float[batch * heads * seq * seq];
        var zRef = new float[n]; var pRef = new float[pattern.Length];
        float scale = 1f / MathF.Sqrt(dHead);
        AttentionReference.Causal(q, k, v, zRef, batch, seq, heads, dHead, scale, pRef);
        using var backend = new CpuBackend(3);
        var (qb, kb, vb, zb, pb) = (backend.Upload(q), backend.Upload(k), backend.Upload(v), backend.Allocate(n), backend.Allocate(pattern.Length));
        backend.Attention.Causal(qb, kb, vb, zb, batch, seq, heads, dHead, scale, pb);
        backend.Download(zb, z);
        backend.Download(pb, pattern);
        Compare.Close(zRef, z, 2e-6, $"attention z b{batch} t{seq} h{heads} dh{dHead}", 1e-5);
        Compare.Close(pRef, pattern, 2e-6, $"attention pattern b{batch} t{seq} h{heads} dh{dHead}", 1e-5);
        // Without the pattern tap the output is the same.
        var zb2 = backend.Allocate(n);
        backend.Attention.Causal(qb, kb, vb, zb2, batch, seq, heads, dHead, scale);
        var z2 = new float[n];
        backend.Download(zb2, z2);
        Assert.Equal(z, z2);
    }

    public static TheoryData<int, int, int, int, int> SuffixAttentionShapes() => new()
    {
        { 1, 1, 2, 1, 1 }, { 2, 1, 7, 3, 9 }, { 1, 3, 70, 2, 17 }, { 3, 5, 9, 1, 8 }, { 1, 64, 130, 2, 16 }, { 2, 2, 64, 4, 33 },
    };

    /// <summary>The last <paramref name="queries"/> positions over all <paramref name="keys"/> keys (a pass resumed at a position,
    /// the earlier positions' K/V kept): equal to the reference, and bit for bit to those rows of the whole-sequence attention.</summary>
    [Theory]
    [MemberData(nameof(SuffixAttentionShapes))]
    public void SuffixQueriesOverKeptKeysMatchReferenceAndTheWholeSequence(int batch, int queries, int keys, int heads, int dHead)
    {
        int d = heads * dHead, nk = batch * keys * d, nq = batch * queries * d;
        var q = Random(nk, 1, 2f); var k = Random(nk, 2, 2f); var v = Random(nk, 3);
        var qTail = new float[nq];   // each batch item's last `queries` query rows
        for (int b = 0; b < batch; b++) q.AsSpan((b * keys + keys - queries) * d, queries * d).CopyTo(qTail.AsSpan(b * queries * d));
        float scale = 1f / MathF.Sqrt(dHead);
        var (zRef, pRef) = (new float[nq], new float[batch * heads * queries * keys]);
        AttentionReference.Causal(qTail, k, v, zRef, batch, queries, heads, dHead, scale, pRef, keys);
        using var backend = new CpuBackend(2);
        var (zb, pb) = (backend.Allocate(nq), backend.Allocate(pRef.Length));
        backend.Attention.Causal(backend.Upload(qTail), backend.Upload(k), backend.Upload(v), zb, batch, queries, heads, dHead, scale, pb, keys);
        var (z, pattern) = (new float[nq], new float[pRef.Length]);
        backend.Download(zb, z);
        backend.Download(pb, pattern);
        Compare.Close(zRef, z, 2e-6, $"suffix attention z b{batch} q{queries} k{keys}", 1e-5);
        Compare.Close(pRef, pattern, 2e-6, $"suffix attention pattern b{batch} q{queries} k{keys}", 1e-5);
        var (wholeZ, wholeP) = (backend.Allocate(nk), backend.Allocate((long)batch * heads * keys * keys));
        backend.Attention.Causal(backend.Upload(q), backend.Upload(k), backend.Upload(v), wholeZ, batch, keys, heads, dHead, scale, wholeP);
        var (all, allP) = (new float[nk], new float[batch * heads * keys * keys]);
        backend.Download(wholeZ, all);
        backend.Download(wholeP, allP);
        for (int b = 0; b < batch; b++)
        {
            Assert.True(all.AsSpan((b * keys + keys - queries) * d, queries * d).SequenceEqual(z.AsSpan(b * queries * d, queries * d)), $"batch {b}: z rows differ");
            for (int h = 0; h < heads; h++)
                Assert.True(allP.AsSpan(((b * heads + h) * keys + keys - queries) * keys, queries * keys)
                    .SequenceEqual(pattern.AsSpan((b * heads + h) * queries * keys, queries * keys)), $"batch {b} head {h}: pattern rows differ");
        }
        Assert.Throws<ArgumentException>(() => backend.Attention.Causal(zb, zb, zb, zb, batch, queries, heads, dHead, scale, null, queries - 1));
    }

    [Theory]
    [InlineData(1, 1, 1, 2, 2, 10000f, 0)]
    [InlineData(2, 5, 3, 16, 4, 10000f, 0)]
    [InlineData(1, 40, 2, 64, 16, 10000f, 0)]
    [InlineData(2, 9, 1, 10, 10, 500f, 0)]
    [InlineData(1, 300, 1, 8, 6, 10000f, 0)]
    [InlineData(2, 3, 2, 16, 8, 10000f, 7)]
    [InlineData(1, 1, 1, 6, 6, 500f, 299)]
    public void RotaryMatchesReference(int batch, int seq, int heads, int dHead, int rot, float rbase, int offset)
    {
        int n = batch * seq * heads * dHead;
        var x = Random(n, 5);
        var expected = new float[n];
        AttentionReference.Rotary(x, expected, batch, seq, heads, dHead, rot, rbase, offset);
        var y = new float[n];
        Attention.Rotary(x, y, batch, seq, heads, dHead, rot, rbase, offset);
        // float32 angles t·inv_freq (as HF) against double angles: the difference grows with the position.
        Compare.Close(expected, y, 2e-6 + 2e-7 * (offset + seq), $"rotary t{seq}+{offset} dh{dHead} r{rot}");
        var inPlace = (float[])x.Clone();
        Attention.Rotary(inPlace, inPlace, batch, seq, heads, dHead, rot, rbase, offset);
        Assert.Equal(y, inPlace);
        if (offset == 0) return;
        // From an offset: the same rows as the whole sequence's last positions.
        int whole = offset + seq, width = heads * dHead;
        var full = Random(batch * whole * width, 6);
        var tail = new float[n];
        for (int b = 0; b < batch; b++) full.AsSpan((b * whole + offset) * width, seq * width).CopyTo(tail.AsSpan(b * seq * width));
        Attention.Rotary(full, full, batch, whole, heads, dHead, rot, rbase);
        Attention.Rotary(tail, tail, batch, seq, heads, dHead, rot, rbase, offset);
        for (int b = 0; b < batch; b++)
            Assert.True(full.AsSpan((b * whole + offset) * width, seq * width).SequenceEqual(tail.AsSpan(b * seq * width, seq * width)), $"batch {b} rows differ");
    }

    [Fact]
    public void BackendElementwiseOpsAndGather()
    {
        using var b = new CpuBackend(2);
        var x = Random(100, 1); var y = Random(100, 2);
        var (xb, yb, sum) = (b.Upload(x), b.Upload(y), b.Allocate(100));
        b.Rows.Add(xb, yb, sum, 100);
        var s = new float[100];
        b.Download(sum, s);
        for (int i = 0; i < 100; i++) Assert.Equal(x[i] + y[i], s[i]);
        var table = b.Upload(Enumerable.Range(0, 12).Select(i => (float)i).ToArray());   // 4 rows of 3
        var g = b.Allocate(6);
        b.Rows.Gather([3, 0], table, 3, g);
        var gv = new float[6];
        b.Download(g, gv);
        Assert.Equal(new float[] { 9, 10, 11, 0, 1, 2 }, gv);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Rows.Gather([4], table, 3, g));
        var cols = b.Allocate(4);
        b.Rows.CopyColumns(table, 4, 3, 1, 1, cols);
        var cv = new float[4];
        b.Download(cols, cv);
        Assert.Equal(new float[] { 1, 4, 7, 10 }, cv);
        Assert.Throws<ArgumentException>(() => b.Rows.CopyColumns(table, 4, 3, 1, 2, cols, 2, 1));   // past the destination row
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuBackend(-1));
    }

    [Theory]
    [InlineData(1, 3, 0, 3, 3, 0)]        // a plain copy
    [InlineData(5, 7, 2, 3, 11, 8)]       // a middle block into the end of a wider row
    [InlineData(4, 9, 0, 4, 9, 5)]        // the windowed resume's use: a suffix of positions into the keys' rows
    [InlineData(3, 17, 16, 1, 1, 0)]      // one column
    public void CopyColumnsIntoColumnsOfAnotherWidthMatchesTheReference(int rows, int srcWidth, int colOffset, int width, int dstWidth, int dstOffset)
    {
        var b = new CpuBackend(2);
        var src = Random(rows * srcWidth, rows + srcWidth);
        var dst = Random(rows * dstWidth, 7);
        var y = b.Upload(dst);
        b.Rows.CopyColumns(b.Upload(src), rows, srcWidth, colOffset, width, y, dstWidth, dstOffset);
        var got = new float[rows * dstWidth];
        b.Download(y, got);
        Assert.Equal(RowsReference.CopyColumns(src, rows, srcWidth, colOffset, width, dst, dstWidth, dstOffset), got);
        if (dstOffset > 0) Assert.Equal(dst[0], got[0]);   // columns outside the block keep their values
    }
}

using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>
/// The backward ops beside their forward ops (issue #13, first step): the activations' dy·act′(x) and the layer norm's
/// input gradient from its saved taps. The scalar references are checked against central finite differences of the
/// forward definitions in double; both backends are checked against the references on odd shapes.
/// </summary>
public class BackwardOpTests
{
    static float[] Uniform(int n, int seed, float scale) => SparseEncodeTests.Uniform(n, seed, scale);

    [Fact]
    public void TheReferenceDerivativesAreTheForwardsCentralDifferences()
    {
        foreach (var act in Enum.GetValues<Activation>())
            foreach (double x in new[] { -7.5, -3, -1.1, -0.3, 0.05, 0.7, 1.9, 4, 8 })
            {
                const double h = 1e-5;
                double fd = (ActivationReference.Value(x + h, act) - ActivationReference.Value(x - h, act)) / (2 * h);
                Assert.True(Math.Abs(fd - ActivationReference.Derivative(x, act)) < 1e-8, $"{act} at {x}: {ActivationReference.Derivative(x, act)} vs {fd}");
            }
        // Layer norm: the gradient of L(x) = Σ dy·LN(x), one input coordinate at a time, with the forward in double.
        int rows = 2, d = 9;
        var xs = Uniform(rows * d, 1, 2f);
        var gamma = Uniform(d, 2, 1.5f);
        var dy = Uniform(rows * d, 3, 1f);
        var dx = new float[rows * d];
        NormReference.LayerNormBackward(xs, gamma, dy, dx, rows, d, 1e-5f);
        double Loss(double[] x)
        {
            double total = 0;
            for (int r = 0; r < rows; r++)
            {
                double mean = 0, var = 0;
                for (int i = 0; i < d; i++) mean += x[r * d + i];
                mean /= d;
                for (int i = 0; i < d; i++) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
                double s = Math.Sqrt(var / d + 1e-5);
                for (int i = 0; i < d; i++) total += dy[r * d + i] * (x[r * d + i] - mean) / s * gamma[i];
            }
            return total;
        }
        for (int j = 0; j < rows * d; j++)
        {
            var plus = xs.Select(v => (double)v).ToArray();
            var minus = (double[])plus.Clone();
            plus[j] += 1e-5;
            minus[j] -= 1e-5;
            double fd = (Loss(plus) - Loss(minus)) / 2e-5;
            Assert.True(Math.Abs(fd - dx[j]) < 1e-5 * (1 + Math.Abs(fd)), $"layer norm coordinate {j}: {dx[j]} vs {fd}");
        }
    }

    public static TheoryData<int> ActivationSizes() => new() { 1, 7, 4097, 10003 };

    [Theory]
    [MemberData(nameof(ActivationSizes))]
    public void ActivationBackwardMatchesTheReferenceOnBothBackends(int n)
    {
        var x = Uniform(n, n, 6f);
        var dy = Uniform(n, n + 1, 2f);
        using var gpu = n <= 4097 ? IlgpuBackend.CreateEmulated() : null;
        foreach (var act in Enum.GetValues<Activation>())
        {
            var expected = x.Select((v, i) => (float)(dy[i] * ActivationReference.Derivative(v, act))).ToArray();
            foreach (IBackend b in gpu is null ? [new CpuBackend(2)] : new IBackend[] { new CpuBackend(2), gpu })
            {
                var into = b.Upload(dy);   // dx aliases dy
                b.Activations.Backward(b.Upload(x), into, into, n, act);
                var got = new float[n];
                b.Download(into, got);
                Compare.Close(expected, got, 2e-6, $"{act} backward, n {n}, {b.DeviceName}", 2e-6);
            }
        }
    }

    public static TheoryData<int, int> NormShapes() => new() { { 1, 1 }, { 3, 7 }, { 5, 64 }, { 2, 768 }, { 4, 1000 } };

    [Theory]
    [MemberData(nameof(NormShapes))]
    public void LayerNormBackwardFromTheTapsMatchesTheReferenceOnBothBackends(int rows, int d)
    {
        var x = Uniform(rows * d, d, 3f);
        var gamma = Uniform(d, d + 1, 1.5f);
        var beta = Uniform(d, d + 2, 1f);
        var dy = Uniform(rows * d, d + 3, 1f);
        var expected = new float[rows * d];
        NormReference.LayerNormBackward(x, gamma, dy, expected, rows, d, 1e-5f);
        using var gpu = IlgpuBackend.CreateEmulated();
        foreach (IBackend b in new IBackend[] { new CpuBackend(2), gpu })
        {
            var (y, normalized, scale) = (b.Allocate(rows * d), b.Allocate(rows * d), b.Allocate(rows));
            b.Norm.LayerNorm(b.Upload(x), b.Upload(gamma), b.Upload(beta), y, rows, d, 1e-5f, normalized, scale);
            var dx = b.Upload(dy);   // dx aliases dy
            b.Norm.LayerNormBackward(dx, normalized, scale, b.Upload(gamma), dx, rows, d);
            var got = new float[rows * d];
            b.Download(dx, got);
            Compare.Close(expected, got, 2e-5, $"layer norm backward {rows}×{d}, {b.DeviceName}", 2e-5);
        }
    }

    public static TheoryData<int, int, int> LinearShapes() => new() { { 1, 1, 1 }, { 5, 3, 15 }, { 13, 31, 33 }, { 25, 769, 17 }, { 7, 64, 1025 } };

    [Theory]
    [MemberData(nameof(LinearShapes))]
    public void LinearBackwardIsDyTimesTheTransposedWeightOnBothBackends(int rows, int k, int n)
    {
        var dy = Uniform(rows * n, n, 1f);
        using var gpu = (long)rows * k * n <= 200_000 ? IlgpuBackend.CreateEmulated() : null;
        foreach (var layout in new[] { WeightLayout.InOut, WeightLayout.OutIn })
        {
            var w = Uniform(k * n, k, 1f);
            var expected = new float[rows * k];
            LinearReference.Backward(dy, w, layout, expected, rows, k, n);
            foreach (IBackend b in gpu is null ? [new CpuBackend(2)] : new IBackend[] { new CpuBackend(2), gpu })
            {
                var dx = b.Allocate(rows * k);
                b.Linear.Backward(b.Upload(dy), b.PackWeight(w, k, n, layout), dx, rows);
                var got = new float[rows * k];
                b.Download(dx, got);
                Compare.Close(expected, got, 1e-5 * Math.Sqrt(n) + 1e-6, $"linear backward {rows}×{k}×{n} {layout}, {b.DeviceName}", 1e-5);
            }
        }
    }

    /// <summary>Causal attention forward in double (the finite differences' function).</summary>
    static double AttentionLoss(double[] q, double[] k, double[] v, float[] dz, int seq, int nHeads, int dHead, double scale)
    {
        int d = nHeads * dHead;
        double total = 0;
        for (int h = 0; h < nHeads; h++)
            for (int t = 0; t < seq; t++)
            {
                var p = new double[t + 1];
                double max = double.NegativeInfinity, sum = 0;
                for (int s = 0; s <= t; s++)
                {
                    for (int i = 0; i < dHead; i++) p[s] += q[t * d + h * dHead + i] * k[s * d + h * dHead + i];
                    p[s] *= scale;
                    max = Math.Max(max, p[s]);
                }
                for (int s = 0; s <= t; s++) { p[s] = Math.Exp(p[s] - max); sum += p[s]; }
                for (int i = 0; i < dHead; i++)
                {
                    double z = 0;
                    for (int s = 0; s <= t; s++) z += p[s] / sum * v[s * d + h * dHead + i];
                    total += dz[t * d + h * dHead + i] * z;
                }
            }
        return total;
    }

    [Fact]
    public void TheAttentionReferenceGradientsAreTheForwardsCentralDifferences()
    {
        int seq = 5, nHeads = 2, dHead = 3, n = seq * nHeads * dHead;
        double scale = 1 / Math.Sqrt(dHead);
        var (q, k, v, dz) = (Uniform(n, 31, 1.5f), Uniform(n, 32, 1.5f), Uniform(n, 33, 1f), Uniform(n, 34, 1f));
        var (dq, dk, dv) = (new float[n], new float[n], new float[n]);
        AttentionReference.CausalBackward(q, k, v, dz, dq, dk, dv, 1, seq, nHeads, dHead, scale);
        double[] D(float[] a) => a.Select(x => (double)x).ToArray();
        for (int which = 0; which < 3; which++)
            for (int j = 0; j < n; j++)
            {
                var inputs = new[] { D(q), D(k), D(v) };
                var minus = new[] { D(q), D(k), D(v) };
                inputs[which][j] += 1e-5;
                minus[which][j] -= 1e-5;
                double fd = (AttentionLoss(inputs[0], inputs[1], inputs[2], dz, seq, nHeads, dHead, scale)
                           - AttentionLoss(minus[0], minus[1], minus[2], dz, seq, nHeads, dHead, scale)) / 2e-5;
                float got = (which == 0 ? dq : which == 1 ? dk : dv)[j];
                Assert.True(Math.Abs(fd - got) < 1e-5 * (1 + Math.Abs(fd)), $"d{"qkv"[which]}[{j}]: {got} vs {fd}");
            }
    }

    public static TheoryData<int, int, int, int> AttentionShapes() => new()
    {
        { 1, 1, 1, 1 }, { 2, 7, 3, 8 }, { 1, 13, 2, 64 }, { 1, 128, 2, 16 },   // the last: a long sequence
    };

    [Theory]
    [MemberData(nameof(AttentionShapes))]
    public void AttentionBackwardMatchesTheReferenceOnBothBackends(int batch, int seq, int nHeads, int dHead)
    {
        int n = batch * seq * nHeads * dHead;
        float scale = 1f / MathF.Sqrt(dHead);
        var (q, k, v, dz) = (Uniform(n, seq, 2f), Uniform(n, seq + 1, 2f), Uniform(n, seq + 2, 1f), Uniform(n, seq + 3, 1f));
        var (eq, ek, ev) = (new float[n], new float[n], new float[n]);
        AttentionReference.CausalBackward(q, k, v, dz, eq, ek, ev, batch, seq, nHeads, dHead, scale);
        using var gpu = seq <= 13 ? IlgpuBackend.CreateEmulated() : null;
        foreach (IBackend b in gpu is null ? [new CpuBackend(2)] : new IBackend[] { new CpuBackend(2), gpu })
        {
            var (dq, dk, dv) = (b.Allocate(n), b.Allocate(n), b.Allocate(n));
            b.Attention.CausalBackward(b.Upload(q), b.Upload(k), b.Upload(v), b.Upload(dz), dq, dk, dv, batch, seq, nHeads, dHead, scale);
            foreach (var (name, expected, got) in new[] { ("dq", eq, dq), ("dk", ek, dk), ("dv", ev, dv) })
            {
                var host = new float[n];
                b.Download(got, host);
                Compare.Close(expected, host, 2e-5, $"attention {name} {batch}×{seq}×{nHeads}×{dHead}, {b.DeviceName}", 2e-5);
            }
        }
    }

    [Theory]
    [InlineData(4, 0)]
    [InlineData(8, 5)]   // partial rotary from a position offset
    public void RotaryBackwardIsTheTransposedRotationOnBothBackends(int rotaryDim, int offset)
    {
        int batch = 2, seq = 6, nHeads = 3, dHead = 8, n = batch * seq * nHeads * dHead;
        var dy = Uniform(n, rotaryDim, 1f);
        var expected = new float[n];
        AttentionReference.RotaryBackward(dy, expected, batch, seq, nHeads, dHead, rotaryDim, 10000.0, offset);
        using var gpu = IlgpuBackend.CreateEmulated();
        foreach (IBackend b in new IBackend[] { new CpuBackend(2), gpu })
        {
            var dx = b.Upload(dy);   // in place
            b.Attention.RotaryBackward(dx, dx, batch, seq, nHeads, dHead, rotaryDim, 10000f, offset);
            var got = new float[n];
            b.Download(dx, got);
            Compare.Close(expected, got, 1e-5, $"rotary backward, {b.DeviceName}", 1e-5);
            // Rᵀ·R = 1: the backward undoes the forward.
            var back = b.Allocate(n);
            b.Attention.Rotary(dx, back, batch, seq, nHeads, dHead, rotaryDim, 10000f, offset);
            b.Download(back, got);
            Compare.Close(dy, got, 1e-5, $"rotary forward after backward, {b.DeviceName}", 1e-5);
        }
        // ⟨R·x, y⟩ = ⟨x, Rᵀ·y⟩ in the reference: the backward is the forward's transpose.
        var x = Uniform(n, 77, 1f);
        var rx = new float[n];
        AttentionReference.Rotary(x, rx, batch, seq, nHeads, dHead, rotaryDim, 10000.0, offset);
        double left = 0, right = 0;
        for (int i = 0; i < n; i++) { left += (double)rx[i] * dy[i]; right += (double)x[i] * expected[i]; }
        Assert.Equal(left, right, 4);
    }
}

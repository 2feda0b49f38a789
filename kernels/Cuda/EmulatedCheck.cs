using PolyEngine.Kernels.Cpu;

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// Runs every ILGPU kernel family once on ILGPU's CPU accelerator (warp 32) at small odd shapes and compares it with the
/// CPU backend (whose ops are tested against their scalar references): the functional half of `kernels check`.
/// </summary>
public static class EmulatedCheck
{
    public static IReadOnlyList<(string Name, bool Ok, string Detail)> Run()
    {
        var results = new List<(string, bool, string)>();
        using var gpu = IlgpuBackend.CreateEmulated();
        var cpu = new CpuBackend(1);
        var rng = new Random(7);
        float[] R(int n, float s = 1f) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * s).ToArray();
        float[] Get(IBackend b, DeviceBuffer buf, int n) { var a = new float[n]; b.Download(buf, a); return a; }
        void Check(string name, Func<IBackend, float[]> op, double tol)
        {
            try
            {
                var expected = op(cpu);
                var actual = op(gpu);
                double max = expected.Zip(actual, (e, a) => Math.Abs((double)e - a)).DefaultIfEmpty(0).Max();
                results.Add((name, max <= tol, $"max |diff| {max:g3} vs cpu backend (tol {tol:g2})"));
            }
            catch (Exception e)
            {
                results.Add((name, false, $"{e.GetType().Name}: {e.Message.Split('\n')[0]}"));
            }
        }
        const int rows = 7, d = 19, n = 23, batch = 2, seq = 5, heads = 3, dh = 8;
        var x = R(rows * d, 2f); var w = R(d * n); var bias = R(n); var g = R(d); var bt = R(d);
        foreach (var variant in new[] { GemmVariant.Tiled, GemmVariant.Naive })
        {
            gpu.Gemm = variant;
            Check($"GemmKernels.{variant}", b => { var y = b.Allocate(rows * n); b.Linear(b.Upload(x), b.PackWeight(w, d, n, WeightLayout.InOut), b.Upload(bias), y, rows); return Get(b, y, rows * n); }, 1e-5);
        }
        gpu.Gemm = GemmVariant.Tiled;
        Check("GemmKernels.SetRows", b =>
        {
            if (b is IlgpuBackend ib) { var y = ib.Allocate(rows * n); ib.SetRows(ib.Upload(bias), n, y, rows); return Get(ib, y, rows * n); }
            return Enumerable.Range(0, rows * n).Select(i => bias[i % n]).ToArray();
        }, 0);
        Check("LayerNormKernels.Forward", b => { var y = b.Allocate(rows * d); b.LayerNorm(b.Upload(x), b.Upload(g), b.Upload(bt), y, rows, d, 1e-5f); return Get(b, y, rows * d); }, 1e-5);
        Check("LayerNormKernels.AddForward", b =>
        {
            var sum = b.Allocate(rows * d); var y = b.Allocate(rows * d);
            b.AddLayerNorm(b.Upload(x), b.Upload(x.Reverse().ToArray()), sum, b.Upload(g), b.Upload(bt), y, rows, d, 1e-5f);
            return Get(b, sum, rows * d).Concat(Get(b, y, rows * d)).ToArray();
        }, 1e-5);
        foreach (var act in Enum.GetValues<Activation>())
            Check($"ElementwiseKernels.Activate({act})", b => { var y = b.Allocate(x.Length); b.Activate(b.Upload(x), y, x.Length, act); return Get(b, y, x.Length); }, 2e-6);
        Check("ElementwiseKernels.Add", b => { var y = b.Allocate(x.Length); b.Add(b.Upload(x), b.Upload(x), y, x.Length); return Get(b, y, x.Length); }, 0);
        Check("ElementwiseKernels.Gather", b => { var y = b.Allocate(3 * d); b.Gather([6, 0, 3], b.Upload(x), d, y); return Get(b, y, 3 * d); }, 0);
        Check("ElementwiseKernels.CopyColumns", b => { var y = b.Allocate(rows * 4); b.CopyColumns(b.Upload(x), rows, d, 5, 4, y); return Get(b, y, rows * 4); }, 0);
        int hn = batch * seq * heads * dh;
        var q = R(hn, 2f); var k = R(hn, 2f); var v = R(hn);
        Check("AttentionKernels.Rotary", b => { var y = b.Allocate(hn); b.Rotary(b.Upload(q), y, batch, seq, heads, dh, 4, 10000f); return Get(b, y, hn); }, 1e-6);
        foreach (var attention in Enum.GetValues<AttentionVariant>())
        {
            gpu.Attention = attention;
            Check(attention == AttentionVariant.Fused ? "AttentionKernels.Causal" : "GemmKernels.StridedBatched+AttentionKernels.CausalSoftmax", b =>
            {
                var z = b.Allocate(hn); var p = b.Allocate(batch * heads * seq * seq);
                b.CausalAttention(b.Upload(q), b.Upload(k), b.Upload(v), z, batch, seq, heads, dh, 0.35f, p);
                return Get(b, z, hn).Concat(Get(b, p, batch * heads * seq * seq)).ToArray();
            }, 2e-6);
        }
        var (mul, add, patch) = (R(batch * heads * dh), R(batch * heads * dh), R(hn));
        Check("EditKernels.EditRows", b =>
        {
            var y = b.Upload(q);
            b.EditRows(y, batch, seq, heads * dh, new RowEdit(b.Upload(mul), b.Upload(add), false, [1, 0]));
            b.EditRows(y, batch, seq, heads * dh, new RowEdit(null, b.Upload(patch), true, [0, 3]));
            return Get(b, y, hn);
        }, 1e-6);
        var logits = R(3 * 1000, 5f);
        Check("LogitKernels.LogSumExp+SaeKernels.TopK", b =>
        {
            var t = b.TopLogits(b.Upload(logits), 3, 1000, 7);
            return t.Ids.Select(i => (float)i).Concat(t.Logits).Concat(t.LogSumExp).ToArray();
        }, 2e-5);
        var pre = R(rows * 300, 2f);   // two device segments per row
        var threshold = R(300).Select(MathF.Abs).ToArray();
        Check("SaeKernels.NormalizeRows", b =>
        {
            var y = b.Allocate(rows * d);
            b.NormalizeRows(b.Upload(x), y, rows, d, RowNormalization.LayerNorm, true, b.Upload(g));
            return Get(b, y, rows * d);
        }, 1e-5);
        foreach (var act in Enum.GetValues<SparseActivation>())
            Check($"SaeKernels.{(act == SparseActivation.TopK ? "TopK" : "CountFiring+Compact")}({act})", b =>
            {
                var s = b.Sparsify(b.Upload(pre), rows, 300, new SparseRule(act, 9, b.Upload(threshold)));
                return s.ToDense().Concat(s.RowStart.Select(v => (float)v)).ToArray();
            }, 0);
        return results;
    }
}

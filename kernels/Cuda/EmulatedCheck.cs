using PolyEngine.Kernels.Reference;

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// Runs every ILGPU kernel family once on ILGPU's CPU accelerator (warp 32) at small odd shapes and compares it with the
/// scalar references (Reference/): the functional half of `kernels check`. No other backend is involved.
/// </summary>
public static class EmulatedCheck
{
    public static IReadOnlyList<(string Name, bool Ok, string Detail)> Run()
    {
        var results = new List<(string, bool, string)>();
        using var gpu = IlgpuBackend.CreateEmulated();
        var rng = new Random(7);
        float[] R(int n, float s = 1f) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * s).ToArray();
        float[] Get(DeviceBuffer buf, int n) { var a = new float[n]; gpu.Download(buf, a); return a; }
        DeviceBuffer Up(float[] a) => gpu.Upload(a);
        void Check(string name, Func<float[]> expected, Func<float[]> actual, double tol)
        {
            try
            {
                var e = expected();
                var a = actual();
                double max = e.Length != a.Length ? double.PositiveInfinity : e.Zip(a, (x, y) => Math.Abs((double)x - y)).DefaultIfEmpty(0).Max();
                results.Add((name, max <= tol, $"max |diff| {max:g3} vs the scalar reference (tol {tol:g2})"));
            }
            catch (Exception ex)
            {
                results.Add((name, false, $"{ex.GetType().Name}: {ex.Message.Split('\n')[0]}"));
            }
        }
        const int rows = 7, d = 19, n = 23, batch = 2, seq = 5, heads = 3, dh = 8;
        var x = R(rows * d, 2f); var w = R(d * n); var bias = R(n); var g = R(d); var bt = R(d);
        float[] Linear() { var y = new float[rows * n]; LinearReference.Forward(x, w, WeightLayout.InOut, bias, y, rows, d, n); return y; }
        foreach (var variant in new[] { GemmVariant.Tiled, GemmVariant.Naive })
            Check($"GemmKernels.{variant}", Linear, () =>
            {
                gpu.Gemm = variant;
                var y = gpu.Allocate(rows * n);
                gpu.Linear.Forward(Up(x), gpu.PackWeight(w, d, n, WeightLayout.InOut), Up(bias), y, rows);
                return Get(y, rows * n);
            }, 1e-5);
        gpu.Gemm = GemmVariant.Tiled;
        Check("GemmKernels.StridedBatched (linear backward, dx = dy·Wᵀ)", () =>
        {
            var dx = new float[rows * d];
            LinearReference.Backward(bias.Concat(Enumerable.Repeat(0.5f, rows * n - n)).ToArray(), w, WeightLayout.InOut, dx, rows, d, n);
            return dx;
        }, () =>
        {
            var dx = gpu.Allocate(rows * d);
            gpu.Linear.Backward(Up([.. bias, .. Enumerable.Repeat(0.5f, rows * n - n)]), gpu.PackWeight(w, d, n, WeightLayout.InOut), dx, rows);
            return Get(dx, rows * d);
        }, 1e-5);
        Check("GemmKernels.SetRows", () => Enumerable.Range(0, rows * n).Select(i => bias[i % n]).ToArray(),
            () => { var y = gpu.Allocate(rows * n); gpu.SetRows(Up(bias), n, y, rows); return Get(y, rows * n); }, 0);
        float[] Norm(float[] input) { var y = new float[rows * d]; NormReference.LayerNorm(input, g, bt, y, rows, d, 1e-5f); return y; }
        Check("LayerNormKernels.Forward", () => Norm(x),
            () => { var y = gpu.Allocate(rows * d); gpu.Norm.LayerNorm(Up(x), Up(g), Up(bt), y, rows, d, 1e-5f); return Get(y, rows * d); }, 1e-5);
        var xr = x.Reverse().ToArray();
        var sum = x.Zip(xr, (a, b) => a + b).ToArray();
        Check("LayerNormKernels.AddForward", () => [.. sum, .. Norm(sum)], () =>
        {
            var s = gpu.Allocate(rows * d); var y = gpu.Allocate(rows * d);
            gpu.Norm.AddLayerNorm(Up(x), Up(xr), s, Up(g), Up(bt), y, rows, d, 1e-5f);
            return [.. Get(s, rows * d), .. Get(y, rows * d)];
        }, 1e-5);
        foreach (var act in Enum.GetValues<Activation>())
            Check($"ElementwiseKernels.Activate({act})", () => x.Select(v => ActivationReference.Apply(v, act)).ToArray(),
                () => { var y = gpu.Allocate(x.Length); gpu.Activations.Forward(Up(x), y, x.Length, act); return Get(y, x.Length); }, 2e-6);
        foreach (var act in Enum.GetValues<Activation>())
            Check($"ElementwiseKernels.ActivateBackward({act})", () => x.Select((v, i) => (float)(x[(i + 1) % x.Length] * ActivationReference.Derivative(v, act))).ToArray(),
                () =>
                {
                    var dy = Up([.. x.Skip(1), x[0]]);
                    gpu.Activations.Backward(Up(x), dy, dy, x.Length, act);
                    return Get(dy, x.Length);
                }, 2e-6);
        Check("LayerNormKernels.Backward", () =>
        {
            var dx = new float[rows * d];
            NormReference.LayerNormBackward(x, g, [.. x.Skip(3), .. x.Take(3)], dx, rows, d, 1e-5f);
            return dx;
        }, () =>
        {
            var (y, n, s) = (gpu.Allocate(rows * d), gpu.Allocate(rows * d), gpu.Allocate(rows));
            gpu.Norm.LayerNorm(Up(x), Up(g), Up(bt), y, rows, d, 1e-5f, n, s);
            var dx = gpu.Allocate(rows * d);
            gpu.Norm.LayerNormBackward(Up([.. x.Skip(3), .. x.Take(3)]), n, s, Up(g), dx, rows, d);
            return Get(dx, rows * d);
        }, 2e-5);
        Check("ElementwiseKernels.Add", () => x.Select(v => v + v).ToArray(),
            () => { var y = gpu.Allocate(x.Length); gpu.Rows.Add(Up(x), Up(x), y, x.Length); return Get(y, x.Length); }, 0);
        Check("ElementwiseKernels.Gather", () => RowsReference.Gather([6, 0, 3], x, d),
            () => { var y = gpu.Allocate(3 * d); gpu.Rows.Gather([6, 0, 3], Up(x), d, y); return Get(y, 3 * d); }, 0);
        Check("ElementwiseKernels.CopyColumns", () => RowsReference.CopyColumns(x, rows, d, 5, 4),
            () => { var y = gpu.Allocate(rows * 4); gpu.Rows.CopyColumns(Up(x), rows, d, 5, 4, y); return Get(y, rows * 4); }, 0);
        Check("ElementwiseKernels.CopyColumns (into columns of a wider row)", () => RowsReference.CopyColumns(x, rows, d, 5, 4, x, d, 2),
            () => { var y = Up(x); gpu.Rows.CopyColumns(Up(x), rows, d, 5, 4, y, d, 2); return Get(y, rows * d); }, 0);
        Check("Rows.Broadcast (views)", () => [.. x.Skip(d).Take(2 * d), .. x.Skip(d).Take(2 * d), .. x.Skip(d).Take(2 * d)], () =>
        {
            var y = gpu.Allocate(6 * d);
            gpu.Rows.Broadcast(Up(x).Slice(d, 2 * d), 2 * d, 3, y);
            return Get(y, 6 * d);
        }, 0);
        int hn = batch * seq * heads * dh;
        var q = R(hn, 2f); var k = R(hn, 2f); var v = R(hn);
        Check("AttentionKernels.Rotary (backward, positions from 5)", () => { var y = new float[hn]; AttentionReference.RotaryBackward(q, y, batch, seq, heads, dh, 4, 10000.0, 5); return y; },
            () => { var y = gpu.Allocate(hn); gpu.Attention.RotaryBackward(Up(q), y, batch, seq, heads, dh, 4, 10000f, 5); return Get(y, hn); }, 1e-5);
        Check("AttentionKernels.CausalBackwardRows+Keys", () =>
        {
            var (gq, gk, gv) = (new float[hn], new float[hn], new float[hn]);
            AttentionReference.CausalBackward(q, k, v, [.. v.Skip(1), v[0]], gq, gk, gv, batch, seq, heads, dh, 1.0 / Math.Sqrt(dh));
            return [.. gq, .. gk, .. gv];
        }, () =>
        {
            var (gq, gk, gv) = (gpu.Allocate(hn), gpu.Allocate(hn), gpu.Allocate(hn));
            gpu.Attention.CausalBackward(Up(q), Up(k), Up(v), Up([.. v.Skip(1), v[0]]), gq, gk, gv, batch, seq, heads, dh, 1f / MathF.Sqrt(dh));
            return [.. Get(gq, hn), .. Get(gk, hn), .. Get(gv, hn)];
        }, 2e-5);
        foreach (int offset in new[] { 0, 5 })
            Check($"AttentionKernels.Rotary (positions from {offset})", () => { var y = new float[hn]; AttentionReference.Rotary(q, y, batch, seq, heads, dh, 4, 10000.0, offset); return y; },
                () => { var y = gpu.Allocate(hn); gpu.Attention.Rotary(Up(q), y, batch, seq, heads, dh, 4, 10000f, offset); return Get(y, hn); }, 1e-5);
        foreach (int queries in new[] { seq, 2 })   // the whole sequence, and its last two positions over all its keys
            foreach (var attention in Enum.GetValues<AttentionVariant>())
            {
                int qn = batch * queries * heads * dh, pn = batch * heads * queries * seq;
                var qs = q[..qn];
                Check((attention == AttentionVariant.Fused ? "AttentionKernels.Causal" : "GemmKernels.StridedBatched+AttentionKernels.CausalSoftmax")
                    + (queries < seq ? $" ({queries} queries over {seq} keys)" : ""), () =>
                {
                    var z = new float[qn]; var p = new float[pn];
                    AttentionReference.Causal(qs, k, v, z, batch, queries, heads, dh, 0.35f, p, seq);
                    return [.. z, .. p];
                }, () =>
                {
                    gpu.AttentionKind = attention;
                    var z = gpu.Allocate(qn); var p = gpu.Allocate(pn);
                    gpu.Attention.Causal(Up(qs), Up(k), Up(v), z, batch, queries, heads, dh, 0.35f, p, seq);
                    return [.. Get(z, qn), .. Get(p, pn)];
                }, 2e-6);
            }
        var (mul, add, patch) = (R(batch * heads * dh), R(batch * heads * dh), R(hn));
        Check("EditKernels.EditRows", () =>
            RowsReference.Edit(RowsReference.Edit(q, batch, seq, heads * dh, mul, add, false, [1, 0]), batch, seq, heads * dh, null, patch, true, [0, 3]), () =>
        {
            var y = Up(q);
            gpu.Rows.Edit(y, batch, seq, heads * dh, new RowEdit(Up(mul), Up(add), false, [1, 0]));
            gpu.Rows.Edit(y, batch, seq, heads * dh, new RowEdit(null, Up(patch), true, [0, 3]));
            return Get(y, hn);
        }, 1e-6);
        var logits = R(3 * 1000, 5f);
        static float[] Flat(TopLogitRows t) => [.. t.Ids.Select(i => (float)i), .. t.Logits, .. t.LogSumExp];
        Check("LogitKernels.LogSumExp+SaeKernels.TopK", () => Flat(ReductionReference.TopLogits(logits, 3, 1000, 7)),
            () => Flat(gpu.Reductions.TopLogits(Up(logits), 3, 1000, 7)), 2e-5);
        static float[] Metrics(LogitRowMetrics m) => [.. m.LogSumExp, .. m.Expectations, .. m.Kl!];
        var (metricWeights, reference) = (R(2 * 2 * 1000).Select(MathF.Abs).ToArray(), R(2 * 1000, 5f));
        int[] groupOf = [1, 0, 1];
        Check("LogitKernels.RowMetrics", () => Metrics(ReductionReference.RowMetrics(logits, 3, 1000, groupOf, metricWeights, 2, reference)),
            () => Metrics(gpu.Reductions.RowMetrics(Up(logits), 3, 1000, groupOf, Up(metricWeights), 2, Up(reference))), 2e-5);
        // Rank statistics: 300 tokens, logits rounded to give ties (and −0 beside +0), two groups' similarity orders.
        var tied = R(3 * 300, 2f).Select(v => MathF.Round(v * 2) / 2).ToArray();
        tied[5] = -0f;
        int[][] orders = [Enumerable.Range(0, 300).Reverse().ToArray(), Enumerable.Range(0, 300).Select(t => t * 7 % 300).ToArray()];
        static float[] Ranked(RankRows s) => [.. s.Products, .. s.RankProducts, .. s.Discordant, .. s.RankDiscordant];
        Check("RankKernels (radix sort, gather, merge passes)", () => Ranked(ReductionReference.RankStats(tied, 3, 300, groupOf, orders)),
            () => Ranked(gpu.Reductions.RankStats(Up(tied), 3, 300, groupOf, orders)), 0);
        var pre = R(rows * 300, 2f);   // two device segments per row
        var threshold = R(300).Select(MathF.Abs).ToArray();
        Check("SaeKernels.NormalizeRows", () => SaeReference.NormalizeRows(x, d, RowNormalization.LayerNorm, true, g), () =>
        {
            var y = gpu.Allocate(rows * d);
            gpu.Sae.NormalizeRows(Up(x), y, rows, d, RowNormalization.LayerNorm, true, Up(g));
            return Get(y, rows * d);
        }, 1e-5);
        static float[] Sparse(SparseRows s) => [.. s.ToDense(), .. s.RowStart.Select(v => (float)v)];
        foreach (var act in Enum.GetValues<SparseActivation>())
            Check($"SaeKernels.{(act == SparseActivation.TopK ? "TopK" : "CountFiring+Compact")}({act})",
                () => Sparse(SaeReference.Sparsify(pre, rows, 300, act, 9, threshold)),
                () => Sparse(gpu.Sae.Sparsify(Up(pre), rows, 300, new SparseRule(act, 9, Up(threshold)))), 0);
        return results;
    }
}

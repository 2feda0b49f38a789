using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>
/// The ILGPU (CUDA) kernels run on ILGPU's CPU accelerator, warp 32 — the emulated CUDA path — against the CPU backend's
/// ops and the HF golden fixtures. Tiny shapes: every lane is an OS thread.
/// </summary>
public sealed class IlgpuBackendTests(IlgpuBackendTests.Emulator emulator) : IClassFixture<IlgpuBackendTests.Emulator>
{
    /// <summary>One emulated accelerator for the whole class: it owns 256 OS threads.</summary>
    public sealed class Emulator : IDisposable
    {
        public IlgpuBackend Backend { get; } = IlgpuBackend.CreateEmulated();
        public void Dispose() => Backend.Dispose();
    }

    readonly IlgpuBackend _gpu = emulator.Backend;
    readonly CpuBackend _cpu = new(1);

    static float[] Random(int n, int seed, float scale = 1f)
    {
        var r = new System.Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    float[] Get(IBackend b, DeviceBuffer buf, int n) { var a = new float[n]; b.Download(buf, a); return a; }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(5, 7, 17)]
    [InlineData(33, 20, 3)]
    public void LinearMatchesCpu(int rows, int k, int n)
    {
        var x = Random(rows * k, 1); var w = Random(k * n, 2); var bias = Random(n, 3);
        foreach (var layout in new[] { WeightLayout.InOut, WeightLayout.OutIn })
        {
            var expected = new float[rows * n];
            LinearReference.Forward(x, w, layout, bias, expected, rows, k, n);
            var y = _gpu.Allocate(rows * n);
            _gpu.Linear.Forward(_gpu.Upload(x), _gpu.PackWeight(w, k, n, layout), _gpu.Upload(bias), y, rows);
            Compare.Close(expected, Get(_gpu, y, rows * n), 1e-5, $"ilgpu linear {rows}x{k}x{n} {layout}", 1e-5);
            var y2 = _gpu.Allocate(rows * n);
            _gpu.Linear.Forward(_gpu.Upload(x), _gpu.PackWeight(w, k, n, layout), null, y2, rows);
            LinearReference.Forward(x, w, layout, default, expected, rows, k, n);
            Compare.Close(expected, Get(_gpu, y2, rows * n), 1e-5, $"ilgpu linear no bias {rows}x{k}x{n}", 1e-5);
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(4, 65)]
    public void LayerNormAndActivationsMatchCpu(int rows, int d)
    {
        var x = Random(rows * d, d, 3f); var g = Random(d, 1); var b = Random(d, 2);
        DeviceBuffer Run(IBackend be, out float[] normed, out float[] scale)
        {
            var y = be.Allocate(rows * d); var n = be.Allocate(rows * d); var s = be.Allocate(rows);
            be.Norm.LayerNorm(be.Upload(x), be.Upload(g), be.Upload(b), y, rows, d, 1e-5f, n, s);
            normed = Get(be, n, rows * d); scale = Get(be, s, rows);
            return y;
        }
        var yc = Run(_cpu, out var nc, out var sc);
        var yg = Run(_gpu, out var ng, out var sg);
        Compare.Close(Get(_cpu, yc, rows * d), Get(_gpu, yg, rows * d), 2e-5, "layernorm y", 1e-5);
        Compare.Close(nc, ng, 2e-5, "layernorm normalized", 1e-5);
        Compare.Close(sc, sg, 2e-5, "layernorm scale", 1e-5);
        foreach (var act in Enum.GetValues<Activation>())
        {
            int n = rows * d;
            var xs = Random(n, 9, 6f);
            var expected = xs.Select(v => ActivationReference.Apply(v, act)).ToArray();
            var y = _gpu.Allocate(n);
            _gpu.Activations.Forward(_gpu.Upload(xs), y, n, act);
            Compare.Close(expected, Get(_gpu, y, n), 2e-6, $"ilgpu {act}", 2e-6);
        }
    }

    [Theory]
    [InlineData(1, 1, 1, 2, 2)]
    [InlineData(2, 5, 3, 8, 4)]
    [InlineData(1, 9, 2, 17, 0)]
    public void AttentionRotaryGatherCopyMatchCpu(int batch, int seq, int heads, int dHead, int rot)
    {
        int n = batch * seq * heads * dHead;
        var q = Random(n, 1, 2f); var k = Random(n, 2, 2f); var v = Random(n, 3);
        float scale = 1f / MathF.Sqrt(dHead);
        float[] Attn(IBackend be, out float[] pattern)
        {
            var (qb, kb) = (be.Upload(q), be.Upload(k));
            if (rot > 0) { be.Attention.Rotary(qb, qb, batch, seq, heads, dHead, rot, 500f); be.Attention.Rotary(kb, kb, batch, seq, heads, dHead, rot, 500f); }
            var z = be.Allocate(n); var p = be.Allocate(batch * heads * seq * seq);
            be.Attention.Causal(qb, kb, be.Upload(v), z, batch, seq, heads, dHead, scale, p);
            pattern = Get(be, p, batch * heads * seq * seq);
            return Get(be, z, n);
        }
        foreach (var variant in Enum.GetValues<AttentionVariant>())
        {
            _gpu.AttentionKind = variant;
            Compare.Close(Attn(_cpu, out var pc), Attn(_gpu, out var pg), 2e-6, $"attention z ({variant})", 1e-5);
            Compare.Close(pc, pg, 2e-6, $"attention pattern ({variant})", 1e-5);
            // without the pattern tap the GEMM path uses its own [heads, seq, seq] scratch
            var z = _gpu.Allocate(n);
            _gpu.Attention.Causal(_gpu.Upload(q), _gpu.Upload(k), _gpu.Upload(v), z, batch, seq, heads, dHead, scale);
            if (rot == 0) Compare.Close(Attn(_cpu, out _), Get(_gpu, z, n), 2e-6, $"attention z, no pattern ({variant})", 1e-5);
        }
        _gpu.AttentionKind = AttentionVariant.Fused;
        var table = Random(10 * dHead, 4);
        var gathered = _gpu.Allocate(3 * dHead);
        _gpu.Rows.Gather([9, 0, 4], _gpu.Upload(table), dHead, gathered);
        Assert.Equal(table.AsSpan(9 * dHead, dHead).ToArray().Concat(table.AsSpan(0, dHead).ToArray()).Concat(table.AsSpan(4 * dHead, dHead).ToArray()),
            Get(_gpu, gathered, 3 * dHead));
        var cols = _gpu.Allocate(10);
        _gpu.Rows.CopyColumns(_gpu.Upload(table), 10, dHead, dHead - 1, 1, cols);
        Assert.Equal(Enumerable.Range(0, 10).Select(r => table[r * dHead + dHead - 1]), Get(_gpu, cols, 10));
        var wide = Random(10 * (dHead + 3), 5);
        var into = _gpu.Upload(wide);
        _gpu.Rows.CopyColumns(_gpu.Upload(table), 10, dHead, 1, dHead - 1, into, dHead + 3, 4);
        Assert.Equal(RowsReference.CopyColumns(table, 10, dHead, 1, dHead - 1, wide, dHead + 3, 4), Get(_gpu, into, 10 * (dHead + 3)));
    }

    [Theory]
    [MemberData(nameof(SparseEncodeTests.SparseShapes), MemberType = typeof(SparseEncodeTests))]
    public void SparsifyKernelsMatchTheReference(int rows, int width, int k)
    {
        foreach (var pre in new[] { SparseEncodeTests.Tied(rows * width, width), SparseEncodeTests.Uniform(rows * width, k, 3f) })
        {
            var threshold = SparseEncodeTests.Uniform(width, 99).Select(Math.Abs).ToArray();
            var buf = _gpu.Upload(pre);
            foreach (var act in Enum.GetValues<SparseActivation>())
                SparseEncodeTests.AssertSameSparse(SaeReference.Sparsify(pre, rows, width, act, k, threshold),
                    _gpu.Sae.Sparsify(buf, rows, width, new SparseRule(act, k, _gpu.Upload(threshold))), $"emulated {act} {rows}×{width} k {k}");
        }
    }

    [Theory]
    [MemberData(nameof(RowEditAndLogitTests.EditShapes), MemberType = typeof(RowEditAndLogitTests))]
    public void EditRowsKernelMatchesTheReference(int batch, int seq, int width, bool perPosition)
    {
        var (x, mul, add, from) = RowEditAndLogitTests.EditInputs(batch, seq, width, perPosition);
        foreach (var (m, a) in new[] { (mul, add), (mul, null), (null, add) })
        {
            var buf = _gpu.Upload(x);
            _gpu.Rows.Edit(buf, batch, seq, width, new RowEdit(m is null ? null : _gpu.Upload(m), a is null ? null : _gpu.Upload(a), perPosition, from));
            Compare.Close(RowsReference.Edit(x, batch, seq, width, m, a, perPosition, from), Get(_gpu, buf, x.Length), 1e-6, $"emulated edit {batch}×{seq}×{width}", 1e-6);
        }
    }

    [Theory]
    [MemberData(nameof(RowEditAndLogitTests.TopShapes), MemberType = typeof(RowEditAndLogitTests))]
    public void TopLogitsKernelsMatchTheReference(int rows, int vocab, int k)
    {
        foreach (var logits in new[] { SparseEncodeTests.Tied(rows * vocab, vocab), SparseEncodeTests.Uniform(rows * vocab, k, 8f) })
        {
            var expected = ReductionReference.TopLogits(logits, rows, vocab, k);
            var actual = _gpu.Reductions.TopLogits(_gpu.Upload(logits), rows, vocab, k);
            Assert.Equal(expected.Ids, actual.Ids);
            Assert.Equal(expected.Logits, actual.Logits);
            Compare.Close(expected.LogSumExp, actual.LogSumExp, 1e-5, $"emulated lse {rows}×{vocab}", 1e-6);
        }
    }

    [Theory]
    [MemberData(nameof(RowEditAndLogitTests.RankShapes), MemberType = typeof(RowEditAndLogitTests))]
    public void RankStatsKernelsMatchTheReference(int rows, int vocab, int groups)
    {
        var (logits, group, orders) = RowEditAndLogitTests.RankInputs(rows, vocab, groups);
        RowEditAndLogitTests.AssertRanks(ReductionReference.RankStats(logits, rows, vocab, group, orders),
            _gpu.Reductions.RankStats(_gpu.Upload(logits), rows, vocab, group, orders));
    }

    [Theory]
    [MemberData(nameof(RowEditAndLogitTests.MetricShapes), MemberType = typeof(RowEditAndLogitTests))]
    public void RowMetricsKernelMatchesTheReference(int rows, int vocab, int groups, int nWeights)
    {
        var (logits, group, weights, reference) = RowEditAndLogitTests.MetricInputs(rows, vocab, groups, nWeights);
        foreach (var refs in new[] { reference, null })
        {
            var expected = ReductionReference.RowMetrics(logits, rows, vocab, group, weights, nWeights, refs);
            var actual = _gpu.Reductions.RowMetrics(_gpu.Upload(logits), rows, vocab, group, weights is null ? null : _gpu.Upload(weights), nWeights,
                refs is null ? null : _gpu.Upload(refs));
            RowEditAndLogitTests.AssertMetrics(expected, actual, $"emulated {rows}×{vocab}");
        }
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(3, 7)]
    [InlineData(2, 129)]
    public void NormalizeRowsKernelMatchesTheReference(int rows, int d)
    {
        var x = SparseEncodeTests.Uniform(rows * d, d, 4f).Select((v, i) => v + i % 3).ToArray();
        var subtract = SparseEncodeTests.Uniform(d, 5);
        foreach (var norm in Enum.GetValues<RowNormalization>())
            foreach (bool center in new[] { false, true })
            {
                var y = _gpu.Allocate(rows * d);
                _gpu.Sae.NormalizeRows(_gpu.Upload(x), y, rows, d, norm, center, _gpu.Upload(subtract));
                Compare.Close(SaeReference.NormalizeRows(x, d, norm, center, subtract), Get(_gpu, y, rows * d), 1e-5,
                    $"emulated NormalizeRows {norm} center {center} {rows}×{d}", 1e-5);
            }
    }

    /// <summary>The interference scan on the emulated CUDA backend (tile GEMMs as ILGPU kernels, results downloaded) equals
    /// the CPU backend's exactly on lattice data, where every cosine is exact in float32.</summary>
    [Fact]
    public void InterferenceScanMatchesTheCpuBackend()
    {
        int n = 70, d = 64, e = 17;
        var unit = Scans.InterferenceTests.Lattice(n, d, 64, 5);
        var embed = Scans.InterferenceTests.Lattice(n, e, 16, 6);
        var o = new PolyEngine.Scans.InterferenceOptions { Tile = 32, PartnersPerBin = 2, TopN = 3 };
        var gpu = PolyEngine.Scans.InterferenceScan.Run(_gpu, unit, d, embed, e, o);
        var cpu = PolyEngine.Scans.InterferenceScan.Run(new CpuBackend(2), unit, d, embed, e, o);
        Assert.Equal(cpu.Fine, gpu.Fine);
        Assert.Equal(cpu.Unrelated, gpu.Unrelated);
        Assert.Equal(cpu.PartnerCounts, gpu.PartnerCounts);
        for (int a = 0; a < n; a++) Assert.Equal(cpu.Top!.Sorted(a), gpu.Top!.Sorted(a));
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void EmulatedCudaMatchesEveryHookOfTheGolden(string name)
    {
        foreach (var variant in Enum.GetValues<AttentionVariant>())
        {
            _gpu.AttentionKind = variant;
            using var model = Model.Load(Fixtures.Golden(name), _gpu);
            Models.GoldenParityTests.AssertEveryGoldenTensor(model, name, $"cuda-emulated, {variant} attention");
        }
        _gpu.AttentionKind = AttentionVariant.Fused;
    }

    /// <summary>The strided-batched GEMM twin against cuBLAS's column-major definition written out in double: both
    /// transposes, leading dimensions wider than the rows, element offsets and strides, beta = 0 (C not read: NaN there
    /// stays out) and beta ≠ 0.</summary>
    [Theory]
    [InlineData(false, false, 3, 4, 5, 2)]
    [InlineData(true, false, 7, 2, 3, 3)]
    [InlineData(false, true, 1, 6, 4, 1)]
    [InlineData(true, true, 5, 5, 9, 2)]
    public void StridedBatchedFollowsTheCuBlasContract(bool transA, bool transB, int m, int n, int k, int batch)
    {
        int lda = (transA ? k : m) + 2, ldb = (transB ? n : k) + 1, ldc = m + 3;
        long strideA = (long)lda * (transA ? m : k) + 5, strideB = (long)ldb * (transB ? k : n) + 1, strideC = (long)ldc * n + 2;
        const long aOff = 3, bOff = 1, cOff = 4;
        var a = Random((int)(aOff + strideA * batch), 11);
        var b = Random((int)(bOff + strideB * batch), 12);
        foreach (float beta in new[] { 0f, 0.5f })
        {
            var c0 = Random((int)(cOff + strideC * batch), 13);
            if (beta == 0f) Array.Fill(c0, float.NaN);
            var expected = (float[])c0.Clone();
            for (int p = 0; p < batch; p++)
                for (int r = 0; r < m; r++)
                    for (int col = 0; col < n; col++)
                    {
                        double acc = 0;
                        for (int l = 0; l < k; l++)
                            acc += (double)a[aOff + p * strideA + (transA ? l + (long)r * lda : r + (long)l * lda)]
                                 * b[bOff + p * strideB + (transB ? col + (long)l * ldb : l + (long)col * ldb)];
                        long ci = cOff + p * strideC + r + (long)col * ldc;
                        expected[ci] = (float)(0.75 * acc + (beta == 0 ? 0 : beta * c0[ci]));
                    }
            var cb = _gpu.Upload(c0);
            _gpu.StridedBatched(transA, transB, m, n, k, 0.75f, _gpu.Upload(a), aOff, lda, strideA, _gpu.Upload(b), bOff, ldb, strideB, beta, cb, cOff, ldc, strideC, batch);
            Compare.Close(expected, Get(_gpu, cb, c0.Length), 1e-5, $"strided batched beta {beta}", 1e-5);   // untouched C elements keep their NaN
        }
        Assert.Contains("StridedBatched: C holds", Assert.Throws<ArgumentException>(() => _gpu.StridedBatched(transA, transB, m, n, k, 1f,
            _gpu.Upload(a), 0, lda, strideA, _gpu.Upload(b), 0, ldb, strideB, 0f, _gpu.Allocate(m), 0, ldc, strideC, batch)).Message);
    }

    [Theory]
    [InlineData("jumprelu")]
    [InlineData("topk-v6cfg")]
    public void SaeEncodeAndDecodeOnTheEmulatedBackendMatchTheGolden(string variant)
    {
        string folder = Path.Combine(Fixtures.Golden("gpt2-tiny"), "sae", variant);
        using var sae = SparseAutoencoder.Load(folder, _gpu);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        var enc = sae.Encode(golden.ReadFloat32("sae_in"), 32);
        Compare.Close(golden.ReadFloat32("hidden_pre"), enc.HiddenPre, 1e-4, $"emulated {variant} hidden_pre");
        Compare.Close(golden.ReadFloat32("feature_acts"), enc.FeatureActs, 1e-4, $"emulated {variant} feature_acts");
        Compare.Close(golden.ReadFloat32("sae_out"), sae.Decode(enc.FeatureActs, 32), 1e-4, $"emulated {variant} sae_out");
        Sae.SaeTests.AssertFusedEncodeMatchesGolden(folder, "gpt2-tiny", _gpu, $"emulated {variant}");
    }

    [Fact]
    public void NoCudaDeviceGivesAOneLineErrorAndAutoFallsBackToCpu()
    {
        if (IlgpuBackend.CudaAvailable()) return;   // a machine with a GPU: nothing to check here
        var e = Assert.Throws<PolyEngineException>(() => Devices.Create("cuda", 0, out _));
        Assert.StartsWith("--device cuda:", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        using var auto = Devices.Create("auto", 1, out string note);
        Assert.IsType<CpuBackend>(auto);
        Assert.Contains("no CUDA device", note);
    }

    [Theory]
    [InlineData(1, 1, 3, 2, 4, 2)]
    [InlineData(2, 3, 9, 3, 8, 4)]
    [InlineData(1, 4, 17, 2, 17, 0)]
    public void SuffixQueriesAndRotaryFromAnOffsetMatchCpu(int batch, int queries, int keys, int heads, int dHead, int rot)
    {
        int nq = batch * queries * heads * dHead, nk = batch * keys * heads * dHead, pn = batch * heads * queries * keys;
        var q = Random(nq, 1, 2f); var k = Random(nk, 2, 2f); var v = Random(nk, 3);
        float scale = 1f / MathF.Sqrt(dHead);
        float[] Attn(IBackend be, out float[] pattern)
        {
            var (qb, kb) = (be.Upload(q), be.Upload(k));
            if (rot > 0)
            {
                be.Attention.Rotary(qb, qb, batch, queries, heads, dHead, rot, 500f, keys - queries);
                be.Attention.Rotary(kb, kb, batch, keys, heads, dHead, rot, 500f);
            }
            var z = be.Allocate(nq); var p = be.Allocate(pn);
            be.Attention.Causal(qb, kb, be.Upload(v), z, batch, queries, heads, dHead, scale, p, keys);
            pattern = Get(be, p, pn);
            return Get(be, z, nq);
        }
        try
        {
            foreach (var variant in Enum.GetValues<AttentionVariant>())
            {
                _gpu.AttentionKind = variant;
                Compare.Close(Attn(_cpu, out var pc), Attn(_gpu, out var pg), 2e-6, $"suffix attention z ({variant})", 1e-5);
                Compare.Close(pc, pg, 2e-6, $"suffix attention pattern ({variant})", 1e-5);
            }
        }
        finally { _gpu.AttentionKind = AttentionVariant.Fused; }
    }

    [Fact]
    public void LaunchersRejectBuffersTooSmallForTheLaunch()
    {
        var small = _gpu.Allocate(3);
        Assert.Contains("Add: y holds 3 floats, the launch needs 4", Assert.Throws<ArgumentException>(() => _gpu.Rows.Add(_gpu.Allocate(4), _gpu.Allocate(4), small, 4)).Message);
        Assert.Contains("LayerNorm: x holds 3 floats", Assert.Throws<ArgumentException>(() => _gpu.Norm.LayerNorm(small, small, small, small, 2, 2, 1e-5f)).Message);
        Assert.Contains("outside a width", Assert.Throws<ArgumentException>(() => _gpu.Rows.CopyColumns(small, 1, 3, 2, 2, small)).Message);
        var w = _gpu.PackWeight(new float[6], 2, 3, WeightLayout.InOut);
        Assert.Contains("Linear: x holds 3 floats, the launch needs 4", Assert.Throws<ArgumentException>(() => _gpu.Linear.Forward(small, w, null, _gpu.Allocate(6), 2)).Message);
        Assert.Contains("CausalAttention: pattern", Assert.Throws<ArgumentException>(() =>
            _gpu.Attention.Causal(_gpu.Allocate(8), _gpu.Allocate(8), _gpu.Allocate(8), _gpu.Allocate(8), 1, 2, 2, 2, 1f, small)).Message);
    }
}

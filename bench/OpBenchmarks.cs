using PolyEngine.Kernels.Reference;
using BenchmarkDotNet.Attributes;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;

namespace PolyEngine.Bench;

// BenchmarkDotNet classes per op family, each with a baseline in the same run so the report carries the ratio:
//   dotnet run -c Release --project bench -- --filter '*Gemm*'      (or '*' for all; --job short for a quick pass)

/// <summary>The packed-weight GEMM at GPT-2-small shapes against a TensorPrimitives dot-product GEMM (the obvious managed way).</summary>
[MemoryDiagnoser]
public class GemmBenchmarks
{
    [Params("qkv", "attn_out", "mlp_in", "mlp_out")]
    public string Shape { get; set; } = "qkv";

    int _m, _k, _n;
    float[] _a = [], _w = [], _wt = [], _c = [], _bias = [];
    Gemm.Packed _packed = null!;

    [GlobalSetup]
    public void Setup()
    {
        (_m, _k, _n, _) = GemmShapes.Gpt2Small.First(s => s.What == Shape);
        _m = 256;   // 2 × 128 tokens keeps one invocation well under a second
        var r = new Random(1);
        _a = Enumerable.Range(0, _m * _k).Select(_ => (float)r.NextDouble()).ToArray();
        _w = Enumerable.Range(0, _k * _n).Select(_ => (float)r.NextDouble()).ToArray();
        _wt = new float[_k * _n];
        for (int i = 0; i < _k; i++) for (int j = 0; j < _n; j++) _wt[j * _k + i] = _w[i * _n + j];
        _bias = new float[_n];
        _c = new float[_m * _n];
        _packed = Gemm.Pack(_w, _k, _n, WeightLayout.InOut);
    }

    [Benchmark(Baseline = true)]
    public void DotProductGemm() => Parallel.For(0, _m, i =>
    {
        var row = _a.AsSpan(i * _k, _k);
        for (int j = 0; j < _n; j++) _c[i * _n + j] = System.Numerics.Tensors.TensorPrimitives.Dot(row, _wt.AsSpan(j * _k, _k)) + _bias[j];
    });

    [Benchmark]
    public void PackedGemm() => Gemm.Multiply(_a, _packed, _bias, _c, _m, Environment.ProcessorCount);
}

/// <summary>LayerNorm over [1024, 768] against the scalar reference.</summary>
public class LayerNormBenchmarks
{
    const int Rows = 1024, D = 768;
    readonly float[] _x = Enumerable.Range(0, Rows * D).Select(i => MathF.Sin(i)).ToArray();
    readonly float[] _g = Enumerable.Repeat(1f, D).ToArray(), _b = new float[D], _y = new float[Rows * D];

    [Benchmark(Baseline = true)]
    public void Reference() => NormReference.LayerNorm(_x, _g, _b, _y, Rows, D, 1e-5f);

    [Benchmark]
    public void Vectorised() => LayerNorm.Forward(_x, _g, _b, _y, Rows, D, 1e-5f);
}

/// <summary>Causal attention of GPT-2 small (12 heads of 64) over 2 × 128 tokens against the scalar reference.</summary>
public class AttentionBenchmarks
{
    const int Batch = 2, Seq = 128, Heads = 12, DHead = 64, N = Batch * Seq * Heads * DHead;
    readonly float[] _q = Enumerable.Range(0, N).Select(i => MathF.Sin(i)).ToArray();
    readonly float[] _k = Enumerable.Range(0, N).Select(i => MathF.Cos(i)).ToArray();
    readonly float[] _v = Enumerable.Range(0, N).Select(i => MathF.Sin(2 * i)).ToArray();
    readonly float[] _z = new float[N];
    readonly CpuBackend _backend = new();
    DeviceBuffer _qb = null!, _kb = null!, _vb = null!, _zb = null!;

    [GlobalSetup]
    public void Setup() { _qb = _backend.Upload(_q); _kb = _backend.Upload(_k); _vb = _backend.Upload(_v); _zb = _backend.Allocate(N); }

    [Benchmark(Baseline = true)]
    public void Reference() => AttentionReference.Causal(_q, _k, _v, _z, Batch, Seq, Heads, DHead, 0.125, default);

    [Benchmark]
    public void Backend() => _backend.Attention.Causal(_qb, _kb, _vb, _zb, Batch, Seq, Heads, DHead, 0.125f);
}

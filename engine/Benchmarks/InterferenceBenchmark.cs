using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Scans;
using PolyEngine.Toys;

namespace PolyEngine.Benchmarks;

/// <summary>Result of <see cref="InterferenceBenchmark.Measure"/>.</summary>
public sealed record InterferenceBenchmarkResult(int Features, int DIn, long Pairs, double Seconds, double PairsPerSecond, long[] Bins, long Negative);

/// <summary>
/// Interference-scan throughput on a random decoder (Gaussian rows, unit length, deterministic per seed): the tiled
/// cosine GEMMs and the exact binning, without explanations — what bench/baselines/interference_torch.py does with a
/// tiled torch matmul on the same decoder (<see cref="WriteDecoder"/>).
/// </summary>
public static class InterferenceBenchmark
{
    /// <summary>W_dec [features, d_in], rows of unit length.</summary>
    public static float[] Decoder(int features, int dIn, ulong seed)
    {
        var w = new Rng(seed).Normals([features, dIn], 1f);
        for (int j = 0; j < features; j++)
        {
            var row = w.AsSpan(j * dIn, dIn);
            System.Numerics.Tensors.TensorPrimitives.Divide(row, System.Numerics.Tensors.TensorPrimitives.Norm(row), row);
        }
        return w;
    }

    public static void WriteDecoder(string path, int features, int dIn, ulong seed) =>
        new SafeTensorsWriter().Add("W_dec", Decoder(features, dIn, seed), features, dIn).Save(path);

    public static InterferenceBenchmarkResult Measure(IBackend backend, int features, int dIn, int tile, int threads, ulong seed = 1)
    {
        var unit = Decoder(features, dIn, seed);
        var sw = Stopwatch.StartNew();
        var st = InterferenceScan.Run(backend, unit, dIn, null, 0, new InterferenceOptions { Tile = tile, Threads = threads });
        double s = sw.Elapsed.TotalSeconds;
        return new InterferenceBenchmarkResult(features, dIn, st.Pairs, s, st.Pairs / s, st.Bins, st.Pairs - st.Bins.Sum());
    }
}

using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Benchmarks;

/// <summary>Result of <see cref="ForwardBenchmark.Measure"/>: medians over timed iterations after one warm-up.</summary>
public sealed record ForwardBenchmarkResult(int Batch, int Seq, int Iterations, double MedianSeconds, double TokensPerSecond,
    int? StopLayer, double StopMedianSeconds, double StopTokensPerSecond);

/// <summary>Throughput of the full forward pass (all-position logits) and of a pass stopped after one layer.</summary>
public static class ForwardBenchmark
{
    public static ForwardBenchmarkResult Measure(Model model, int batch, int seq, int iterations, int? stopLayer, ulong seed = 1)
    {
        if (batch <= 0 || seq <= 0) throw new PolyEngineException($"--batch and --seq must be positive, got {batch} and {seq}");
        if (iterations <= 0) throw new PolyEngineException($"--iters must be positive, got {iterations}");
        var rng = new Rng(seed);
        var ids = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = (int)(rng.NextU64() % (ulong)model.Spec.DVocab);
        double full = Median(model, ids, batch, seq, iterations, new RunOptions());
        int stop = stopLayer ?? model.Spec.NLayers / 2;
        double partial = Median(model, ids, batch, seq, iterations, new RunOptions { StopAtLayer = stop, Logits = LogitsMode.None });
        double tokens = (double)batch * seq;
        return new ForwardBenchmarkResult(batch, seq, iterations, full, tokens / full, stop, partial, tokens / partial);
    }

    static double Median(Model model, int[] ids, int batch, int seq, int iterations, RunOptions options)
    {
        model.Run(ids, batch, seq, options);  // warm-up: JIT, workspace allocation
        var times = new double[iterations];
        for (int i = 0; i < iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            model.Run(ids, batch, seq, options);
            times[i] = sw.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return iterations % 2 == 1 ? times[iterations / 2] : (times[iterations / 2 - 1] + times[iterations / 2]) / 2;
    }
}

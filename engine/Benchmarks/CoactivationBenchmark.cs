using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Toys;

namespace PolyEngine.Benchmarks;

/// <summary>Result of <see cref="CoactivationBenchmark.Measure"/>.</summary>
public sealed record CoactivationBenchmarkResult(int Features, int L0, long Tokens, double Seconds, double TokensPerSecond, long PairIncrements);

/// <summary>
/// Counting throughput on synthetic sparse activations with a fixed L0 (active features per token), the part the dense
/// Bᵀ·B baseline replaces: the same activations are written by <see cref="WriteActivations"/> for bench/baselines.
/// </summary>
public static class CoactivationBenchmark
{
    /// <summary>Deterministic active sets: token t fires <paramref name="l0"/> distinct features drawn from a skewed
    /// (Zipf-like) distribution, as SAE features are.</summary>
    public static int[][] Activations(int features, int l0, int tokens, ulong seed)
    {
        if (l0 < 1 || l0 > features) throw new PolyEngineException($"--l0 must be in 1..{features}, got {l0}");
        var rng = new Rng(seed);
        var sets = new int[tokens][];
        var chosen = new HashSet<int>();
        for (int t = 0; t < tokens; t++)
        {
            chosen.Clear();
            while (chosen.Count < l0)
            {
                double u = rng.NextDouble();
                chosen.Add((int)(features * u * u));   // density ∝ 1/√x: a few frequent features, a long tail
            }
            var a = chosen.ToArray();
            Array.Sort(a);
            sets[t] = a;
        }
        return sets;
    }

    public static CoactivationBenchmarkResult Measure(int features, int l0, int tokens, ulong seed = 1)
    {
        var sets = Activations(features, l0, tokens, seed);
        var counter = new CoactivationCounter(features);
        counter.AddUnit(sets[0]);   // warm-up: page in the counters' first rows
        counter = new CoactivationCounter(features);
        var sw = Stopwatch.StartNew();
        foreach (var s in sets) counter.AddUnit(s);
        double seconds = sw.Elapsed.TotalSeconds;
        return new CoactivationBenchmarkResult(features, l0, tokens, seconds, tokens / seconds, (long)tokens * l0 * (l0 - 1) / 2);
    }

    /// <summary>The active sets as int32 [tokens, l0] in a safetensors file, for the dense baseline to count the same thing.</summary>
    public static void WriteActivations(string path, int features, int l0, int tokens, ulong seed)
    {
        var sets = Activations(features, l0, tokens, seed);
        new Formats.SafeTensorsWriter().AddMetadata("features", features.ToString())
            .Add("active", sets.SelectMany(s => s).ToArray(), tokens, l0).Save(path);
    }
}

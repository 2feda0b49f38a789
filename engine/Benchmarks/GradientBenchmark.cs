using System.Diagnostics;
using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Models;

namespace PolyEngine.Benchmarks;

/// <summary>The gradient benchmark's workload: seeded rows and, per row, the positions whose gradient vectors are taken.</summary>
public sealed record GradientWorkload(HookName Hook, int[][] Rows, GradientSeed[] Seeds);

/// <summary>Result of <see cref="GradientBenchmark.Measure"/>: the first run of the whole workload (<see cref="ColdSeconds"/>:
/// its memory fresh) and the second (<see cref="Seconds"/>: memory reused, the rate a long run sustains).</summary>
public sealed record GradientBenchmarkResult(int Rows, int Vectors, double ColdSeconds, double Seconds, GradientResult[] Gradients)
{
    public double VectorsPerSecond => Vectors / Seconds;
    public double ColdVectorsPerSecond => Vectors / ColdSeconds;
}

/// <summary>
/// Token-locus gradient throughput (gradient vectors/s): seeded rows of <c>seq</c> tokens, <c>positions</c> positions per
/// row (evenly spread over its second half, as an activation record's strongest tokens would be), the all-ones objective
/// at one hook, each position's gradient with respect to the token embeddings — the TL recipe's unit of work. The same
/// workload and the measured gradients go to bench/baselines/gradient_torch.py (<see cref="WriteWorkload"/>).
/// </summary>
public static class GradientBenchmark
{
    public static GradientWorkload Workload(ModelSpec spec, HookName hook, int rows, int seq, int positions, ulong seed = 1)
    {
        if (rows < 1 || positions < 1 || seq < 2) throw new PolyEngineException($"--rows and --positions must be positive and --seq at least 2, got {rows}, {positions} and {seq}");
        if (seq > spec.NCtx) throw new PolyEngineException($"--seq {seq} is past the model's context of {spec.NCtx}");
        if (positions > seq / 2) throw new PolyEngineException($"--positions {positions}: at most {seq / 2} (the second half of a row of {seq})");
        var rng = new Rng(seed);
        var ids = Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, seq).Select(_ => (int)(rng.NextU64() % (ulong)spec.DVocab)).ToArray()).ToArray();
        var seeds = Enumerable.Range(0, rows).SelectMany(r => Enumerable.Range(0, positions)
            .Select(k => new GradientSeed(r, hook, seq / 2 + (int)((long)k * (seq - seq / 2) / positions)))).ToArray();
        return new GradientWorkload(hook, ids, seeds);
    }

    /// <summary>The first row's seeds once (JIT), then every seed in one <see cref="Gradient.Run"/> twice, each timed: cold
    /// (the first at this shape) and warm (<paramref name="timedStarts"/> is called just before it: a profiler resets there).</summary>
    public static GradientBenchmarkResult Measure(Model model, GradientWorkload w, Action? timedStarts = null)
    {
        Gradient.Run(model, [w.Rows[0]], w.Seeds.Where(s => s.Row == 0).ToArray());
        var sw = Stopwatch.StartNew();
        Gradient.Run(model, w.Rows, w.Seeds);
        double cold = sw.Elapsed.TotalSeconds;
        timedStarts?.Invoke();
        sw.Restart();
        var grads = Gradient.Run(model, w.Rows, w.Seeds);
        return new GradientBenchmarkResult(w.Rows.Length, w.Seeds.Length, cold, sw.Elapsed.TotalSeconds, grads);
    }

    /// <summary>Writes the workload and the measured gradient vectors into <paramref name="path"/> (safetensors):
    /// input_ids [rows, seq], seed_row and seed_position [vectors], gradients [vectors, d_model] (each seed's gradient at
    /// its own position, before normalising), with the hook in the metadata.</summary>
    public static void WriteWorkload(string path, GradientWorkload w, GradientBenchmarkResult result, int dModel)
    {
        int seq = w.Rows[0].Length;
        var at = result.Gradients.Select((g, k) => g.Gradient.AsSpan(w.Seeds[k].Position * dModel, dModel).ToArray()).SelectMany(x => x).ToArray();
        new SafeTensorsWriter()
            .Add("input_ids", w.Rows.SelectMany(r => r).Select(i => (long)i).ToArray(), w.Rows.Length, seq)
            .Add("seed_row", w.Seeds.Select(s => (long)s.Row).ToArray(), w.Seeds.Length)
            .Add("seed_position", w.Seeds.Select(s => (long)s.Position).ToArray(), w.Seeds.Length)
            .Add("gradients", at, w.Seeds.Length, dModel)
            .AddMetadata("hook", w.Hook.ToString())
            .Save(path);
    }
}

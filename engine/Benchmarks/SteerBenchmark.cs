using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Models;
using PolyEngine.Toys;

namespace PolyEngine.Benchmarks;

/// <summary>Result of <see cref="SteerBenchmark.Measure"/>: one timed sweep after a warm-up on the first prompt.</summary>
public sealed record SteerBenchmarkResult(int Prompts, int Vectors, int Scales, long Interventions, double Seconds, double InterventionsPerSecond,
    SteerResult Sweep);

/// <summary>
/// Steering throughput on the workload: seeded prompts of 10–16 tokens, each with three target tokens, seeded
/// Gaussian unit vectors at one hook and the paper's 32 scales, the default metrics (weighted cosine, overlap, KL). The
/// same workload goes to bench/baselines/steer_torch.py through <see cref="WriteWorkload"/> (vectors.safetensors,
/// prompts.jsonl) and the measured rows (rows.csv) are its parity check.
/// </summary>
public static class SteerBenchmark
{
    /// <summary>The workload as a plan: deterministic per <paramref name="seed"/>.</summary>
    public static SteerPlan Workload(ModelSpec spec, HookName hook, int prompts, int vectors, ulong seed = 1, int rowsBudget = SteerPlan.DefaultRowsBudget)
    {
        if (prompts < 1 || vectors < 1) throw new PolyEngineException($"--prompts and --vectors must be positive, got {prompts} and {vectors}");
        var rng = new Rng(seed);
        int Next(int bound) => (int)(rng.NextU64() % (ulong)bound);
        var list = Enumerable.Range(0, prompts).Select(_ =>
        {
            int length = Math.Min(10 + Next(7), spec.NCtx);
            var ids = Enumerable.Range(0, length).Select(_ => Next(spec.DVocab)).ToArray();
            return new SteerPrompt(ids, Enumerable.Range(0, 3).Select(_ => Next(spec.DVocab)).ToArray());
        }).ToArray();
        int width = hook.WidthFor(spec);
        var normals = rng.Normals([vectors, width], 1f);
        return new SteerPlan
        {
            Hook = hook,
            Prompts = list,
            Vectors = Enumerable.Range(0, vectors).Select(i => normals.AsSpan(i * width, width).ToArray()).ToArray(),
            RowsBudget = rowsBudget,
        };
    }

    /// <summary>Runs the first prompt once (JIT, workspaces), then the whole sweep timed (<paramref name="timedStarts"/> is
    /// called just before: a profiler resets there).</summary>
    public static SteerBenchmarkResult Measure(Model model, SteerPlan plan, SteerSweep.Progress? progress = null, Action? timedStarts = null)
    {
        SteerSweep.Collect(model, plan with { Prompts = [plan.Prompts[0]] });
        timedStarts?.Invoke();
        var sw = Stopwatch.StartNew();
        var sweep = SteerSweep.Collect(model, plan, progress);
        double s = sw.Elapsed.TotalSeconds;
        return new SteerBenchmarkResult(plan.Prompts.Count, plan.Vectors.Count, plan.Scales.Count, plan.Interventions, s, plan.Interventions / s, sweep);
    }

    /// <summary>Writes the workload for the PyTorch baseline into <paramref name="dir"/>: vectors.safetensors ("vectors",
    /// [n, width], as drawn: the baseline makes them unit itself), prompts.jsonl (ids, targets) and plan.json (hook, scales).</summary>
    public static void WriteWorkload(string dir, SteerPlan plan)
    {
        Directory.CreateDirectory(dir);
        int width = plan.Vectors[0].Length;
        new SafeTensorsWriter().Add("vectors", plan.Vectors.SelectMany(v => v).ToArray(), plan.Vectors.Count, width).Save(Path.Combine(dir, "vectors.safetensors"));
        PromptFile.Write(Path.Combine(dir, "prompts.jsonl"), plan.Prompts);
        AtomicFile.Write(Path.Combine(dir, "plan.json"), stream => System.Text.Json.JsonSerializer.Serialize(stream, new
        {
            hook = plan.Hook.ToString(),
            scales = plan.Scales,
            from = plan.From,
        }));
    }

    /// <summary>rows.csv of a measured sweep: the steer verb's rows table (prompt, vector, scale, the metrics), baselines included.</summary>
    public static void WriteRows(string path, SteerResult sweep) => Output.SteerWriter.WriteRows(path, sweep, Output.TableFormat.Csv);
}

using System.CommandLine;
using System.Text.Json;
using PolyEngine.Benchmarks;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Cli.Commands;

static class BenchCommand
{
    public static Command Create(Io io)
    {
        var bench = new Command("bench", "Benchmarks of PolyEngine's own kernels and passes (ratios against baselines live in bench/).");
        var model = Common.Model();
        var batch = new Option<int>("--batch") { Description = "Rows per pass", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per row", DefaultValueFactory = _ => 128 };
        var iters = new Option<int>("--iters") { Description = "Timed iterations (after one warm-up); the median is reported", DefaultValueFactory = _ => 5 };
        var stop = new Option<int?>("--stop-at-layer") { Description = "Layer for the stop-at-layer measurement (default n_layers/2)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text" };
        var profile = new Option<bool>("--profile") { Description = "Also print where the time of one full pass goes, per op" };
        var device = Common.Device();
        var threads = Common.Threads();
        var attention = new Option<string>("--attention")
        {
            Description = "CUDA attention: auto (GEMMs through cuBLAS when it is loaded, else the fused kernel), gemm or fused",
            DefaultValueFactory = _ => "auto",
        };
        var forward = new Command("forward", Common.WithExamples(
            "Tokens/s of the full forward pass (logits at every position) and of a pass that stops after one layer.",
            "polyengine bench forward --model gpt2 --batch 8 --seq 128",
            "polyengine bench forward --model ./toy-gpt2-small --threads 2 --iters 5 --json"))
        { model, batch, seq, iters, stop, json, profile, device, threads, attention };
        forward.SetAction(r =>
        {
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note, r.GetValue(attention)!);
            (double Seconds, (string Op, double Seconds, long Calls)[] Ops)? prof = r.GetValue(profile) ? Profile(r.GetValue(model)!, backend, r.GetValue(batch), r.GetValue(seq)) : null;
            using var m = Model.Load(r.GetValue(model)!, backend);
            var res = ForwardBenchmark.Measure(m, r.GetValue(batch), r.GetValue(seq), r.GetValue(iters), r.GetValue(stop));
            int threadCount = backend.HostThreads;
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    tokens_per_second = res.TokensPerSecond, median_seconds = res.MedianSeconds, batch = res.Batch, seq = res.Seq,
                    threads = threadCount, device = backend.DeviceName, iters = res.Iterations, model = m.Folder,
                    attention = backend.Attention.Variant,
                    stop_at_layer = res.StopLayer, stop_tokens_per_second = res.StopTokensPerSecond, stop_median_seconds = res.StopMedianSeconds,
                    profile = prof is null ? null : new
                    {
                        seconds = prof.Value.Seconds,
                        ops = prof.Value.Ops.Select(o => new { op = o.Op, seconds = o.Seconds, calls = o.Calls }).ToArray(),
                    },
                }));
            else
            {
                if (prof is { } p)
                {
                    io.Out.WriteLine($"profile of one full pass, batch {r.GetValue(batch)} × seq {r.GetValue(seq)}: {p.Seconds * 1000:F1} ms");
                    foreach (var (op, sec, calls) in p.Ops)
                        io.Out.WriteLine($"  {op,-24} {sec * 1000,9:F1} ms {100 * sec / p.Seconds,5:F1} %  ({calls} calls)");
                }
                io.Out.WriteLine($"model: {m.Folder}  device: {note}");
                io.Out.WriteLine($"forward  batch {res.Batch} × seq {res.Seq}: {res.TokensPerSecond:F1} tokens/s (median {res.MedianSeconds * 1000:F1} ms of {res.Iterations})");
                io.Out.WriteLine($"stop after layer {res.StopLayer}: {res.StopTokensPerSecond:F1} tokens/s (median {res.StopMedianSeconds * 1000:F1} ms)");
            }
            return 0;
        });
        bench.Subcommands.Add(forward);
        bench.Subcommands.Add(Coactivate(io));
        bench.Subcommands.Add(Interference(io));
        bench.Subcommands.Add(Steer(io));
        bench.Subcommands.Add(BenchGradientCommand.Create(io));
        bench.Subcommands.Add(BenchServeCommand.Create(io));
        return bench;
    }

    static Command Steer(Io io)
    {
        var model = Common.Model();
        var hook = new Option<string>("--hook") { Description = "Hook the vectors are added at (every position)", DefaultValueFactory = _ => "blocks.6.hook_resid_post" };
        var prompts = new Option<int>("--prompts") { Description = "Seeded prompts of 10–16 tokens, three target tokens each", DefaultValueFactory = _ => 8 };
        var vectors = new Option<int>("--vectors") { Description = "Seeded Gaussian unit vectors, each over the paper's 32 scales", DefaultValueFactory = _ => 7 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the prompts and vectors", DefaultValueFactory = _ => 1 };
        var budget = Common.RowsBudget();
        var from = Common.SteerFrom();
        var write = new Option<string>("--write-workload") { Description = "Also write the workload and the measured rows (vectors.safetensors, prompts.jsonl, plan.json, rows.csv) into this folder for bench/baselines/steer_torch.py" };
        var profile = new Option<bool>("--profile") { Description = "Also print where the time of the timed sweep goes, per op" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("steer", Common.WithExamples(
            "Steering throughput (interventions/s): seeded vectors × the paper's 32 scales added at one hook, on seeded prompts, with " +
            "weighted cosine, overlap and KL per row (the workload of bench/RESULTS.md). bench/baselines/steer_vs_torch.sh runs the paper's " +
            "one-forward-per-intervention PyTorch procedure and a batched PyTorch on the same workload.",
            "polyengine bench steer --model ./toy-gpt2-small --threads 2",
            "polyengine bench steer --model ./toy-gpt2-small --prompts 2 --vectors 7 --write-workload ./steer-workload --json"))
        { model, hook, prompts, vectors, seed, budget, from, write, profile, json, device, threads };
        cmd.SetAction(r =>
        {
            using var inner = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            var prof = r.GetValue(profile) ? new Kernels.ProfilingBackend(inner) : null;
            using var m = Model.Load(r.GetValue(model)!, prof ?? inner);
            var plan = Benchmarks.SteerBenchmark.Workload(m.Spec, HookName.Parse(r.GetValue(hook)!), r.GetValue(prompts), r.GetValue(vectors),
                r.GetValue(seed), r.GetValue(budget)) with { From = r.GetValue(from) };
            plan.Validate(m.Spec);
            if (r.GetValue(write) is string dir)
            {
                Directory.CreateDirectory(dir);
                Common.CheckWritable(Path.Combine(dir, "rows.csv"), "--write-workload");
            }
            var res = Benchmarks.SteerBenchmark.Measure(m, plan, timedStarts: prof is null ? null : prof.Reset);
            if (r.GetValue(write) is string folder)
            {
                Benchmarks.SteerBenchmark.WriteWorkload(folder, plan);
                Benchmarks.SteerBenchmark.WriteRows(Path.Combine(folder, "rows.csv"), res.Sweep);
            }
            var ops = prof?.Times.OrderByDescending(x => x.Value.Seconds).Select(x => (Op: x.Key, x.Value.Seconds, x.Value.Calls)).ToArray();
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    interventions_per_second = res.InterventionsPerSecond, interventions = res.Interventions, seconds = res.Seconds,
                    prompts = res.Prompts, vectors = res.Vectors, scales = res.Scales, hook = plan.Hook.ToString(), rows_budget = plan.RowsBudget, from = plan.From,
                    threads = inner.HostThreads, device = inner.DeviceName, model = m.Folder,
                    profile = ops?.Select(o => new { op = o.Op, seconds = o.Seconds, calls = o.Calls }).ToArray(),
                }));
            else
            {
                io.Out.WriteLine($"model: {m.Folder}  device: {note}");
                io.Out.WriteLine($"steer {res.Prompts} prompts × {res.Vectors} vectors × {res.Scales} scales at {plan.Hook}{(plan.From is int f ? $" from position {f}" : "")}: " +
                                 $"{res.InterventionsPerSecond:N1} interventions/s ({res.Interventions:N0} in {res.Seconds:F2} s{(prof is null ? "" : ", profiled")})");
                if (ops is not null)
                    foreach (var (op, sec, calls) in ops)
                        io.Out.WriteLine($"  {op,-32} {sec,8:F2} s {100 * sec / res.Seconds,5:F1} %  ({calls} calls)");
            }
            return 0;
        });
        return cmd;
    }

    static Command Interference(Io io)
    {
        var features = new Option<int>("--features") { Description = "SAE width F", DefaultValueFactory = _ => 32768 };
        var dIn = new Option<int>("--d-in") { Description = "Decoder width d_in", DefaultValueFactory = _ => 768 };
        var tile = new Option<int>("--tile") { Description = "Features per GEMM tile side", DefaultValueFactory = _ => 2048 };
        var write = new Option<string>("--write-decoder") { Description = "Also write the decoder (safetensors, W_dec) for the PyTorch baseline" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("interference", Common.WithExamples(
            "Interference-scan throughput (pairs/s) on a random unit decoder: cosines in GEMM tiles, exact histogram and five bins. " +
            "bench/baselines/interference_vs_torch.sh runs a tiled torch matmul + binning on the same decoder.",
            "polyengine bench interference --features 32768 --d-in 768 --threads 2"))
        { features, dIn, tile, write, json, device, threads };
        cmd.SetAction(r =>
        {
            int f = r.GetValue(features), d = r.GetValue(dIn);
            if (f < 2 || d < 1 || r.GetValue(tile) < 16) throw new PolyEngineException("--features must be at least 2, --d-in positive and --tile at least 16");
            if (r.GetValue(write) is string path)
            {
                Common.CheckWritable(path, "--write-decoder");
                Benchmarks.InterferenceBenchmark.WriteDecoder(path, f, d, 1);
            }
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            int threadCount = backend.HostThreads;
            var res = Benchmarks.InterferenceBenchmark.Measure(backend, f, d, r.GetValue(tile), threadCount);
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    pairs_per_second = res.PairsPerSecond, features = f, d_in = d, pairs = res.Pairs, seconds = res.Seconds, threads = threadCount,
                    device = backend.DeviceName, tile = r.GetValue(tile), bins = res.Bins, negative = res.Negative,
                }));
            else
                io.Out.WriteLine($"interference F {f:N0}, d_in {d}: {res.PairsPerSecond:N0} pairs/s ({res.Pairs:N0} pairs in {res.Seconds:F2} s, {note}); " +
                                 $"bins {string.Join(" ", res.Bins)}, negative {res.Negative}");
            return 0;
        });
        return cmd;
    }

    static Command Coactivate(Io io)
    {
        var features = new Option<int>("--features") { Description = "SAE width F", DefaultValueFactory = _ => 24576 };
        var l0 = new Option<int>("--l0") { Description = "Active features per token", DefaultValueFactory = _ => 50 };
        var tokens = new Option<int>("--tokens") { Description = "Tokens to count", DefaultValueFactory = _ => 20000 };
        var write = new Option<string>("--write-activations") { Description = "Also write the active sets (safetensors) for the dense baseline" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var cmd = new Command("coactivate", Common.WithExamples(
            "Pair-counting throughput (tokens/s) on synthetic sparse activations of a fixed L0: sparse pair enumeration into " +
            "triangle-packed counters. bench/baselines/coactivate_vs_dense.sh runs the dense BᵀB way on the same activations.",
            "polyengine bench coactivate --features 24576 --l0 50 --tokens 20000"))
        { features, l0, tokens, write, json };
        cmd.SetAction(r =>
        {
            int f = r.GetValue(features), k = r.GetValue(l0), n = r.GetValue(tokens);
            if (f < 2 || n < 1) throw new PolyEngineException("--features must be at least 2 and --tokens positive");
            if (r.GetValue(write) is string path)
            {
                Common.CheckWritable(path, "--write-activations");
                Benchmarks.CoactivationBenchmark.WriteActivations(path, f, k, n, 1);
            }
            var res = Benchmarks.CoactivationBenchmark.Measure(f, k, n);
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    tokens_per_second = res.TokensPerSecond, features = res.Features, l0 = res.L0, tokens = res.Tokens, seconds = res.Seconds,
                    pair_increments = res.PairIncrements, counter_bytes = Scans.CoactivationCounter.BytesFor(f), threads = 1,
                }));
            else
                io.Out.WriteLine($"coactivate F {f}, L0 {k}: {res.TokensPerSecond:N0} tokens/s ({res.Tokens:N0} tokens, {res.PairIncrements:N0} pair increments, " +
                                 $"{res.Seconds:F2} s, 1 thread, counters {Scans.CoactivationCounter.BytesFor(f) / (1024.0 * 1024):N0} MiB)");
            return 0;
        });
        return cmd;
    }

    /// <summary>Where the time of one full pass goes, per op, slowest first.</summary>
    static (double Seconds, (string Op, double Seconds, long Calls)[] Ops) Profile(string modelPath, Kernels.IBackend backend, int batch, int seq)
    {
        var prof = new Kernels.ProfilingBackend(backend);
        using var m = Model.Load(modelPath, prof);
        var ids = new int[batch * seq];
        m.Run(ids, batch, seq);
        prof.Reset();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        m.Run(ids, batch, seq);
        return (sw.Elapsed.TotalSeconds, prof.Times.OrderByDescending(x => x.Value.Seconds).Select(x => (x.Key, x.Value.Seconds, x.Value.Calls)).ToArray());
    }
}

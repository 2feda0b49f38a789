using System.CommandLine;
using System.Text.Json;
using PolyEngine.Benchmarks;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine bench gradient</c>: token-locus gradient vectors/s (see <see cref="GradientBenchmark"/>).</summary>
static class BenchGradientCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var hook = new Option<string>("--hook") { Description = "The objective's hook (Σ_d a[p, d], the authors' objective)", DefaultValueFactory = _ => "blocks.6.hook_mlp_out" };
        var rows = new Option<int>("--rows") { Description = "Seeded rows (activation records)", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per row", DefaultValueFactory = _ => 64 };
        var positions = new Option<int>("--positions") { Description = "Gradient vectors per row (positions in its second half)", DefaultValueFactory = _ => 4 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the rows", DefaultValueFactory = _ => 1 };
        var write = new Option<string>("--write-workload") { Description = "Also write the workload and the measured gradients to this .safetensors for bench/baselines/gradient_torch.py" };
        var profile = new Option<bool>("--profile") { Description = "Also print where the time of the timed run goes, per op" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("gradient", Common.WithExamples(
            "Token-locus gradient throughput (gradient vectors/s): per seeded row, the gradient of Σ_d hook[p, d] with respect to the token " +
            "embeddings for several positions p, all in one batched backward. bench/baselines/gradient_vs_torch.sh runs PyTorch autograd on the same workload.",
            "polyengine bench gradient --model ./toy-gpt2-small --threads 2",
            "polyengine bench gradient --model ./toy-gpt2-small --rows 8 --positions 4 --write-workload grad-workload.safetensors --json"))
        { model, hook, rows, seq, positions, seed, write, profile, json, device, threads };
        cmd.SetAction(r =>
        {
            using var inner = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            var prof = r.GetValue(profile) ? new Kernels.ProfilingBackend(inner) : null;
            using var m = Model.Load(r.GetValue(model)!, prof ?? inner);
            var w = GradientBenchmark.Workload(m.Spec, HookName.Parse(r.GetValue(hook)!), r.GetValue(rows), r.GetValue(seq), r.GetValue(positions), r.GetValue(seed));
            if (r.GetValue(write) is string path) Common.CheckWritable(path, "--write-workload");
            var res = GradientBenchmark.Measure(m, w, prof is null ? null : prof.Reset);
            if (r.GetValue(write) is string file) GradientBenchmark.WriteWorkload(file, w, res, m.Spec.DModel);
            var ops = prof?.Times.OrderByDescending(x => x.Value.Seconds).Select(x => (Op: x.Key, x.Value.Seconds, x.Value.Calls)).ToArray();
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    vectors_per_second = res.VectorsPerSecond, cold_vectors_per_second = res.ColdVectorsPerSecond, vectors = res.Vectors, rows = res.Rows,
                    seq = r.GetValue(seq), seconds = res.Seconds, cold_seconds = res.ColdSeconds,
                    hook = w.Hook.ToString(), threads = inner.HostThreads, device = inner.DeviceName, model = m.Folder,
                    profile = ops?.Select(o => new { op = o.Op, seconds = o.Seconds, calls = o.Calls }).ToArray(),
                }));
            else
            {
                io.Out.WriteLine($"model: {m.Folder}  device: {note}");
                io.Out.WriteLine($"gradient {res.Rows} rows × {r.GetValue(positions)} positions of {r.GetValue(seq)} tokens, Σ_d {w.Hook}[p] → hook_embed: " +
                                 $"{res.VectorsPerSecond:N1} vectors/s ({res.Vectors} in {res.Seconds:F2} s{(prof is null ? "" : ", profiled")}; the first run, memory fresh: {res.ColdVectorsPerSecond:N1}/s)");
                if (ops is not null)
                    foreach (var (op, sec, calls) in ops)
                        io.Out.WriteLine($"  {op,-32} {sec,8:F2} s {100 * sec / res.Seconds,5:F1} %  ({calls} calls)");
            }
            return 0;
        });
        return cmd;
    }
}

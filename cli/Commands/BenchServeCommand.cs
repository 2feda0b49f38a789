using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PolyEngine.Cli.Serving;
using PolyEngine.Serving;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine bench serve</c>: requests/s of <c>serve</c> on loopback with dynamic batching against the same
/// server taking one request per forward pass (<c>--max-batch 1</c>), in one run.</summary>
static class BenchServeCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var requests = new Option<int>("--requests") { Description = "Requests per configuration", DefaultValueFactory = _ => 2000 };
        var concurrency = new Option<int>("--concurrency") { Description = "Requests in flight", DefaultValueFactory = _ => 64 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Tokens per prompt (seeded ids)", DefaultValueFactory = _ => 16 };
        var logprobs = new Option<int>("--logprobs") { Description = "Top log-probabilities per request (the injection asks 30)", DefaultValueFactory = _ => 30 };
        var maxBatch = new Option<int>("--max-batch") { Description = "The batched server's rows per pass", DefaultValueFactory = _ => 64 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("serve", Common.WithExamples(
            "Throughput of polyengine serve on loopback: --requests single-token completions (max_tokens 1, --logprobs) with --concurrency in flight, " +
            "first with dynamic batching, then one request per forward pass; requests/s, p50/p99 latency and the ratio.",
            "polyengine bench serve --model ./toy-gpt2-small --requests 2000 --concurrency 64"))
        { model, requests, concurrency, promptTokens, logprobs, maxBatch, json, device, threads };
        cmd.SetAction(async (r, cancel) =>
        {
            int n = r.GetValue(requests), c = r.GetValue(concurrency), len = r.GetValue(promptTokens), k = r.GetValue(logprobs);
            if (n < 1 || c < 1 || len < 1 || k < 0 || r.GetValue(maxBatch) < 1)
                throw new PolyEngineException("--requests, --concurrency, --prompt-tokens and --max-batch must be positive, --logprobs not negative");
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            var rng = new Rng(1);
            var bodies = Enumerable.Range(0, n).Select(_ => $$"""{"model": "bench", "max_tokens": 1, "logprobs": {{k}}, "prompt": [{{string.Join(",",
                Enumerable.Range(0, len).Select(_ => (int)(rng.NextU64() % (ulong)m.Spec.DVocab)))}}]}""").ToArray();
            var batched = await Measure(m, r.GetValue(maxBatch), bodies, c, cancel);
            var single = await Measure(m, 1, bodies, c, cancel);
            double ratio = batched.PerSecond / single.PerSecond;
            if (r.GetValue(json))
                io.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    model = m.Folder, device = note, requests = n, concurrency = c, prompt_tokens = len, logprobs = k,
                    batched = new { max_batch = r.GetValue(maxBatch), requests_per_second = batched.PerSecond, p50_ms = batched.P50, p99_ms = batched.P99, rows_per_pass = batched.RowsPerPass },
                    one_per_pass = new { requests_per_second = single.PerSecond, p50_ms = single.P50, p99_ms = single.P99 },
                    ratio,
                }));
            else
            {
                io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}\n{n:N0} requests ({len} tokens, max_tokens 1, logprobs {k}), {c} in flight, loopback:");
                io.Out.WriteLine($"  dynamic batching (max {r.GetValue(maxBatch)}): {batched.PerSecond,8:N0} requests/s, p50 {batched.P50:F1} ms, p99 {batched.P99:F1} ms, {batched.RowsPerPass:F1} rows per pass");
                io.Out.WriteLine($"  one request per pass:         {single.PerSecond,8:N0} requests/s, p50 {single.P50:F1} ms, p99 {single.P99:F1} ms");
                io.Out.WriteLine($"  batching: {ratio:F2}x");
            }
            return 0;
        });
        return cmd;
    }

    sealed record Result(double PerSecond, double P50, double P99, double RowsPerPass);

    /// <summary>Every body through a fresh server with <paramref name="maxBatch"/>, <paramref name="concurrency"/> in flight;
    /// a failed request fails the benchmark.</summary>
    static async Task<Result> Measure(Model m, int maxBatch, string[] bodies, int concurrency, CancellationToken cancel)
    {
        await using var service = new CompletionService(m, "bench", maxBatch: maxBatch);
        var app = await CompletionHost.Start(service, "127.0.0.1", 0, null);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(CompletionHost.Address(app)), Timeout = TimeSpan.FromMinutes(10) };
            async Task One(string body)
            {
                using var resp = await http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"), cancel);
                if (!resp.IsSuccessStatusCode) throw new PolyEngineException($"bench serve: a request failed with {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync(cancel)}");
            }
            await One(bodies[0]);   // warm-up: JIT, first pass
            var before = service.Scheduler.Stats;
            var latencies = new double[bodies.Length];
            using var slots = new SemaphoreSlim(concurrency);
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(bodies.Select(async (b, i) =>
            {
                await slots.WaitAsync(cancel);
                try
                {
                    var sw = Stopwatch.StartNew();
                    await One(b);
                    latencies[i] = sw.Elapsed.TotalMilliseconds;
                }
                finally { slots.Release(); }
            }));
            double seconds = clock.Elapsed.TotalSeconds;
            var after = service.Scheduler.Stats;
            Array.Sort(latencies);
            return new Result(bodies.Length / seconds, latencies[latencies.Length / 2], latencies[Math.Min(latencies.Length - 1, (int)(latencies.Length * 0.99))],
                (double)(after.Rows - before.Rows) / Math.Max(1, after.Passes - before.Passes));
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}

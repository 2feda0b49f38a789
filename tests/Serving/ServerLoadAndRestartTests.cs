using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using PolyEngine.Cli.Serving;
using PolyEngine.Interventions;
using PolyEngine.Serving;
using Xunit;
using Xunit.Abstractions;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Serving;

/// <summary>
/// The server under load and under faults, on loopback only: a bounded load test (2,000 requests, 64 in flight) that
/// loses none and reports throughput and latency; a server stopped mid-run and started again, through which the client
/// retries to the same trials; an API key; and <c>inject --endpoint</c> from the command line, with token ids and with
/// text, resuming from its log.
/// </summary>
public class ServerLoadAndRestartTests(FullVocabGpt2 toy, ITestOutputHelper output) : IClassFixture<FullVocabGpt2>
{
    const string Name = "toy-gpt2";

    static async Task<(CompletionService Service, WebApplication App)> Start(Model model, int port = 0, string? apiKey = null)
    {
        var service = new CompletionService(model, Name, maxBatch: 64);
        return (service, await CompletionHost.Start(service, "127.0.0.1", port, apiKey));
    }

    static async Task Stop(CompletionService service, WebApplication app)
    {
        await app.StopAsync();
        await app.DisposeAsync();
        await service.DisposeAsync();
    }

    [Fact]
    public async Task TwoThousandRequestsSixtyFourInFlightLoseNone()
    {
        using var model = Model.Load(toy.Path);
        var (service, app) = await Start(model);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(CompletionHost.Address(app)) };
            using var slots = new SemaphoreSlim(64);
            var latencies = new double[2000];
            var clock = Stopwatch.StartNew();
            var statuses = await Task.WhenAll(Enumerable.Range(0, 2000).Select(async i =>
            {
                await slots.WaitAsync();
                try
                {
                    var sw = Stopwatch.StartNew();
                    using var r = await http.PostAsync("/v1/completions", new StringContent(
                        $$"""{"model": "{{Name}}", "prompt": [{{i % 50000}}, 11, 22, {{(7 * i) % 50000}}], "max_tokens": 1, "logprobs": 5}""", Encoding.UTF8, "application/json"));
                    var body = JsonNode.Parse(await r.Content.ReadAsStringAsync())!;
                    latencies[i] = sw.Elapsed.TotalMilliseconds;
                    return r.StatusCode == HttpStatusCode.OK && body["choices"]![0]!["logprobs"]!["top_token_ids"]![0]!.AsArray().Count == 5;
                }
                finally { slots.Release(); }
            }));
            double seconds = clock.Elapsed.TotalSeconds;
            Assert.All(statuses, Assert.True);
            var (passes, rows) = service.Scheduler.Stats;
            Assert.Equal(2000, rows);
            Array.Sort(latencies);
            output.WriteLine($"2,000 requests, 64 in flight: {2000 / seconds:F0} requests/s; latency p50 {latencies[1000]:F1} ms, p99 {latencies[1980]:F1} ms; " +
                             $"{passes} forward passes ({(double)rows / passes:F1} rows each)");
            Assert.True(passes < rows, "concurrent requests should share forward passes");
        }
        finally { await Stop(service, app); }
    }

    /// <summary>The server stops mid-run and comes back on the same port; the client's retries carry the run through, and
    /// the trials are the engine's.</summary>
    [Fact]
    public async Task AServerRestartedMidRunIsRetriedThrough()
    {
        using var model = Model.Load(toy.Path);
        var plan = PolyEngine.Tests.Interventions.InjectionTests.Plan(model, trials: 6);
        var engine = InjectionRun.Run(new ModelTrials(model), plan);
        var (service, app) = await Start(model);
        var address = new Uri(CompletionHost.Address(app));
        var options = new EndpointOptions { Endpoint = address, ServedModel = Name, Concurrency = 4, MaxRetries = 10, FirstRetryDelay = TimeSpan.FromMilliseconds(50) };
        using var dir = new Fixtures.TempDir();
        using var client = new CompletionClient(options, (t, bos) => model.Encode(t, bos));
        using var log = new TrialLog(dir.File("requests.jsonl"), client);
        var run = Task.Run(() => InjectionRun.Run(log, plan));
        while (log.Sent < 10 && !run.IsCompleted) await Task.Delay(5);
        await Stop(service, app);   // requests in flight now fail and are retried
        await Task.Delay(200);
        (service, app) = await Start(model, address.Port);
        try
        {
            var served = await run;
            Assert.Equal(engine.Trials.Select(t => (t.CountBase, t.CountInjected, t.MassBase, t.MassInjected)), served.Trials.Select(t => (t.CountBase, t.CountInjected, t.MassBase, t.MassInjected)));
        }
        finally { await Stop(service, app); }
    }

    [Fact]
    public async Task AnApiKeyIsRequiredWhenSet()
    {
        using var model = Model.Load(toy.Path);
        var (service, app) = await Start(model, apiKey: "s3cret");
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(CompletionHost.Address(app)) };
            var body = $$"""{"model": "{{Name}}", "prompt": "a", "max_tokens": 1}""";
            using (var none = await http.PostAsync("/v1/completions", new StringContent(body)))
            {
                Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
                Assert.Contains("Authorization: Bearer", await none.Content.ReadAsStringAsync());
            }
            using (var health = await http.GetAsync("/health")) Assert.Equal(HttpStatusCode.OK, health.StatusCode);   // health checks need no key
            using var keyed = new HttpClient { BaseAddress = http.BaseAddress, DefaultRequestHeaders = { Authorization = new("Bearer", "s3cret") } };
            using (var ok = await keyed.PostAsync("/v1/completions", new StringContent(body))) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            using var wrong = new CompletionClient(new EndpointOptions { Endpoint = http.BaseAddress!, ServedModel = Name, ApiKey = "guess" }, null);
            var e = await Assert.ThrowsAsync<PolyEngineException>(() => wrong.TopAsync(new TrialPrompt("a", null), 3));
            Assert.Contains("API key was refused (401)", e.Message);
        }
        finally { await Stop(service, app); }
    }

    /// <summary><c>inject --endpoint</c>: with --model the trials table is the in-engine one; without it prompts go as text and
    /// types match on strings; a rerun into the same folder is complete, and a half-done one resumes from its log.</summary>
    [Fact]
    public async Task InjectThroughTheEndpointFromTheCommandLine()
    {
        using var dir = new Fixtures.TempDir();
        using var model = Model.Load(toy.Path);
        var likely = new[] { "We flew to", "She lives in" }.SelectMany(x => model.Run([model.Encode(x, prependBos: true)], new RunOptions { TopLogits = 6, Logits = LogitsMode.None }).Top!.Ids.Skip(1)).Distinct().ToArray();
        File.WriteAllText(dir.File("types.json"), new JsonObject([.. likely.Select(id => KeyValuePair.Create(id.ToString(), (JsonNode?)"location"))]).ToJsonString());
        File.WriteAllText(dir.File("types-strings.json"), new JsonObject([.. likely.Select(id => model.Tokenizer.Decode([id])).Distinct().Select(s => KeyValuePair.Create(s, (JsonNode?)"location"))]).ToJsonString());
        File.WriteAllText(dir.File("sets.json"), """{"location": {"target": [" Paris", " Rome"], "high_interference": [" int", " float"], "medium_interference": [" happy"], "random": [" the", " of", " and"]}}""");
        File.WriteAllText(dir.File("sentences.json"), """{"location": ["We flew to", "She lives in"]}""");
        string[] inputs = ["--token-sets", dir.File("sets.json"), "--sentences", dir.File("sentences.json"), "--tokens", "2", "--top", "10", "--format", "csv"];
        string[] common = ["--type-map", dir.File("types.json"), "--trials", "3", .. inputs];
        var engine = Run(["inject", "--model", toy.Path, .. common, "--out", dir.File("engine")]);
        Assert.True(engine.Code == 0, engine.Err);
        var (service, app) = await Start(model);
        string url = CompletionHost.Address(app);
        try
        {
            var served = Run(["inject", "--endpoint", url, "--served-model", Name, "--model", toy.Path, .. common, "--out", dir.File("served")]);
            Assert.True(served.Code == 0, served.Err);
            Assert.Contains("requests sent", served.Out);
            Assert.Equal(File.ReadAllLines(dir.File("engine/trials.csv")), File.ReadAllLines(dir.File("served/trials.csv")));
            Assert.Equal(File.ReadAllLines(dir.File("engine/summary.csv")), File.ReadAllLines(dir.File("served/summary.csv")));
            var manifest = JsonNode.Parse(File.ReadAllText(dir.File("served/manifest.json")))!;
            Assert.Equal(Name, (string)manifest["model"]!["served_model"]!);
            var again = Run(["inject", "--endpoint", url, "--served-model", Name, "--model", toy.Path, .. common, "--out", dir.File("served")]);
            Assert.True(again.Code == 0, again.Err);
            Assert.Contains("nothing to do", again.Out);

            // Text mode: the same outcomes, since the server encodes the text as the tokenizer does (no BOS on either side).
            var engineNoBos = Run(["inject", "--model", toy.Path, .. common, "--bos", "off", "--out", dir.File("engine-nobos")]);
            Assert.True(engineNoBos.Code == 0, engineNoBos.Err);
            var asText = Run(["inject", "--endpoint", url, "--served-model", Name, "--type-map", dir.File("types-strings.json"), "--trials", "3", .. inputs, "--out", dir.File("text")]);
            Assert.True(asText.Code == 0, asText.Err);
            Assert.Contains("prompts as text", asText.Out);
            Assert.Equal(File.ReadAllLines(dir.File("engine-nobos/summary.csv")), File.ReadAllLines(dir.File("text/summary.csv")));

            var wrongModel = Run(["inject", "--endpoint", url, "--served-model", "other", "--model", toy.Path, .. common, "--out", dir.File("wrong")]);
            Assert.NotEqual(0, wrongModel.Code);
            Assert.Contains("does not serve \"other\" (it serves \"toy-gpt2\"); fix --served-model", wrongModel.Err);

            // Killed mid-run (the server goes away and the client has no retries left), then rerun: the log answers what was
            // asked before, and the tables are the uninterrupted run's.
            string[] longer = ["--type-map", dir.File("types.json"), "--trials", "20", .. inputs];
            var whole = Run(["inject", "--model", toy.Path, .. longer, "--out", dir.File("whole")]);
            Assert.True(whole.Code == 0, whole.Err);
            string[] half = ["inject", "--endpoint", url, "--served-model", Name, "--model", toy.Path, .. longer, "--concurrency", "1", "--retries", "0", "--out", dir.File("half")];
            var first = Task.Run(() => Run(half));
            string log = dir.File("half/requests.jsonl");
            while (!first.IsCompleted && (!File.Exists(log) || File.ReadAllLines(log).Length < 10)) await Task.Delay(1);
            await Stop(service, app);
            var killed = await first;
            Assert.True(killed.Code != 0, "the run should have lost its server: " + killed.Out);
            Assert.Contains("cannot reach the server", killed.Err);
            (service, app) = await Start(model, new Uri(url).Port);
            var resumed = Run(half);
            Assert.True(resumed.Code == 0, resumed.Err);
            Assert.Contains("answers of an earlier run are in requests.jsonl", resumed.Out);
            Assert.Equal(File.ReadAllLines(dir.File("whole/trials.csv")), File.ReadAllLines(dir.File("half/trials.csv")));
        }
        finally { await Stop(service, app); }
    }
}

/// <summary><c>--tokenizer DIR</c>: a served model's tokenizer.json without its weights gives the same ids as its model
/// folder; a tokenizer PolyEngine cannot encode exactly is refused.</summary>
public class TokenizerFolderTests
{
    [Fact]
    public async Task ATokenizerFolderSendsTheModelsIds()
    {
        using var dir = new Fixtures.TempDir();
        PolyEngine.Toys.ToyModels.Write(PolyEngine.Toys.ToyModels.Preset(PolyEngine.Models.ModelFamily.GptNeoX, "tiny"), 2, dir.File("neox"));
        Directory.CreateDirectory(dir.File("tok"));
        File.Copy(dir.File("neox/tokenizer.json"), dir.File("tok/tokenizer.json"));
        File.WriteAllText(dir.File("tok/tokenizer_config.json"), """{"bos_token": "<|endoftext|>"}""");
        using var model = Model.Load(dir.File("neox"));
        var (tok, dVocab, bos) = PolyEngine.Tokenization.ModelTokenizer.ForFolder(dir.File("tok"));
        Assert.Equal(model.Spec.BosTokenId, bos);
        Assert.True(dVocab <= model.Spec.DVocab && dVocab > 50000, $"{dVocab}");
        Assert.Equal(model.Encode("We flew to Paris, 1234 times!", prependBos: false), tok.Encode("We flew to Paris, 1234 times!"));

        var likely = model.Run([model.Encode("We flew to", prependBos: true)], new RunOptions { TopLogits = 6, Logits = LogitsMode.None }).Top!.Ids.Skip(1).ToArray();
        File.WriteAllText(dir.File("types.json"), new JsonObject([.. likely.Select(id => KeyValuePair.Create(id.ToString(), (JsonNode?)"location"))]).ToJsonString());
        File.WriteAllText(dir.File("sets.json"), """{"location": {"target": [" Paris", " Rome"], "high_interference": [" int", " float"], "medium_interference": [" happy"], "random": [" the", " of", " and"]}}""");
        File.WriteAllText(dir.File("sentences.json"), """{"location": ["We flew to", "She lives in"]}""");
        string[] common = ["--type-map", dir.File("types.json"), "--token-sets", dir.File("sets.json"), "--sentences", dir.File("sentences.json"), "--trials", "2", "--tokens", "2",
            "--top", "10", "--format", "csv"];
        var service = new CompletionService(model, "neox");
        var app = await CompletionHost.Start(service, "127.0.0.1", 0, null);
        try
        {
            string url = CompletionHost.Address(app);
            var withModel = Run(["inject", "--endpoint", url, "--served-model", "neox", "--model", dir.File("neox"), .. common, "--out", dir.File("a")]);
            Assert.True(withModel.Code == 0, withModel.Err);
            var withTokenizer = Run(["inject", "--endpoint", url, "--served-model", "neox", "--tokenizer", dir.File("tok"), .. common, "--out", dir.File("b")]);
            Assert.True(withTokenizer.Code == 0, withTokenizer.Err);
            Assert.Contains($"bos: prepended, token {bos}", withTokenizer.Out);
            Assert.Equal(File.ReadAllLines(dir.File("a/trials.csv")), File.ReadAllLines(dir.File("b/trials.csv")));
            var both = Run(["inject", "--endpoint", url, "--served-model", "neox", "--model", dir.File("neox"), "--tokenizer", dir.File("tok"), .. common, "--out", dir.File("c")]);
            Assert.Contains("not both", both.Err);
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
            await service.DisposeAsync();
        }
    }

    [Theory]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?i:'s|'t)"}}, {"type": "ByteLevel", "use_regex": false}]}""")]
    [InlineData("""{"type": "ByteLevel", "add_prefix_space": true}""")]
    [InlineData("""{"type": "Metaspace"}""")]
    public void TokenizersItCannotEncodeExactlyAreRefused(string pre)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), $$"""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {{pre}}}""");
        var e = Assert.Throws<PolyEngineException>(() => PolyEngine.Tokenization.ModelTokenizer.ForFolder(dir.Path));
        Assert.Contains("is not GPT-2's byte-level split", e.Message);
        Assert.Contains("run without --tokenizer to send text", e.Message);
    }
}

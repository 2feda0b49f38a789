using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using PolyEngine.Cli.Serving;
using PolyEngine.Interventions;
using PolyEngine.Serving;
using Xunit;

namespace PolyEngine.Tests.Serving;

/// <summary>
/// <c>polyengine serve</c> on loopback (an in-process host on a free port) and the client against it: completions equal
/// the engine's own greedy steps and log-probabilities; requests with different edits share passes yet each gets what
/// it would alone; the injection trials through the endpoint are exactly the in-engine ones; every bad request is a 4xx
/// JSON error and the server keeps serving.
/// </summary>
public class ServingTests : IClassFixture<FullVocabGpt2>, IAsyncLifetime
{
    readonly string _gpt2;
    Model _model = null!;
    CompletionService _service = null!;
    WebApplication _app = null!;
    HttpClient _http = null!;
    const string Name = "toy-gpt2";

    public ServingTests(FullVocabGpt2 toy) => _gpt2 = toy.Path;

    public async Task InitializeAsync()
    {
        _model = Model.Load(_gpt2);
        _service = new CompletionService(_model, Name, new ServingLimits { MaxRequestBytes = 64 << 10, MaxLogprobs = 40 }, maxBatch: 16);
        _app = await CompletionHost.Start(_service, "127.0.0.1", 0, apiKey: null);
        _http = new HttpClient { BaseAddress = new Uri(CompletionHost.Address(_app)) };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        await _service.DisposeAsync();
        _model.Dispose();
    }

    async Task<(HttpStatusCode Status, JsonNode Body)> Post(string json)
    {
        using var r = await _http.PostAsync("/v1/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        return (r.StatusCode, JsonNode.Parse(await r.Content.ReadAsStringAsync())!);
    }

    static string Ids(int[] ids) => "[" + string.Join(",", ids) + "]";

    /// <summary>Greedy tokens and every log-probability as the engine computes them step by step.</summary>
    [Fact]
    public async Task CompletionsAreTheEnginesGreedySteps()
    {
        var prompt = _model.Encode("The capital of France is", prependBos: true);
        var (status, body) = await Post($$"""{"model": "{{Name}}", "prompt": {{Ids(prompt)}}, "max_tokens": 4, "logprobs": 5, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var lp = body["choices"]![0]!["logprobs"]!;
        var ids = prompt.ToList();
        for (int step = 0; step < 4; step++)
        {
            var top = _model.Run([ids.ToArray()], new RunOptions { TopLogits = 5, Logits = LogitsMode.None }).Top!;
            Assert.Equal(top.Ids[0], (int)lp["token_ids"]![step]!);
            for (int j = 0; j < 5; j++)
            {
                Assert.Equal(top.Ids[j], (int)lp["top_token_ids"]![step]![j]!);
                Assert.Equal(top.Logits[j] - top.LogSumExp[0], (float)(double)lp["top_token_logprobs"]![step]![j]!);
            }
            Assert.Equal(_model.Tokenizer.Decode([top.Ids[0]]), (string)lp["tokens"]![step]!);
            ids.Add(top.Ids[0]);
        }
        Assert.Equal(_model.Tokenizer.Decode(ids.Skip(prompt.Length).ToArray()), (string)body["choices"]![0]!["text"]!);
        Assert.Equal("length", (string)body["choices"]![0]!["finish_reason"]!);
        Assert.Equal(prompt.Length, (int)body["usage"]!["prompt_tokens"]!);

        // Text prompts are encoded as the HF tokenizer does (no BOS); sampling with a seed is reproducible.
        var text = await Post($$"""{"model": "{{Name}}", "prompt": ["The capital of France is", "Hello"], "max_tokens": 1, "logprobs": 1}""");
        var noBos = _model.Run([_model.Encode("The capital of France is", prependBos: false)], new RunOptions { TopLogits = 1, Logits = LogitsMode.None }).Top!;
        Assert.Equal(noBos.Ids[0], (int)text.Body["choices"]![0]!["logprobs"]!["token_ids"]![0]!);
        Assert.Equal(2, text.Body["choices"]!.AsArray().Count);
        string Sampled(JsonNode b) => (string)b["choices"]![0]!["text"]!;
        var s1 = await Post($$"""{"model": "{{Name}}", "prompt": "Hello", "max_tokens": 5, "temperature": 1.5, "seed": 7}""");
        var s2 = await Post($$"""{"model": "{{Name}}", "prompt": "Hello", "max_tokens": 5, "temperature": 1.5, "seed": 7}""");
        Assert.Equal(Sampled(s1.Body), Sampled(s2.Body));
    }

    /// <summary>Concurrent requests with different edits share forward passes, yet each gets exactly what the engine gives
    /// that prompt alone with its edits.</summary>
    [Fact]
    public async Task RequestsWithDifferentEditsAreBatchedAsIfAlone()
    {
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var vector = new Rng(5).Normals([64], 1f);
        string[] edits =
        [
            "",
            $$""", "polyengine": {"edits": [{"hook": "{{hook}}", "add": [{{string.Join(",", vector.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))}}], "scale": 6}]}""",
            $$""", "polyengine": {"edits": [{"hook": "{{hook}}", "coordinate": 3, "factor": 0}, {"hook": "blocks.1.hook_mlp_out", "coordinate": 7, "value": 2.5, "from": 1}]}""",
        ];
        string[] texts = ["We flew to", "The capital of France is a city called", "She lives in"];
        var before = _service.Scheduler.Stats;
        var answers = await Task.WhenAll(Enumerable.Range(0, 9).Select(i =>
            Post($$"""{"model": "{{Name}}", "prompt": "{{texts[i % 3]}}", "max_tokens": 2, "logprobs": 8{{edits[i / 3]}}}""")));
        var after = _service.Scheduler.Stats;
        Assert.True(after.Rows - before.Rows == 18 && after.Passes - before.Passes < 18, $"9 prompts × 2 steps should share passes: {after.Passes - before.Passes} passes");
        for (int i = 0; i < 9; i++)
        {
            Assert.Equal(HttpStatusCode.OK, answers[i].Status);
            var specs = i / 3 == 0 ? [] : EditSpec.Parse(JsonNode.Parse("{" + edits[i / 3].TrimStart(',', ' ') + "}")!["polyengine"]!["edits"]!.ToJsonString(), "test");
            var ids = _model.Encode(texts[i % 3], prependBos: false).ToList();
            var lp = answers[i].Body["choices"]![0]!["logprobs"]!;
            for (int step = 0; step < 2; step++)
            {
                var alone = _model.Run([ids.ToArray()], new RunOptions
                {
                    TopLogits = 8, Logits = LogitsMode.None, Edits = [.. specs.Select(e => e.Resolve(_model.Spec, 1, ids.Count))],
                }).Top!;
                for (int j = 0; j < 8; j++)
                {
                    Assert.Equal(alone.Ids[j], (int)lp["top_token_ids"]![step]![j]!);
                    Assert.Equal(alone.Logits[j] - alone.LogSumExp[0], (float)(double)lp["top_token_logprobs"]![step]![j]!, 1e-5f);
                }
                ids.Add(alone.Ids[0]);
            }
        }
    }

    /// <summary>BatchEdits on its own (the library's): rows of different lengths with row-wise, listed-position and no
    /// edits, merged into one batch, give each row what it gets alone.</summary>
    [Fact]
    public void MergedEditsGiveEachRowWhatItGetsAlone()
    {
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var mlp = HookName.Parse("blocks.1.hook_mlp_out");
        IReadOnlyList<EditSpec>[] edits =
        [
            [new EditSpec(hook) { Coordinate = 2, Factor = 3f, From = 1 }],
            [],
            [new EditSpec(mlp) { Coordinate = 5, Value = -4f, Positions = [0, 2] }, new EditSpec(hook) { Add = new Rng(2).Normals([64], 1f), Scale = 3f }],
            [new EditSpec(mlp) { Add = new Rng(3).Normals([64], 1f), Positions = [1, 3] }],
        ];
        int[][] rows = [[5, 17, 300, 2, 41], [9, 12], [7, 8, 9], [100, 200, 300, 400]];
        var merged = BatchEdits.Merge(_model.Spec, edits, [.. rows.Select(r => r.Length)]);
        var together = _model.Run(rows, new RunOptions { TopLogits = 6, Logits = LogitsMode.None, Edits = merged }).Top!;
        var plain = _model.Run(rows, new RunOptions { TopLogits = 6, Logits = LogitsMode.None }).Top!;
        Assert.All(new[] { 0, 2, 3 }, b => Assert.NotEqual(plain.Logits[b * 6], together.Logits[b * 6]));   // the edits do change the edited rows
        Assert.Equal(plain.Logits[6], together.Logits[6]);                                                   // and not the row without
        for (int b = 0; b < rows.Length; b++)
        {
            var alone = _model.Run([rows[b]], new RunOptions { TopLogits = 6, Logits = LogitsMode.None,
                Edits = [.. edits[b].Select(e => e.Resolve(_model.Spec, 1, rows[b].Length))] }).Top!;
            for (int j = 0; j < 6; j++)
            {
                Assert.Equal(alone.Ids[j], together.Ids[b * 6 + j]);
                Assert.Equal(alone.Logits[j], together.Logits[b * 6 + j], 1e-4f);
            }
        }
    }

    /// <summary>The injection trials through the endpoint — the client sending the engine's token ids to the server — are
    /// the in-engine trials: the same ids, counts and masses.</summary>
    [Fact]
    public void EndpointTrialsAreTheEngineTrials()
    {
        var plan = PolyEngine.Tests.Interventions.InjectionTests.Plan(_model, trials: 3);
        // Random toy weights rarely rank real place names high: type the sentences' own likeliest next tokens instead, so
        // counts and masses are not all zero.
        var likely = plan.Sentences["location"].Take(2).SelectMany(x =>
        {
            var top = _model.Run([_model.Encode(x, prependBos: true)], new RunOptions { TopLogits = 6, Logits = LogitsMode.None }).Top!;
            return top.Ids.Skip(1).Take(5);
        });
        plan = plan with { TypeOfId = likely.Distinct().ToDictionary(id => id, _ => "location") };
        var engine = InjectionRun.Run(new ModelTrials(_model), plan);
        using var client = new CompletionClient(new EndpointOptions { Endpoint = _http.BaseAddress!, ServedModel = Name, Concurrency = 8 }, (t, bos) => _model.Encode(t, bos));
        var served = InjectionRun.Run(client, plan);
        Assert.Equal(engine.Trials.Count, served.Trials.Count);
        for (int i = 0; i < engine.Trials.Count; i++)
        {
            var (a, b) = (engine.Trials[i], served.Trials[i]);
            Assert.Equal(a.PromptIds, b.PromptIds);
            Assert.Equal((a.Type, a.Category, a.Sentence, a.Trial, a.CountBase, a.CountInjected), (b.Type, b.Category, b.Sentence, b.Trial, b.CountBase, b.CountInjected));
            Assert.Equal(a.MassBase, b.MassBase, 12);
            Assert.Equal(a.MassInjected, b.MassInjected, 12);
        }
        Assert.Contains(engine.Trials, t => t.CountBase > 0);   // the targets do appear among the candidates
        Assert.Contains(engine.Trials, t => t.CountInjected != t.CountBase);
    }

    /// <summary>Every bad request is a one-line JSON error with its 4xx status, and the server answers the next one.</summary>
    [Theory]
    [InlineData("{not json", 400, "not valid JSON")]
    [InlineData("[1, 2]", 400, "must be a JSON object")]
    [InlineData("""{"model": "toy-gpt2"}""", 400, "\"prompt\" is missing")]
    [InlineData("""{"prompt": "a"}""", 400, "\"model\" is missing")]
    [InlineData("""{"model": "other", "prompt": "a"}""", 404, "is not served here")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "frequency_boost": 1}""", 400, "unknown field \"frequency_boost\"")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "logprobs": 41}""", 400, "\"logprobs\" must be an integer in 0..40")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "max_tokens": 0}""", 400, "\"max_tokens\" must be an integer")]
    [InlineData("""{"model": "toy-gpt2", "prompt": [1, 2, 50257]}""", 400, "outside the vocabulary")]
    [InlineData("""{"model": "toy-gpt2", "prompt": [1, -2]}""", 400, "non-negative integer id")]
    [InlineData("""{"model": "toy-gpt2", "prompt": ""}""", 400, "empty string")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "stream": true}""", 400, "\"stream\" must be false")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "n": 2}""", 400, "\"n\" must be 1")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "temperature": -1}""", 400, "\"temperature\"")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "max_tokens": 256}""", 400, "past the context limit 256")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "polyengine": {"edits": [{"hook": "blocks.7.hook_resid_post", "coordinate": 1, "factor": 0}]}}""", 400, "has no hook")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "polyengine": {"edits": [{"hook": "blocks.0.hook_resid_post", "add": [1, 2]}]}}""", 400, "the hook is 64 wide")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "polyengine": {"edits": [{"hook": "blocks.0.hook_resid_post", "coordinate": 1, "factor": 0, "rows": [0]}]}}""", 400, "\"rows\" cannot be given")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "polyengine": {"steer": 1}}""", 400, "unknown field \"polyengine.steer\"")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "polyengine": {"edits": [{"hook": "blocks.0.hook_resid_post", "coordinate": 1, "factor": 0, "positions": [0]}]}}""", 400, "\"positions\" is not served")]
    [InlineData("""{"model": "toy-gpt2", "prompt": "a", "temperature": 1e400}""", 400, "\"temperature\" must be a number")]
    public async Task BadRequestsAre4xxAndTheServerStaysUp(string body, int status, string message)
    {
        var (code, json) = await Post(body);
        Assert.Equal(status, (int)code);
        string text = (string)json["error"]!["message"]!;
        Assert.Contains(message, text);
        Assert.DoesNotContain('\n', text);
        var ok = await Post($$"""{"model": "{{Name}}", "prompt": "a", "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.OK, ok.Status);
    }

    [Fact]
    public async Task TransportLevelRefusalsAreJsonToo()
    {
        var big = await Post($$"""{"model": "{{Name}}", "prompt": "{{new string('a', 70_000)}}"}""");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.Status);
        Assert.Contains("over this server's limit", (string)big.Body["error"]!["message"]!);
        using (var get = await _http.GetAsync("/v1/completions")) Assert.Equal(HttpStatusCode.MethodNotAllowed, get.StatusCode);
        using (var none = await _http.GetAsync("/v2/anything"))
        {
            Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);
            Assert.Contains("the routes are", await none.Content.ReadAsStringAsync());
        }
        var models = JsonNode.Parse(await _http.GetStringAsync("/v1/models"))!;
        Assert.Equal(Name, (string)models["data"]![0]!["id"]!);
        Assert.Equal("ok", (string)JsonNode.Parse(await _http.GetStringAsync("/health"))!["status"]!);
    }
}

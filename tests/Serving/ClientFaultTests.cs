using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using PolyEngine.Interventions;
using PolyEngine.Serving;
using Xunit;

namespace PolyEngine.Tests.Serving;

/// <summary>
/// The client against a scripted server (an in-memory handler): transient refusals (429 with Retry-After, 500, 503, a
/// dropped connection) are retried until an answer comes; a wrong key is one error after one attempt; too few
/// log-probabilities, garbage and token strings where ids were asked for are one-line errors that say what to fix; the
/// append-only log answers a rerun without asking again, and survives a torn last line.
/// </summary>
public class ClientFaultTests
{
    /// <summary>Answers each request with the next scripted response (the last one repeats) and counts the requests.</summary>
    sealed class Script(params Func<HttpRequestMessage, HttpResponseMessage>[] steps) : HttpMessageHandler
    {
        public int Requests;
        public readonly List<string> Bodies = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancel)
        {
            int i = Interlocked.Increment(ref Requests) - 1;
            string body = request.Content is null ? "" : await request.Content.ReadAsStringAsync(cancel);
            lock (Bodies) Bodies.Add(body);
            return steps[Math.Min(i, steps.Length - 1)](request);
        }
    }

    static HttpResponseMessage Json(HttpStatusCode status, string body) => new(status) { Content = new StringContent(body, Encoding.UTF8, "application/json") };

    /// <summary>A PolyEngine-shaped answer: candidates ids 10, 11, … with log-probabilities −1, −2, ….</summary>
    static HttpResponseMessage Answer(HttpRequestMessage _, int k = 3) => Json(HttpStatusCode.OK, new JsonObject
    {
        ["choices"] = new JsonArray(new JsonObject
        {
            ["text"] = "x",
            ["logprobs"] = new JsonObject
            {
                ["top_token_ids"] = new JsonArray(new JsonArray([.. Enumerable.Range(0, k).Select(j => (JsonNode)(10 + j))])),
                ["top_token_logprobs"] = new JsonArray(new JsonArray([.. Enumerable.Range(0, k).Select(j => (JsonNode)(-1.0 - j))])),
            },
        }),
    }.ToJsonString());

    static CompletionClient Client(Script script, int retries = 5, bool ids = true) => new(new EndpointOptions
    {
        Endpoint = new Uri("http://served.test:8000"), ServedModel = "big", MaxRetries = retries, FirstRetryDelay = TimeSpan.FromMilliseconds(1),
        AttemptTimeout = TimeSpan.FromSeconds(30),
    }, ids ? (text, _) => [.. text.Select(c => (int)c)] : null, script, ids ? id => $"<{id}>" : null);

    static readonly TrialPrompt Prompt = new("ab", [97, 98]);

    [Fact]
    public async Task TransientFailuresAreRetriedUntilAnAnswerComes()
    {
        var script = new Script(
            _ => new HttpResponseMessage(HttpStatusCode.TooManyRequests) { Headers = { RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(TimeSpan.Zero) } },
            _ => Json(HttpStatusCode.InternalServerError, """{"error": {"message": "busy"}}"""),
            _ => new HttpResponseMessage(HttpStatusCode.ServiceUnavailable),
            _ => throw new HttpRequestException("connection reset"),
            r => Answer(r));
        using var client = Client(script);
        var top = await client.TopAsync(Prompt, 3);
        Assert.Equal(5, script.Requests);
        Assert.Equal([10, 11, 12], top.Select(t => t.Id));
        Assert.Equal(MathF.Exp(-2f), top[1].Probability);
        // What was sent: the ids, one token, k log-probs, no echo, greedy, ids back.
        var body = JsonNode.Parse(script.Bodies[^1])!;
        Assert.Equal("[97,98]", body["prompt"]!.ToJsonString());
        Assert.Equal((1, 3, false, 0.0, true, "big"), ((int)body["max_tokens"]!, (int)body["logprobs"]!, (bool)body["echo"]!, (double)body["temperature"]!,
            (bool)body["return_tokens_as_token_ids"]!, (string)body["model"]!));
    }

    /// <summary>A 429's Retry-After is waited out, not the (here 1 ms) backoff.</summary>
    [Fact]
    public async Task RetryAfterIsHonoured()
    {
        var script = new Script(
            _ => new HttpResponseMessage(HttpStatusCode.TooManyRequests) { Headers = { RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(TimeSpan.FromSeconds(1)) } },
            r => Answer(r));
        using var client = Client(script);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await client.TopAsync(Prompt, 3);
        Assert.Equal(2, script.Requests);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(0.95), $"retried after {clock.Elapsed.TotalMilliseconds:F0} ms, before the server's Retry-After of 1 s");
    }

    [Fact]
    public async Task RetriesRunOutWithOneLine()
    {
        var script = new Script(_ => Json(HttpStatusCode.InternalServerError, """{"error": {"message": "the model crashed"}}"""));
        using var client = Client(script, retries: 2);
        var e = await Assert.ThrowsAsync<PolyEngineException>(() => client.TopAsync(Prompt, 3));
        Assert.Equal(3, script.Requests);
        Assert.Contains("500", e.Message);
        Assert.Contains("the model crashed", e.Message);
    }

    [Theory]
    [InlineData(401, """{"error": {"message": "bad key"}}""", "API key was refused (401)", 1)]
    [InlineData(400, """{"error": {"message": "logprobs must be at most 20"}}""", "logprobs must be at most 20", 1)]
    [InlineData(200, "<html>hello</html>", "not an OpenAI completion (not JSON", 1)]
    [InlineData(200, """{"choices": []}""", "not an OpenAI completion", 1)]
    [InlineData(200, """{"choices": [{"logprobs": {"top_logprobs": [{"token_id:5": -1.0}]}}]}""", "returned 1 of the 3 top log-probabilities asked for; let it return more (vLLM: --max-logprobs 3", 1)]
    [InlineData(200, """{"choices": [{"logprobs": {"top_logprobs": [{" a": -1.0, " b": -2, " c": -3}]}}]}""", "answered with token strings", 1)]
    public async Task RefusalsAndGarbageAreOneLineErrorsWithoutRetryStorms(int status, string body, string message, int requests)
    {
        var script = new Script(_ => Json((HttpStatusCode)status, body));
        using var client = Client(script);
        var e = await Assert.ThrowsAsync<PolyEngineException>(() => client.TopAsync(Prompt, 3));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(requests, script.Requests);
    }

    /// <summary>The checks that the served model is the one the tokenizer is for: its name, its vocabulary size, and the
    /// strings it gives its ids; and a body that is not UTF-8.</summary>
    [Fact]
    public async Task AMismatchedServerOrTokenizerIsSaid()
    {
        var models = new Script(_ => Json(HttpStatusCode.OK, """{"object": "list", "data": [{"id": "small", "d_vocab": 100}, {"id": "big", "d_vocab": 50257}]}"""));
        using (var client = Client(models)) await client.Check(50257);
        using (var client = Client(models))
            Assert.Contains("has a vocabulary of 50257 tokens, the tokenizer 50304", (await Assert.ThrowsAsync<PolyEngineException>(() => client.Check(50304))).Message);
        var other = new Script(_ => Json(HttpStatusCode.OK, """{"data": [{"id": "small"}]}"""));
        using (var client = Client(other))
            Assert.Contains("does not serve \"big\" (it serves \"small\")", (await Assert.ThrowsAsync<PolyEngineException>(() => client.Check(null))).Message);
        var noList = new Script(_ => new HttpResponseMessage(HttpStatusCode.NotFound));
        using (var client = Client(noList)) await client.Check(5);   // a server without /v1/models: the completions will tell

        // The server's strings for its ids are not the tokenizer's (the test tokenizer decodes id i as "<i>").
        var strings = new Script(_ => Json(HttpStatusCode.OK,
            """{"choices": [{"logprobs": {"top_token_ids": [[10, 11, 12]], "top_token_logprobs": [[-1, -2, -3]], "top_token_strings": [["<10>", "x", "<12>"]]}}]}"""));
        using (var client = Client(strings))
            Assert.Contains("the server's token 11 is \"x\", not \"<11>\"", (await Assert.ThrowsAsync<PolyEngineException>(() => client.TopAsync(Prompt, 3))).Message);

        var broken = new Script(_ => new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent([(byte)'{', 0xC3, 0x28, (byte)'}']) });
        using (var client = Client(broken))
            Assert.Contains("not valid UTF-8 (byte 1 of 4)", (await Assert.ThrowsAsync<PolyEngineException>(() => client.TopAsync(Prompt, 3))).Message);
    }

    [Fact]
    public async Task WithoutATokenizerPromptsGoAsTextAndTokensComeBackAsStrings()
    {
        var script = new Script(_ => Json(HttpStatusCode.OK, """{"choices": [{"logprobs": {"top_logprobs": [{" b": -2.0, " a": -1.0, "\u00e9": -3.0}]}}]}"""));
        using var client = Client(script, ids: false);
        var top = await client.TopAsync(new TrialPrompt("ab", null), 3);
        Assert.Equal([" a", " b", "é"], top.Select(t => t.Text));
        Assert.All(top, t => Assert.Equal(-1, t.Id));
        var sent = JsonNode.Parse(script.Bodies[0])!;
        Assert.Equal("ab", (string)sent["prompt"]!);
        Assert.Null(sent["return_tokens_as_token_ids"]);
    }

    [Fact]
    public async Task AnUnreachableServerIsOneLine()
    {
        var script = new Script(_ => throw new HttpRequestException("Connection refused (served.test:8000)"));
        using var client = Client(script, retries: 1);
        var e = await Assert.ThrowsAsync<PolyEngineException>(() => client.TopAsync(Prompt, 3));
        Assert.Contains("cannot reach the server", e.Message);
        Assert.Equal(2, script.Requests);
        var tls = new Script(_ => throw new HttpRequestException("SSL failed", new System.Security.Authentication.AuthenticationException("certificate untrusted")));
        using var tlsClient = Client(tls);
        var t = await Assert.ThrowsAsync<PolyEngineException>(() => tlsClient.TopAsync(Prompt, 3));
        Assert.Contains("TLS failed (certificate untrusted)", t.Message);
        Assert.Equal(1, tls.Requests);   // retrying cannot fix a certificate
    }

    /// <summary>The log: a rerun asks only for what the first run did not log; a torn last line is asked again.</summary>
    [Fact]
    public void TheLogAnswersARerunWithoutAskingAgain()
    {
        using var dir = new Fixtures.TempDir();
        string log = dir.File("requests.jsonl");
        TrialPrompt[] prompts = [.. Enumerable.Range(0, 6).Select(i => new TrialPrompt($"p{i}", [i, i + 1]))];
        var first = new Script(r => Answer(r, 4));
        List<NextToken[]> firstAnswers;
        using (var client = Client(first))
        using (var trials = new TrialLog(log, client))
            firstAnswers = [.. trials.Top(prompts[..4], 4)];
        Assert.Equal(4, first.Requests);
        File.AppendAllText(log, "{\"prompt\": \"ids:4,5\", \"top\": [[1, null, 0.5]]}");   // a kill before the newline: the line is not whole
        var second = new Script(r => Answer(r, 4));
        using (var client = Client(second))
        using (var trials = new TrialLog(log, client))
        {
            Assert.Equal(4, trials.Resumed);
            var all = trials.Top(prompts, 4);
            Assert.Equal(2, second.Requests);   // prompts 4 and 5 only
            Assert.Equal((4, 2), (trials.FromLog, trials.Sent));
            for (int i = 0; i < 4; i++) Assert.Equal(firstAnswers[i], all[i]);
        }
        Assert.Equal(6, File.ReadAllLines(log).Length);   // the torn line is gone
    }
}

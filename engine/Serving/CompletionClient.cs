using System.Net;
using System.Net.Http.Headers;
using System.Security.Authentication;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Http.Resilience;
using Polly;
using PolyEngine.Interventions;

namespace PolyEngine.Serving;

/// <summary>Where a client sends its requests and how hard it tries.</summary>
public sealed record EndpointOptions
{
    /// <summary>The server's base address (http://host:port, with or without /v1).</summary>
    public required Uri Endpoint { get; init; }
    /// <summary>The model name the server serves (vLLM's --served-model-name, or the model id).</summary>
    public required string ServedModel { get; init; }
    public string? ApiKey { get; init; }
    /// <summary>Requests in flight at once.</summary>
    public int Concurrency { get; init; } = 64;
    /// <summary>One attempt's limit: a large model behind a queue can take minutes.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>Retries of a transient failure (408, 429, 5xx, a refused or dropped connection), with exponential
    /// backoff and jitter, honouring Retry-After.</summary>
    public int MaxRetries { get; init; } = 8;
    public TimeSpan FirstRetryDelay { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// The next-token distribution of prompts from an OpenAI-compatible <c>/v1/completions</c> endpoint (vLLM, llama.cpp's
/// server, <c>polyengine serve</c>): one request per prompt with <c>max_tokens</c> 1, <c>logprobs</c> k, <c>echo</c>
/// false, temperature 0, at most <see cref="EndpointOptions.Concurrency"/> in flight. Prompts go as token ids when known
/// (then the answer's tokens are read as ids: PolyEngine's <c>top_token_ids</c>, or vLLM's <c>token_id:N</c> with
/// <c>return_tokens_as_token_ids</c>), else as text (tokens read as strings). Transient failures are retried through
/// Microsoft.Extensions.Http.Resilience; everything else is a one-line error naming the server and the fix.
/// </summary>
public sealed class CompletionClient : ITrialModel, IDisposable
{
    readonly HttpClient _http;
    readonly SemaphoreSlim _slots;
    readonly EndpointOptions _o;
    readonly Uri _completions;
    readonly Func<string, bool, int[]>? _encode;
    readonly Func<int, string>? _decode;

    /// <param name="encode">The served model's tokenizer (text, prepend BOS → ids), or null to send text.</param>
    /// <param name="decode">The same tokenizer's decoding of one id, to check the server's strings against (optional).</param>
    public CompletionClient(EndpointOptions options, Func<string, bool, int[]>? encode, HttpMessageHandler? inner = null, Func<int, string>? decode = null)
    {
        _decode = decode;
        if (options.Concurrency < 1) throw new PolyEngineException($"--concurrency {options.Concurrency}: give at least 1");
        if (options.Endpoint.Scheme is not ("http" or "https")) throw new PolyEngineException($"--endpoint {options.Endpoint}: give an http:// or https:// address");
        _o = options;
        _encode = encode;
        string path = options.Endpoint.AbsolutePath.TrimEnd('/');
        _completions = new Uri(options.Endpoint, (path.EndsWith("/v1") ? path : path + "/v1") + "/completions");
        var retry = new HttpRetryStrategyOptions
        {
            MaxRetryAttempts = Math.Max(1, options.MaxRetries), Delay = options.FirstRetryDelay, BackoffType = DelayBackoffType.Exponential, UseJitter = true,
            MaxDelay = TimeSpan.FromSeconds(30),   // a queue that stays full is retried every 30 s at most, not after minutes
            ShouldRetryAfterHeader = true,
            // Transient (408, 429, 5xx, connection failures, attempt timeouts), but not a TLS failure: retrying cannot fix it.
            ShouldHandle = args => ValueTask.FromResult(HttpClientResiliencePredicates.IsTransient(args.Outcome) && args.Outcome.Exception?.InnerException is not AuthenticationException),
        };
        var pipeline = new ResiliencePipelineBuilder<HttpResponseMessage>().AddRetry(retry).AddTimeout(options.AttemptTimeout).Build();
        if (options.MaxRetries == 0) pipeline = new ResiliencePipelineBuilder<HttpResponseMessage>().AddTimeout(options.AttemptTimeout).Build();
        _http = new HttpClient(new ResilienceHandler(pipeline) { InnerHandler = inner ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) } })
        {
            Timeout = Timeout.InfiniteTimeSpan,   // the pipeline times each attempt
        };
        if (options.ApiKey is not null) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        _slots = new SemaphoreSlim(options.Concurrency);
    }

    /// <summary>Whether prompts go as token ids (a tokenizer was given).</summary>
    public bool SendsIds => _encode is not null;

    public int[]? Encode(string text, bool prependBos) => _encode?.Invoke(text, prependBos);

    public IReadOnlyList<NextToken[]> Top(IReadOnlyList<TrialPrompt> prompts, int k, CancellationToken cancel = default) =>
        Task.WhenAll(prompts.Select(p => TopAsync(p, k, cancel))).GetAwaiter().GetResult();

    /// <summary>The top-<paramref name="k"/> next tokens of one prompt, most likely first.</summary>
    public async Task<NextToken[]> TopAsync(TrialPrompt prompt, int k, CancellationToken cancel = default)
    {
        var body = new JsonObject
        {
            ["model"] = _o.ServedModel, ["max_tokens"] = 1, ["logprobs"] = k, ["echo"] = false, ["temperature"] = 0,
            ["prompt"] = prompt.Ids is { } ids ? new JsonArray([.. ids.Select(i => (JsonNode)i)]) : prompt.Text,
        };
        if (prompt.Ids is not null) body["return_tokens_as_token_ids"] = true;
        await _slots.WaitAsync(cancel);
        try
        {
            using var content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
            HttpResponseMessage response;
            try { response = await _http.PostAsync(_completions, content, cancel); }
            catch (HttpRequestException e) { throw Unreachable(e); }
            catch (Polly.Timeout.TimeoutRejectedException) { throw new PolyEngineException($"{_completions}: no answer within {_o.AttemptTimeout.TotalSeconds:F0} s, {_o.MaxRetries + 1} times; is the server overloaded?"); }
            using (response)
            {
                string text = await Text(response, cancel);
                if (response.StatusCode == HttpStatusCode.Unauthorized)
                    throw KeyRefused(_completions);
                if (!response.IsSuccessStatusCode)
                    throw new PolyEngineException($"{_completions}: {(int)response.StatusCode} {response.ReasonPhrase}: {ServerMessage(text)}");
                return Parse(text, k, prompt.Ids is not null);
            }
        }
        finally { _slots.Release(); }
    }

    static PolyEngineException KeyRefused(Uri where) =>
        new($"{where}: the API key was refused (401); set --api-key-env to the variable holding the server's key");

    static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    /// <summary>The body as text; a one-line error when it is not UTF-8 (JSON must be).</summary>
    async Task<string> Text(HttpResponseMessage response, CancellationToken cancel)
    {
        var bytes = await response.Content.ReadAsByteArrayAsync(cancel);
        try { return StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException e)
        {
            throw new PolyEngineException($"{_completions}: the answer is not valid UTF-8 (byte {e.Index} of {bytes.Length}); the server sent broken text, so no token string can be trusted");
        }
    }

    /// <summary>Checks the server before the run: it serves <see cref="EndpointOptions.ServedModel"/>, and when it says its
    /// vocabulary size (PolyEngine's <c>d_vocab</c>) that the tokenizer's <paramref name="dVocab"/> fits it — equal, or up
    /// to 256 short, the padding a checkpoint's embedding may have (Pythia's 50,304 rows for 50,277 tokens). A server
    /// without <c>/v1/models</c> is let through: the first completion will tell.</summary>
    public async Task Check(int? dVocab, CancellationToken cancel = default)
    {
        var models = new Uri(_completions, "models");
        HttpResponseMessage response;
        try { response = await _http.GetAsync(models, cancel); }
        catch (HttpRequestException e) { throw Unreachable(e); }
        using (response)
        {
            if (response.StatusCode == HttpStatusCode.Unauthorized)
                throw KeyRefused(models);
            if (!response.IsSuccessStatusCode) return;
            JsonNode? list;
            try { list = JsonNode.Parse(await Text(response, cancel))?["data"]; }
            catch (JsonException) { return; }
            if (list is not JsonArray data) return;
            var served = data.Select(x => (string?)x?["id"]).Where(x => x is not null).ToList();
            var mine = data.FirstOrDefault(x => (string?)x?["id"] == _o.ServedModel);
            if (mine is null)
                throw new PolyEngineException($"{_o.Endpoint}: does not serve \"{_o.ServedModel}\" (it serves {string.Join(", ", served.Select(x => $"\"{x}\""))}); fix --served-model");
            if (dVocab is int v && mine["d_vocab"] is JsonValue dv && ((int)dv < v || (int)dv > v + 256))
                throw new PolyEngineException($"{_o.Endpoint}: \"{_o.ServedModel}\" has a vocabulary of {(int)dv} tokens, the tokenizer {v}; give --model (or --tokenizer) the served model's own folder");
        }
    }

    PolyEngineException Unreachable(HttpRequestException e) => e.InnerException is AuthenticationException a
        ? new($"{_completions}: TLS failed ({a.Message.Split('\n')[0]}); check the certificate, or use http:// for a server without TLS")
        : new($"{_completions}: cannot reach the server ({e.Message.Split('\n')[0]}) after {_o.MaxRetries} retries; is it running, and is --endpoint right?");

    static string ServerMessage(string body)
    {
        try { if (JsonNode.Parse(body)?["error"]?["message"] is JsonValue v) return (string)v!; }
        catch (JsonException) { }
        return body.Length > 200 ? body[..200] + "…" : body;
    }

    /// <summary>The first choice's first token's candidates: in id mode PolyEngine's aligned id lists when present, else OpenAI's
    /// <c>top_logprobs</c> object (keys <c>token_id:N</c> in id mode).</summary>
    NextToken[] Parse(string text, int k, bool ids)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(text); }
        catch (JsonException e) { throw Garbage($"not JSON ({e.Message.Split(" Path:")[0]})", text); }
        try
        {
            var lp = root?["choices"]?[0]?["logprobs"];
            if (lp is null) throw Garbage("no choices[0].logprobs", text);
            List<NextToken> top;
            if (ids && lp["top_token_ids"] is JsonArray topIds && lp["top_token_logprobs"] is JsonArray topLps)
            {
                var idRow = topIds[0]!.AsArray();
                var lpRow = topLps[0]!.AsArray();
                top = [.. idRow.Select((x, j) => new NextToken((int)x!, null, MathF.Exp((float)(double)lpRow[j]!)))];
                // PolyEngine's server also says what each id decodes to: it must be what the tokenizer says, or the ids mean other tokens.
                if (_decode is not null && lp["top_token_strings"] is JsonArray strings && strings.Count > 0 && strings[0] is JsonArray row)
                    for (int j = 0; j < Math.Min(3, Math.Min(row.Count, top.Count)); j++)
                    {
                        string mine = _decode(top[j].Id), theirs = (string?)row[j] ?? "";
                        if (mine != theirs)
                            throw new PolyEngineException($"{_completions}: the server's token {top[j].Id} is \"{theirs}\", not \"{mine}\" as --model's tokenizer decodes it; give --model the served model's own folder");
                    }
            }
            else if (lp["top_logprobs"] is JsonArray tl && tl.Count > 0 && tl[0] is JsonObject first)
            {
                top = [.. first.Select(kv => new NextToken(ids ? TokenId(kv.Key, text) : -1, ids ? null : kv.Key, MathF.Exp((float)(double)kv.Value!)))
                    .OrderByDescending(t => t.Probability)];
            }
            else throw Garbage("no top_logprobs", text);
            if (top.Count < k)
                throw new PolyEngineException($"{_completions}: the server returned {top.Count} of the {k} top log-probabilities asked for; let it return more " +
                    $"(vLLM: --max-logprobs {k}; llama.cpp: --n-probs {k}; OpenAI's API stops at 5 for completions) or lower --top");
            return [.. top.Take(k)];
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or NullReferenceException or IndexOutOfRangeException)
        {
            throw Garbage($"an unexpected shape ({e.Message.Split('\n')[0]})", text);
        }
    }

    int TokenId(string key, string body) => key.StartsWith("token_id:", StringComparison.Ordinal) && int.TryParse(key.AsSpan(9), out int id) ? id
        : throw new PolyEngineException($"{_completions}: the server answered with token strings (\"{key}\"), not ids; it must support return_tokens_as_token_ids (vLLM does), or run without --model/--tokenizer to match types on strings");

    PolyEngineException Garbage(string what, string body) =>
        new($"{_completions}: the answer is not an OpenAI completion ({what}): {(body.Length > 120 ? body[..120] + "…" : body)}");

    public void Dispose()
    {
        _http.Dispose();
        _slots.Dispose();
    }
}

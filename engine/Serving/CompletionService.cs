using System.Text.Json.Nodes;

namespace PolyEngine.Serving;

/// <summary>
/// PolyEngine as an OpenAI-compatible completions service, without the HTTP: a request body in, the response object
/// out (<see cref="Complete"/>), or a <see cref="ServingException"/> whose <see cref="Error(ServingException)"/> is the 4xx body. The
/// <c>serve</c> verb puts it behind Kestrel; another host can put it behind its own. Text prompts are encoded as the HF
/// tokenizer does by default (no BOS added); send token ids to control BOS. Besides OpenAI's <c>logprobs</c> object
/// (<c>tokens</c>, <c>token_logprobs</c>, <c>top_logprobs</c> as {token: logprob}, <c>text_offset</c>) each choice carries
/// <c>token_ids</c>, <c>top_token_ids</c>, <c>top_token_logprobs</c> and <c>top_token_strings</c>, aligned lists that keep
/// every candidate even when two decode to the same string (and say what each id decodes to, so a client can check its
/// tokenizer is the served model's).
/// </summary>
public sealed class CompletionService : IAsyncDisposable
{
    readonly Model _model;
    readonly CompletionScheduler _scheduler;
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public CompletionService(Model model, string servedModel, ServingLimits? limits = null, int maxBatch = 64, TimeSpan? window = null)
    {
        _model = model;
        ServedModel = servedModel;
        var l = limits ?? new ServingLimits();
        // A pass asks the batch's largest logprobs of the whole vocabulary: no request may ask more than the model has.
        Limits = l with { MaxContext = Math.Min(l.MaxContext, model.Spec.NCtx), MaxLogprobs = Math.Min(l.MaxLogprobs, model.Spec.DVocab) };
        _scheduler = new CompletionScheduler(model, maxBatch, window);
    }

    public string ServedModel { get; }
    public ServingLimits Limits { get; }
    public CompletionScheduler Scheduler => _scheduler;

    /// <summary>The response to a <c>POST /v1/completions</c> body.</summary>
    public async Task<JsonObject> Complete(ReadOnlyMemory<byte> body, CancellationToken cancel = default)
    {
        var request = CompletionRequest.Parse(body.Span, ServedModel, Limits);
        var spec = _model.Spec;
        var prompts = request.Prompts.Select((p, i) =>
        {
            var ids = p.Ids ?? _model.Encode(p.Text!, prependBos: false);
            if (ids.Length == 0) throw new ServingException(400, $"prompt {i} encodes to no tokens", "prompt");
            int bad = Array.FindIndex(ids, id => id >= spec.DVocab);
            if (bad >= 0) throw new ServingException(400, $"prompt {i}: token id {ids[bad]} is outside the vocabulary 0..{spec.DVocab - 1}", "prompt");
            if (ids.Length + request.MaxTokens > Limits.MaxContext)
                throw new ServingException(400, $"prompt {i} has {ids.Length} tokens; with max_tokens {request.MaxTokens} that is past the context limit {Limits.MaxContext}", "prompt");
            return ids;
        }).ToList();
        // The edits checked against the model once, so a bad edit is this request's 400, never a failed batch. Listed
        // positions are refused: each pass would hold [batch, seq, width] for them, for every token generated.
        if (request.Edits.Any(e => e.Positions is not null))
            throw new ServingException(400, "polyengine.edits: \"positions\" is not served (it costs a [batch, seq, width] edit per pass); use \"from\" (edit from a position on), or polyengine run --edits", "polyengine.edits");
        foreach (var ids in prompts)
            try { BatchEdits.Merge(spec, [request.Edits], [ids.Length]); }
            catch (PolyEngineException e) when (e is not ServingException) { throw new ServingException(400, e.Message, "polyengine.edits"); }
        ulong seed = request.Seed ?? (ulong)Random.Shared.NextInt64();
        var generations = await Task.WhenAll(prompts.Select((ids, i) => _scheduler.Submit(
            new GenerationRequest(ids, request.MaxTokens, request.Logprobs, request.Temperature, seed + (ulong)i * 0x9E3779B97F4A7C15UL, request.Edits, request.Stop), cancel)));
        var choices = new JsonArray();
        int completionTokens = 0;
        for (int i = 0; i < generations.Length; i++)
        {
            completionTokens += generations[i].Tokens.Count;
            choices.Add(Choice(i, generations[i], request));
        }
        int promptTokens = prompts.Sum(p => p.Length);
        return new JsonObject
        {
            ["id"] = $"cmpl-{Guid.NewGuid():N}", ["object"] = "text_completion", ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(), ["model"] = ServedModel,
            ["choices"] = choices,
            ["usage"] = new JsonObject { ["prompt_tokens"] = promptTokens, ["completion_tokens"] = completionTokens, ["total_tokens"] = promptTokens + completionTokens },
        };
    }

    JsonObject Choice(int index, Generation g, CompletionRequest request)
    {
        var ids = g.Tokens.Select(t => t.Id).ToList();
        if (g.FinishReason == "stop" && ids.Count > 0 && ids[^1] == _model.Spec.EosTokenId) ids.RemoveAt(ids.Count - 1);   // the end-of-text token is not text
        string text = _model.Tokenizer.Decode([.. ids]);
        foreach (var stop in request.Stop)
            if (text.IndexOf(stop, StringComparison.Ordinal) is int at && at >= 0) text = text[..at];
        var choice = new JsonObject { ["index"] = index, ["text"] = text, ["logprobs"] = null, ["finish_reason"] = g.FinishReason };
        if (request.Logprobs > 0 || request.TokensAsIds)
        {
            string Name(int id) => request.TokensAsIds ? $"token_id:{id}" : _model.Tokenizer.Decode([id]);
            var tokens = g.Tokens.Select(t => Name(t.Id)).ToList();
            // Where each token starts in the decoded text (a token that splits a character starts where its text does).
            var offsets = new JsonArray([.. Enumerable.Range(0, g.Tokens.Count).Select(i => (JsonNode)_model.Tokenizer.Decode([.. g.Tokens.Take(i).Select(t => t.Id)]).Length)]);
            choice["logprobs"] = new JsonObject
            {
                ["tokens"] = new JsonArray([.. tokens.Select(t => (JsonNode)t)]),
                ["token_logprobs"] = new JsonArray([.. g.Tokens.Select(t => Number(t.Logprob))]),
                ["top_logprobs"] = new JsonArray([.. g.Tokens.Select(t =>
                {
                    var top = new JsonObject();
                    for (int j = 0; j < t.TopIds.Length; j++) top.TryAdd(Name(t.TopIds[j]), Number(t.TopLogprobs[j]));   // a repeated string keeps its likeliest
                    return (JsonNode)top;
                })]),
                ["text_offset"] = offsets,
                ["token_ids"] = new JsonArray([.. g.Tokens.Select(t => (JsonNode)t.Id)]),
                ["top_token_ids"] = new JsonArray([.. g.Tokens.Select(t => (JsonNode)new JsonArray([.. t.TopIds.Select(x => (JsonNode)x)]))]),
                ["top_token_logprobs"] = new JsonArray([.. g.Tokens.Select(t => (JsonNode)new JsonArray([.. t.TopLogprobs.Select(Number)]))]),
                ["top_token_strings"] = new JsonArray([.. g.Tokens.Select(t => (JsonNode)new JsonArray([.. t.TopIds.Select(x => (JsonNode)_model.Tokenizer.Decode([x]))]))]),
            };
        }
        return choice;
    }

    /// <summary>A log-probability for JSON: null when it is not finite (an edit that blew the logits up).</summary>
    static JsonNode? Number(float v) => float.IsFinite(v) ? JsonValue.Create((double)v) : null;

    /// <summary><c>GET /v1/models</c>.</summary>
    public JsonObject Models() => new()
    {
        ["object"] = "list",
        ["data"] = new JsonArray(new JsonObject
        {
            ["id"] = ServedModel, ["object"] = "model", ["created"] = _created, ["owned_by"] = "polyengine", ["max_model_len"] = Limits.MaxContext,
            ["d_vocab"] = _model.Spec.DVocab, ["max_logprobs"] = Limits.MaxLogprobs,
        }),
    };

    /// <summary>OpenAI's error body for a refused request.</summary>
    public static JsonObject Error(int status, string message, string? param = null, string type = "invalid_request_error") => new()
    {
        ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = status },
    };

    public static JsonObject Error(ServingException e) => Error(e.Status, e.Message, e.Param, e.Type);

    public ValueTask DisposeAsync() => _scheduler.DisposeAsync();
}

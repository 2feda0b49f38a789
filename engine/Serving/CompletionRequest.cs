using System.Text.Json;
using PolyEngine.Interventions;

namespace PolyEngine.Serving;

/// <summary>A request the server refuses: the HTTP status (4xx) and a one-line message naming the field and the fix,
/// returned as OpenAI's error object.</summary>
public sealed class ServingException(int status, string message, string? param = null) : PolyEngineException(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string Type => Status switch { 401 => "authentication_error", 404 => "not_found_error", 413 => "request_too_large", 429 => "rate_limit_error", _ => "invalid_request_error" };
}

/// <summary>What the server allows one request (its <c>serve</c> options).</summary>
public sealed record ServingLimits
{
    /// <summary>Prompts in one request.</summary>
    public int MaxPrompts { get; init; } = 256;
    /// <summary>Tokens of one prompt plus its completion (at most the model's n_ctx).</summary>
    public int MaxContext { get; init; } = 1024;
    public int MaxTokens { get; init; } = 256;
    public int MaxLogprobs { get; init; } = 100;
    /// <summary>Bytes of a request body (the HTTP host enforces it).</summary>
    public long MaxRequestBytes { get; init; } = 8 << 20;
}

/// <summary>One prompt of a request: its text, or the token ids it was given as.</summary>
public sealed record CompletionPrompt(string? Text, int[]? Ids);

/// <summary>
/// A <c>POST /v1/completions</c> body, parsed and checked against the model and the limits: <c>model</c>, <c>prompt</c>
/// (a string, a list of strings, a list of token ids or a list of such lists), <c>max_tokens</c> (default 16),
/// <c>temperature</c> (0 greedy, the default here; else sampled with <c>seed</c>), <c>logprobs</c> (top log-probabilities
/// per generated token, 0..the limit), <c>echo</c> (false only), <c>n</c> (1 only), <c>stream</c> (false only),
/// <c>top_p</c> (1 only), <c>user</c>, <c>stop</c> (strings that end a completion early), vLLM's
/// <c>return_tokens_as_token_ids</c> (tokens written <c>token_id:N</c>), and the PolyEngine extension
/// <c>"polyengine": {"edits": [...]}</c> — steering edits in the <c>run --edits</c> format applied to every prompt of the
/// request (rows must not be given: each request is its own row). Any other field is a 400 naming it.
/// </summary>
public sealed record CompletionRequest
{
    public required string Model { get; init; }
    public required IReadOnlyList<CompletionPrompt> Prompts { get; init; }
    public int MaxTokens { get; init; } = 16;
    public double Temperature { get; init; }
    public ulong? Seed { get; init; }
    public int Logprobs { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    public bool TokensAsIds { get; init; }
    public IReadOnlyList<EditSpec> Edits { get; init; } = [];

    static readonly HashSet<string> Fields = ["model", "prompt", "max_tokens", "temperature", "seed", "logprobs", "echo", "n", "stream", "top_p", "user", "stop",
        "return_tokens_as_token_ids", "polyengine"];

    /// <summary>The request in <paramref name="body"/>, or a <see cref="ServingException"/> (400) naming what is wrong.</summary>
    public static CompletionRequest Parse(ReadOnlySpan<byte> body, string servedModel, ServingLimits limits)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body.ToArray()); }
        catch (JsonException e) { throw Bad($"the body is not valid JSON ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("the body must be a JSON object, e.g. {\"model\": \"...\", \"prompt\": \"...\"}");
            foreach (var p in root.EnumerateObject())
                if (!Fields.Contains(p.Name)) throw Bad($"unknown field \"{p.Name}\"; the fields are {string.Join(", ", Fields.Order())}", p.Name);
            string model = root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()!
                : throw Bad("\"model\" is missing; GET /v1/models lists the served model", "model");
            if (model != servedModel) throw new ServingException(404, $"model \"{model}\" is not served here; this server serves \"{servedModel}\"", "model");
            Only(root, "echo", JsonValueKind.False, "false: the prompt is not echoed");
            Only(root, "stream", JsonValueKind.False, "false: responses are not streamed");
            if (root.TryGetProperty("n", out var n) && !(n.ValueKind == JsonValueKind.Number && n.TryGetInt32(out int nv) && nv == 1)) throw Bad("\"n\" must be 1", "n");
            if (root.TryGetProperty("top_p", out var tp) && !(tp.ValueKind == JsonValueKind.Number && tp.TryGetDouble(out double tpv) && tpv == 1)) throw Bad("\"top_p\" must be 1 (no nucleus sampling)", "top_p");
            if (root.TryGetProperty("user", out var user) && user.ValueKind != JsonValueKind.String) throw Bad("\"user\" must be a string", "user");
            var prompts = ParsePrompts(root, limits);
            int maxTokens = Int(root, "max_tokens", 16, 1, limits.MaxTokens);
            double temperature = root.TryGetProperty("temperature", out var t)
                ? t.ValueKind == JsonValueKind.Number && t.TryGetDouble(out double tv) && tv >= 0 && tv <= 100 ? tv : throw Bad("\"temperature\" must be a number in 0..100", "temperature")
                : 0;
            ulong? seed = root.TryGetProperty("seed", out var s) && s.ValueKind != JsonValueKind.Null
                ? s.ValueKind == JsonValueKind.Number && s.TryGetInt64(out long sv) ? unchecked((ulong)sv) : throw Bad("\"seed\" must be an integer", "seed")
                : null;
            var logprobs = root.TryGetProperty("logprobs", out var lp) && lp.ValueKind != JsonValueKind.Null ? Int(root, "logprobs", 0, 0, limits.MaxLogprobs) : 0;
            var stop = root.TryGetProperty("stop", out var st) ? st.ValueKind switch
            {
                JsonValueKind.Null => [],
                JsonValueKind.String => [st.GetString()!],
                JsonValueKind.Array when st.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) && st.GetArrayLength() <= 4 => st.EnumerateArray().Select(x => x.GetString()!).ToArray(),
                _ => throw Bad("\"stop\" must be a string or a list of up to 4 strings", "stop"),
            } : [];
            if (stop.Any(x => x.Length == 0)) throw Bad("\"stop\" strings must not be empty", "stop");
            bool asIds = root.TryGetProperty("return_tokens_as_token_ids", out var ai) && (ai.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? ai.GetBoolean() : throw Bad("\"return_tokens_as_token_ids\" must be true or false", "return_tokens_as_token_ids"));
            return new CompletionRequest
            {
                Model = model, Prompts = prompts, MaxTokens = maxTokens, Temperature = temperature, Seed = seed, Logprobs = logprobs, Stop = stop,
                TokensAsIds = asIds, Edits = ParseEdits(root),
            };
        }
    }

    static ServingException Bad(string message, string? param = null) => new(400, message, param);

    static void Only(JsonElement root, string field, JsonValueKind allowed, string what)
    {
        if (root.TryGetProperty(field, out var v) && v.ValueKind != allowed && v.ValueKind != JsonValueKind.Null) throw Bad($"\"{field}\" must be {what}", field);
    }

    static int Int(JsonElement root, string field, int absent, int min, int max)
    {
        if (!root.TryGetProperty(field, out var v)) return absent;
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i >= min && i <= max ? i
            : throw Bad($"\"{field}\" must be an integer in {min}..{max} (this server's limit), got {v.GetRawText()}", field);
    }

    static List<CompletionPrompt> ParsePrompts(JsonElement root, ServingLimits limits)
    {
        if (!root.TryGetProperty("prompt", out var p)) throw Bad("\"prompt\" is missing; give a string, a list of strings, or token ids", "prompt");
        var list = new List<CompletionPrompt>();
        if (p.ValueKind == JsonValueKind.String) list.Add(new(p.GetString(), null));
        else if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() > 0 && p.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number)) list.Add(new(null, Ids(p, 0)));
        else if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() > 0)
        {
            int i = 0;
            foreach (var x in p.EnumerateArray())
            {
                list.Add(x.ValueKind switch
                {
                    JsonValueKind.String => new(x.GetString(), null),
                    JsonValueKind.Array when x.GetArrayLength() > 0 => new(null, Ids(x, i)),
                    _ => throw Bad($"prompt {i} must be a string or a non-empty list of token ids", "prompt"),
                });
                if (list.Count > limits.MaxPrompts) throw Bad($"a request holds at most {limits.MaxPrompts} prompts (this server's limit)", "prompt");
                i++;
            }
        }
        else throw Bad("\"prompt\" must be a string, a list of strings, or a non-empty list of token ids", "prompt");
        if (list.Any(x => x.Text is "")) throw Bad("a prompt is the empty string; give at least one token", "prompt");
        return list;
    }

    static int[] Ids(JsonElement list, int prompt) =>
        [.. list.EnumerateArray().Select((x, j) => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int id) && id >= 0 ? id
            : throw Bad($"prompt {prompt}: token {j} must be a non-negative integer id, got {x.GetRawText()}", "prompt"))];

    static IReadOnlyList<EditSpec> ParseEdits(JsonElement root)
    {
        if (!root.TryGetProperty("polyengine", out var ext) || ext.ValueKind == JsonValueKind.Null) return [];
        if (ext.ValueKind != JsonValueKind.Object) throw Bad("\"polyengine\" must be an object, e.g. {\"edits\": [...]}", "polyengine");
        foreach (var x in ext.EnumerateObject())
            if (x.Name != "edits") throw Bad($"unknown field \"polyengine.{x.Name}\"; the extension has \"edits\"", "polyengine");
        if (!ext.TryGetProperty("edits", out var edits)) return [];
        IReadOnlyList<EditSpec> list;
        try { list = EditSpec.Parse(edits.GetRawText(), "polyengine.edits"); }
        catch (PolyEngineException e) when (e is not ServingException) { throw Bad(e.Message, "polyengine.edits"); }
        if (list.Any(e => e.Rows is not null)) throw Bad("polyengine.edits: \"rows\" cannot be given; the edits apply to every prompt of the request", "polyengine.edits");
        return list;
    }
}

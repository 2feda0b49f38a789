using System.CommandLine;
using PolyEngine.Cli.Serving;
using PolyEngine.Serving;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine serve</c>: the model as an OpenAI-compatible completions endpoint, with dynamic batching and
/// per-request steering edits.</summary>
static class ServeCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var name = new Option<string?>("--served-model-name") { Description = "The model's name in requests and /v1/models (default: the --model as given)" };
        var host = new Option<string>("--host") { Description = "Address to listen on: loopback by default; 0.0.0.0 for every interface (then set --api-key-env)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0: any free one, printed)", DefaultValueFactory = _ => 8000 };
        var apiKeyEnv = new Option<string?>("--api-key-env") { Description = "Environment variable holding the API key that requests must send as 'Authorization: Bearer <key>'" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Rows per forward pass: concurrent prompts share a pass up to this many", DefaultValueFactory = _ => 64 };
        var window = new Option<double>("--batch-window-ms") { Description = "How long the first prompt waits for others to share its pass", DefaultValueFactory = _ => 2 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Largest max_tokens a request may ask", DefaultValueFactory = _ => 256 };
        var maxLogprobs = new Option<int>("--max-logprobs") { Description = "Largest logprobs (top candidates per token) a request may ask", DefaultValueFactory = _ => 100 };
        var maxPrompts = new Option<int>("--max-prompts") { Description = "Prompts per request", DefaultValueFactory = _ => 256 };
        var maxContext = new Option<int?>("--max-context") { Description = "Tokens of a prompt plus its completion (default: the model's n_ctx)" };
        var maxBody = new Option<double>("--max-request-mb") { Description = "Largest request body, MiB", DefaultValueFactory = _ => 8 };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("serve", Common.WithExamples(
            "Serve the model as an OpenAI-compatible endpoint: POST /v1/completions (a prompt string, strings or token ids; greedy or sampled with " +
            "temperature/seed; logprobs up to --max-logprobs with token ids alongside; steering edits per request as \"polyengine\": {\"edits\": [...]} in the " +
            "run --edits format), GET /v1/models, GET /health. Concurrent requests share forward passes (dynamic batching), each with its own edits. " +
            "Bad requests get OpenAI's JSON error with a 4xx status; the server keeps running. Ctrl+C stops it.",
            "polyengine serve --model gpt2 --port 8000",
            "curl -s localhost:8000/v1/completions -d '{\"model\": \"gpt2\", \"prompt\": \"The dog\", \"max_tokens\": 1, \"logprobs\": 5}'",
            "polyengine inject --endpoint http://127.0.0.1:8000 --served-model gpt2 --model gpt2 --type-map types.json --token-sets sets.json --sentences s.json --out inj/"))
        { model, name, host, port, apiKeyEnv, maxBatch, window, maxTokens, maxLogprobs, maxPrompts, maxContext, maxBody, device, threads };
        cmd.SetAction(async (r, cancel) =>
        {
            string? apiKey = InjectTarget.ApiKey(r.GetValue(apiKeyEnv));
            if (r.GetValue(port) is < 0 or > 65535) throw new PolyEngineException($"--port {r.GetValue(port)}: give 0..65535");
            foreach (var (opt, v) in new (string, double)[] { ("--max-batch", r.GetValue(maxBatch)), ("--max-tokens", r.GetValue(maxTokens)), ("--max-prompts", r.GetValue(maxPrompts)),
                ("--max-request-mb", r.GetValue(maxBody)) })
                if (!(v > 0)) throw new PolyEngineException($"{opt} {v}: give a positive number");
            if (r.GetValue(maxLogprobs) < 0 || r.GetValue(window) < 0) throw new PolyEngineException("--max-logprobs and --batch-window-ms must not be negative");
            if (r.GetValue(maxContext) is int mc && mc < 2) throw new PolyEngineException($"--max-context {mc}: give at least 2 (a prompt token and one to generate)");
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            var limits = new ServingLimits
            {
                MaxTokens = r.GetValue(maxTokens), MaxLogprobs = r.GetValue(maxLogprobs), MaxPrompts = r.GetValue(maxPrompts),
                MaxContext = r.GetValue(maxContext) ?? m.Spec.NCtx, MaxRequestBytes = (long)(r.GetValue(maxBody) * (1 << 20)),
            };
            string served = r.GetValue(name) ?? r.GetValue(model)!;
            await using var service = new CompletionService(m, served, limits, r.GetValue(maxBatch), TimeSpan.FromMilliseconds(r.GetValue(window)));
            var app = await CompletionHost.Start(service, r.GetValue(host)!, r.GetValue(port), apiKey);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            io.Out.WriteLine($"serving \"{served}\" at {CompletionHost.Address(app)}: POST /v1/completions, GET /v1/models, GET /health" +
                             (apiKey is null ? "" : " (API key required)") + "; Ctrl+C stops");
            try { await Task.Delay(Timeout.Infinite, cancel); }
            catch (OperationCanceledException) { }
            await app.StopAsync();
            var (passes, rows) = service.Scheduler.Stats;
            io.Out.WriteLine($"stopped: {passes:N0} forward passes, {rows:N0} rows ({(passes == 0 ? 0 : (double)rows / passes):F1} per pass)");
            return 0;
        });
        return cmd;
    }
}

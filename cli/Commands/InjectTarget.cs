using System.Text.Json.Nodes;
using PolyEngine.Interventions;
using PolyEngine.Serving;

namespace PolyEngine.Cli.Commands;

/// <summary>Where <c>inject</c> runs its trials: the engine's model, or a served model through its endpoint (with the
/// served model's tokenizer when <c>--model</c> gives it, so prompts go as the same token ids; else as text), and what
/// the manifest and run key say about it.</summary>
sealed class InjectTarget : IDisposable
{
    /// <summary>The tokenizer the trials' ids come from: the model's, or a folder's tokenizer.json (then BOS is its id).</summary>
    public sealed record TokenizerInfo(string Folder, Func<string, bool, int[]> Encode, Func<int, string> Decode, int DVocab, int? BosId);

    /// <summary>The endpoint's answers, appended as they arrive (in --out).</summary>
    public const string LogFile = "requests.jsonl";

    Kernels.IBackend? _backend;
    Func<string, ITrialModel> _trials = _ => throw new InvalidOperationException();

    public Model? Model { get; private set; }
    public TokenizerInfo? Tokenizer { get; private set; }
    public CompletionClient? Client { get; private set; }
    public TrialLog? Log { get; private set; }
    public string Device { get; private set; } = "";
    /// <summary>The endpoint and served model ("http://…/v1 serving NAME"), or the model folder.</summary>
    public string Description { get; private set; } = "";
    public JsonObject ManifestModel { get; private set; } = [];

    /// <summary>The trials' model, opened in the run's output folder (the endpoint's log lives there).</summary>
    public ITrialModel Trials(string outDir) => _trials(outDir);

    public static InjectTarget Engine(string model, string device, int threads)
    {
        var t = new InjectTarget { _backend = Devices.Create(device, threads, out string note) };
        t.Device = note;
        t.Model = PolyEngine.Model.Load(model, t._backend);
        t.Tokenizer = Of(t.Model);
        t.Description = t.Model.Folder;
        t.ManifestModel = Output.ScanManifest.ModelEntry(t.Model);
        var trials = new ModelTrials(t.Model);
        t._trials = _ => trials;
        return t;
    }

    static TokenizerInfo Of(Model m) => new(m.Folder, m.Encode, id => m.Tokenizer.Decode([id]), m.Spec.DVocab, m.Spec.BosTokenId);

    /// <param name="tokenizerModel">The served model's folder (--model: its tokenizer and spec; loaded on the CPU, only
    /// encoding is asked of it).</param>
    /// <param name="tokenizerFolder">Or a folder with only its tokenizer.json (--tokenizer).</param>
    public static InjectTarget Endpoint(EndpointOptions o, string? tokenizerModel, string? tokenizerFolder, int threads)
    {
        if (tokenizerModel is not null && tokenizerFolder is not null) throw new PolyEngineException("give --model or --tokenizer for the served model's tokenizer, not both");
        var t = new InjectTarget();
        try
        {
            t.OpenEndpoint(o, tokenizerModel, tokenizerFolder, threads);
            return t;
        }
        catch
        {
            t.Dispose();   // a model loaded or a client made before the failure
            throw;
        }
    }

    void OpenEndpoint(EndpointOptions o, string? tokenizerModel, string? tokenizerFolder, int threads)
    {
        if (tokenizerModel is not null)
        {
            _backend = Devices.Create("cpu", threads, out _);
            Model = PolyEngine.Model.Load(tokenizerModel, _backend);
            Tokenizer = Of(Model);
        }
        else if (tokenizerFolder is not null)
        {
            var (tok, dVocab, bos) = Tokenization.ModelTokenizer.ForFolder(tokenizerFolder);
            Tokenizer = new TokenizerInfo(Path.GetFullPath(tokenizerFolder), (text, prepend) =>
                prepend ? [bos ?? throw new PolyEngineException($"--tokenizer {tokenizerFolder}: no BOS token id (config.json or tokenizer_config.json); pass --bos off"), .. tok.Encode(text)]
                        : tok.Encode(text), id => tok.Decode([id]), dVocab, bos);
        }
        Client = Tokenizer is { } k ? new CompletionClient(o, k.Encode, decode: k.Decode) : new CompletionClient(o, null);
        Client.Check(Tokenizer?.DVocab).GetAwaiter().GetResult();
        Description = $"{o.Endpoint} serving \"{o.ServedModel}\"" + (Tokenizer is null ? " (prompts as text)" : $" (prompts as token ids of {Tokenizer.Folder})");
        Device = $"endpoint {o.Endpoint}";
        ManifestModel = new JsonObject
        {
            ["endpoint"] = o.Endpoint.ToString(), ["served_model"] = o.ServedModel, ["tokenizer"] = Tokenizer?.Folder,
            ["concurrency"] = o.Concurrency, ["attempt_timeout_seconds"] = o.AttemptTimeout.TotalSeconds, ["retries"] = o.MaxRetries,
        };
        _trials = outDir => Log = new TrialLog(Path.Combine(outDir, LogFile), Client);
    }

    public static EndpointOptions Options(string url, string? served, string? apiKeyEnv, int concurrency, double timeout, int retries) => new()
    {
        Endpoint = Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri : throw new PolyEngineException($"--endpoint {url}: not an address; give e.g. http://127.0.0.1:8000"),
        ServedModel = served ?? throw new PolyEngineException("--endpoint needs --served-model, the name the server serves (GET /v1/models lists it)"),
        ApiKey = ApiKey(apiKeyEnv), Concurrency = concurrency,
        AttemptTimeout = timeout > 0 ? TimeSpan.FromSeconds(timeout) : throw new PolyEngineException($"--timeout {timeout}: give a positive number of seconds"),
        MaxRetries = retries >= 0 ? retries : throw new PolyEngineException($"--retries {retries}: give 0 or more"),
    };

    /// <summary>The key in the variable <paramref name="env"/> (null without one); a one-line error when it is unset.</summary>
    public static string? ApiKey(string? env)
    {
        if (env is null) return null;
        string? key = Environment.GetEnvironmentVariable(env);
        return string.IsNullOrEmpty(key) ? throw new PolyEngineException($"--api-key-env {env}: the variable is not set or empty; export {env}=<key> first") : key;
    }

    public void Dispose()
    {
        Log?.Dispose();
        Client?.Dispose();
        Model?.Dispose();
        _backend?.Dispose();
    }
}

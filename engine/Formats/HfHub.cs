namespace PolyEngine.Formats;

/// <summary>
/// Resolves a <c>--model</c> argument: a local folder, or a hub id (<c>gpt2</c>, <c>EleutherAI/pythia-70m-deduped</c>)
/// looked up offline in the HuggingFace cache (<c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>),
/// at <c>models--ORG--NAME/snapshots/&lt;refs/main&gt;/</c>. Nothing is ever downloaded.
/// </summary>
public static class HfHub
{
    public static string CacheRoot()
    {
        string? hubCache = Environment.GetEnvironmentVariable("HF_HUB_CACHE");
        if (!string.IsNullOrEmpty(hubCache)) return hubCache;
        string? hfHome = Environment.GetEnvironmentVariable("HF_HOME");
        if (!string.IsNullOrEmpty(hfHome)) return Path.Combine(hfHome, "hub");
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");
    }

    /// <summary>Returns a folder; throws a <see cref="PolyEngineException"/> saying where it looked and how to download.</summary>
    public static string ResolveModelFolder(string model, string? cacheRoot = null)
    {
        if (Directory.Exists(model)) return Path.GetFullPath(model);
        if (File.Exists(model))
            throw new PolyEngineException($"{model}: --model expects a folder with config.json and model.safetensors (or a hub id), not a file");
        bool looksLikeId = !model.StartsWith('.') && !model.StartsWith('/') && !model.Contains('\\') && model.Count(ch => ch == '/') <= 1
            && model.Length > 0;
        if (!looksLikeId) throw new PolyEngineException($"{model}: model folder not found");
        string root = cacheRoot ?? CacheRoot();
        string repo = Path.Combine(root, "models--" + model.Replace("/", "--"));
        string? snapshot = FindSnapshot(repo);
        // `gpt2` is also published as `openai-community/gpt2`.
        if (snapshot is null && !model.Contains('/')) snapshot = FindSnapshot(Path.Combine(root, "models--openai-community--" + model));
        if (snapshot is not null) return snapshot;
        throw new PolyEngineException(
            $"model '{model}' is neither a folder nor in the HuggingFace cache (looked in {repo}); download it with " +
            $"`huggingface-cli download {model} config.json model.safetensors tokenizer.json` or pass a folder");
    }

    static string? FindSnapshot(string repo)
    {
        string snapshots = Path.Combine(repo, "snapshots");
        if (!Directory.Exists(snapshots)) return null;
        string refMain = Path.Combine(repo, "refs", "main");
        if (File.Exists(refMain))
        {
            string hash = File.ReadAllText(refMain).Trim();
            string candidate = Path.Combine(snapshots, hash);
            if (Directory.Exists(candidate)) return candidate;
        }
        // No refs/main (e.g. downloaded by revision): take the newest snapshot that has a config.
        return new DirectoryInfo(snapshots).GetDirectories()
            .Where(d => File.Exists(Path.Combine(d.FullName, "config.json")))
            .OrderByDescending(d => d.LastWriteTimeUtc).Select(d => d.FullName).FirstOrDefault();
    }
}

using System.CommandLine;

namespace PolyEngine.Cli.Commands;

static class Common
{
    /// <summary>JSON for token strings shown to people: quotes and control characters escaped, other text as is.</summary>
    public static readonly System.Text.Json.JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Option<string> Device() => new("--device")
    {
        Description = "Compute device: auto (CUDA when present, else CPU), cpu, cuda",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Model folder (config.json + model.safetensors) or hub id in the HF cache (gpt2, EleutherAI/pythia-70m-deduped)",
        Required = required,
    };

    /// <summary>Appends an examples block to a command's description (shown by --help).</summary>
    public static string WithExamples(string description, params string[] examples) =>
        description + "\n\nExamples:\n" + string.Join("\n", examples.Select(e => "  " + e));

    /// <summary>Checks up front that <paramref name="path"/> can be written, so a long run does not fail at the end.</summary>
    public static void CheckWritable(string path, string option)
    {
        string full = Path.GetFullPath(path);
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir))
            throw new PolyEngineException($"{option} {path}: folder '{dir}' does not exist; create it first");
        if (Directory.Exists(full)) throw new PolyEngineException($"{option} {path}: is a folder; give a file name");
        string probe = Path.Combine(dir, $".polyengine-write-test-{Environment.ProcessId}");
        try { File.WriteAllBytes(probe, []); File.Delete(probe); }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new PolyEngineException($"{option} {path}: folder '{dir}' is not writable ({e.Message})");
        }
    }

    /// <summary>
    /// The output folder of a resumable scan: a folder holding this run's checkpoint continues it; any other content is
    /// refused without --overwrite (with it, the old checkpoint goes). Returns the checkpoint the scan saves to.
    /// </summary>
    public static Scans.ScanCheckpoint PrepareScanOutput(string outDir, string runKey, bool overwrite)
    {
        bool resumable = Scans.ScanCheckpoint.KeyIn(outDir) == runKey;
        if (!resumable && Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            if (!overwrite)
                throw new PolyEngineException($"--out {outDir}: the folder holds a different run (or other files); choose another folder or pass --overwrite");
            Scans.ScanCheckpoint.DeleteAll(outDir);
        }
        Directory.CreateDirectory(outDir);
        return new Scans.ScanCheckpoint { Path = Path.Combine(outDir, Scans.ScanCheckpoint.FileName), RunKey = runKey };
    }

    /// <summary>Prints tokens/s to stderr at most once a second, on one line.</summary>
    public static Action<long, double> Progress(Io io)
    {
        DateTime last = DateTime.MinValue;
        return (tokens, seconds) =>
        {
            if ((DateTime.UtcNow - last).TotalSeconds < 1) return;
            last = DateTime.UtcNow;
            io.Err.Write($"\r{tokens:N0} tokens, {tokens / Math.Max(seconds, 1e-9):N0} tokens/s   ");
        };
    }

    /// <summary>Loads the comma-separated SAE folders on the model's backend, each checked against the model, and says so.</summary>
    public static List<Sae.SparseAutoencoder> LoadSaes(Io io, Model model, string list)
    {
        var saes = new List<Sae.SparseAutoencoder>();
        try
        {
            foreach (var folder in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var s = Sae.SparseAutoencoder.Load(folder, model.Backend);
                saes.Add(s);
                s.CheckAgainst(model.Spec);
                io.Out.WriteLine($"sae: {folder} ({s.Config.Format} {s.Config.Architecture}, d_sae {s.Config.DSae}) at {s.Config.Hook}; {s.Processing}");
            }
            if (saes.Count == 0) throw new PolyEngineException("--sae names no SAE folder");
            return saes;
        }
        catch
        {
            foreach (var s in saes) s.Dispose();
            throw;
        }
    }
}

/// <summary>The options every corpus scan takes (features, coactivate).</summary>
sealed class ScanOptions
{
    public readonly Option<string> Sae = new("--sae") { Description = "SAE folders, comma-separated (SAELens or sparsify; hooks of one model share each forward pass)", Required = true };
    public readonly Option<string> Corpus = new("--corpus") { Description = "Corpus file or folder: .txt, .jsonl (text field), .npy, .bin (llm.c / nanoGPT uint16), .u32", Required = true };
    public readonly Option<float> Threshold = new("--threshold") { Description = "A feature fires when its activation is above this", DefaultValueFactory = _ => 0f };
    public readonly Option<int?> Context = new("--context-size") { Description = "Tokens per context window (default: the SAE's context_size)" };
    public readonly Option<string> Format = new("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
    public readonly Option<long?> MaxTokens = new("--max-tokens") { Description = "Stop after this many tokens" };
    public readonly Option<int> Batch = new("--batch") { Description = "Context windows per forward pass", DefaultValueFactory = _ => 8 };
    public readonly Option<string> Output = new("--out", "-o")
    {
        Description = "Output folder (created). Resumable: rerun with the same --out to continue a killed run; a folder holding another run is refused without --overwrite",
        Required = true,
    };
    public readonly Option<bool> Overwrite = new("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
    public readonly Option<string> Device = Common.Device();
    public readonly Option<int> Threads = Common.Threads();

    public void AddTo(Command cmd)
    {
        foreach (Option o in new Option[] { Sae, Corpus, Threshold, Context, Format, MaxTokens, Batch, Output, Overwrite, Device, Threads }) cmd.Options.Add(o);
    }
}

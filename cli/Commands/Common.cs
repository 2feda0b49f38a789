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
        if (string.IsNullOrWhiteSpace(path)) throw new PolyEngineException($"{option} is empty; give a file name");
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new PolyEngineException($"{option} {path}: not a valid path ({e.Message})");
        }
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

    /// <summary>The steering sweep's rows budget (steer, bench steer).</summary>
    public static Option<int> RowsBudget() => new("--rows-budget")
    {
        Description = "Token positions one pass may hold (rows × padded length): bounds memory",
        DefaultValueFactory = _ => Interventions.SteerPlan.DefaultRowsBudget,
    };

    /// <summary>The steering sweep's first edited position (steer, bench steer).</summary>
    public static Option<int?> SteerFrom() => new("--from")
    {
        Description = "Edit positions from this one on (default: every position, the paper's steering); negative counts from each prompt's end, " +
                      "-1 edits only the last token. The positions before it are not recomputed: the edited rows attend to the clean pass's keys and values",
    };

    public static Option<double> CheckpointEvery() => new("--checkpoint-every")
    {
        Description = "Seconds between checkpoints (at least ten times as long as a checkpoint takes to write); 0 = after every batch",
        DefaultValueFactory = _ => 30,
    };

    /// <summary>The checkpoint interval of a --checkpoint-every value, checked.</summary>
    public static TimeSpan Interval(double seconds) => double.IsFinite(seconds) && seconds >= 0 && seconds <= 86400 * 7 ? TimeSpan.FromSeconds(seconds)
        : throw new PolyEngineException($"--checkpoint-every {seconds} is not a number of seconds between 0 and a week");

    public static Option<string> Bos(string auto) => new("--bos")
    {
        Description = $"Prepend the model's BOS token: auto ({auto}), on or off",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The BOS decision in words, as every verb that tokenizes prints it.</summary>
    public static string DescribeBos(Model m, bool prepend, string reason) =>
        prepend ? $"bos: prepended, token {m.BosTokenId} ({reason})" : $"bos: none ({reason})";

    /// <summary>The output folder of a resumable scan, marked as this run's (see <see cref="Scans.RunFolder"/>); says so
    /// when the run is already complete there.</summary>
    /// <summary>The scan's output folder, created and locked before any work (<see cref="Scans.RunFolder.Open"/>).</summary>
    public static Scans.RunFolder OpenScanOutput(Io io, string outDir)
    {
        var folder = Scans.RunFolder.Open(outDir);
        if (folder.LockWarning is { } warning) io.Err.WriteLine($"warning: {warning}");
        return folder;
    }

    /// <summary>Marks the folder for this run, and says so when the run is already complete there or an earlier one was replaced.</summary>
    public static void PrepareScanOutput(Io io, Scans.RunFolder folder, string outDir, Scans.RunKey key, bool overwrite, string outputs, IReadOnlyCollection<string> planned)
    {
        folder.Prepare(key, overwrite, outputs, planned);
        if (folder.AlreadyComplete)
            io.Out.WriteLine($"--out {outDir} already holds this run, complete (same inputs and options): nothing to do; pass --overwrite to run it again");
        if (folder.Note is { } note) io.Out.WriteLine($"--out {outDir}: {note}");
    }

    /// <summary>Loads the comma-separated SAE folders on the model's backend, each checked against the model, and says so.</summary>
    public static List<SparseAutoencoder> LoadSaes(Io io, Model model, string list)
    {
        var saes = new List<SparseAutoencoder>();
        try
        {
            foreach (var folder in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var s = SparseAutoencoder.Load(folder, model.Backend);
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
    public readonly Option<string> Shard = new("--shard")
    {
        Description = "Scan shard i of n of the corpus's documents (document k in shard k mod n): i/n, slurm (a job array's task), or k8s/n (an Indexed Job's index); " +
                      "polyengine merge combines the shards' folders into exactly the single run's outputs",
        DefaultValueFactory = _ => "0/1",
    };
    public readonly Option<string> Bos = Common.Bos("as the SAEs' prepend_bos say");
    public readonly Option<double> CheckpointEvery = Common.CheckpointEvery();
    public readonly Option<string> Device = Common.Device();
    public readonly Option<int> Threads = Common.Threads();

    public void AddTo(Command cmd)
    {
        foreach (Option o in new Option[] { Sae, Corpus, Threshold, Context, Format, MaxTokens, Batch, Bos, Shard, Output, Overwrite, CheckpointEvery, Device, Threads })
            cmd.Options.Add(o);
    }

    /// <summary>The --shard of the command line; a one-line error when --max-tokens would make the shards not add up.</summary>
    public PolyEngine.Shard ParseShard(ParseResult r)
    {
        var part = PolyEngine.Shard.Parse(r.GetValue(Shard)!);
        if (part.Count > 1 && r.GetValue(MaxTokens) is not null)
            throw new PolyEngineException("--max-tokens with --shard: each shard would stop on its own, and the shards would not add up to one run; shard a smaller corpus instead");
        return part;
    }

    /// <summary><paramref name="options"/> with the shared corpus-scan options of the command line.</summary>
    public T Apply<T>(T options, ParseResult r) where T : Scans.CorpusScanOptions
    {
        float threshold = r.GetValue(Threshold);
        if (!float.IsFinite(threshold)) throw new PolyEngineException($"--threshold {threshold} is not a finite number; give an activation such as 0 or 0.5");
        if (r.GetValue(MaxTokens) is long max && max <= 0) throw new PolyEngineException($"--max-tokens {max} leaves nothing to scan; give a positive number, or leave it out for the whole corpus");
        if (r.GetValue(Batch) <= 0) throw new PolyEngineException($"--batch {r.GetValue(Batch)} must be positive");
        return (T)((Scans.CorpusScanOptions)options with
        {
            Threshold = threshold, ContextSize = r.GetValue(Context), MaxTokens = r.GetValue(MaxTokens), Batch = r.GetValue(Batch),
            PrependBos = Tokenization.Bos.Parse(r.GetValue(Bos)),
        });
    }

    /// <summary>The options that decide a scan's result, for its run key and manifest (the BOS as resolved).</summary>
    public static System.Text.Json.Nodes.JsonObject KeyOptions(string scan, Scans.CorpusScanOptions o, bool bos) => new()
    {
        ["scan"] = scan, ["threshold"] = o.Threshold, ["context_size"] = o.ContextSize, ["max_tokens"] = o.MaxTokens, ["prepend_bos"] = bos,
    };
}

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
            File.Delete(Path.Combine(outDir, Scans.ScanCheckpoint.FileName));
        }
        Directory.CreateDirectory(outDir);
        return new Scans.ScanCheckpoint { Path = Path.Combine(outDir, Scans.ScanCheckpoint.FileName), RunKey = runKey };
    }
}

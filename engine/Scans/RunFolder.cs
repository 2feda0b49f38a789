using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// The output folder of a resumable run (a scan's <c>--out</c>), marked as one run's before anything is written: a small
/// <c>.polyengine-run.json</c> holds the run's key (its inputs and options) and its state, running or complete. A rerun
/// with the same key continues a running run from its checkpoint, and finds a complete run complete (nothing to do); a
/// folder holding another run, or other files, is refused unless the caller overwrites it. The folder is checked to be
/// creatable and writable up front, with one-line errors.
/// </summary>
public sealed class RunFolder
{
    public const string MarkerName = ".polyengine-run.json";

    readonly string _outputs;

    RunFolder(string path, string runKey, string outputs, bool complete) { Path = path; RunKey = runKey; _outputs = outputs; AlreadyComplete = complete; }

    public string Path { get; }
    public string RunKey { get; }

    /// <summary>True when this folder already holds this run, complete: its outputs are there and nothing needs doing.</summary>
    public bool AlreadyComplete { get; }

    /// <summary>Checks and creates <paramref name="outDir"/> and marks it as this run's (unless it already holds this run,
    /// complete). <paramref name="runKey"/> names what the run computes (a checkpoint resumes only under the same key);
    /// <paramref name="outputs"/> names how it writes it (table format, rows kept): a complete run is complete only if
    /// both match. <paramref name="overwrite"/> lets a folder holding another run (or a complete one) be reused: its
    /// checkpoints go, and the run's writers replace its outputs.</summary>
    public static RunFolder Prepare(string outDir, string runKey, bool overwrite, string outputs = "", string option = "--out")
    {
        string dir = Create(outDir, option);
        var (key, state, written) = ReadMarker(dir);
        if (key == runKey && state == "complete" && written == outputs && !overwrite) return new RunFolder(dir, runKey, outputs, complete: true);
        bool resumable = key == runKey && state == "running";
        if (!resumable && Directory.EnumerateFileSystemEntries(dir).Any())
        {
            if (!overwrite)
                throw new PolyEngineException(
                    key is null ? $"{option} {outDir}: the folder holds other files; choose an empty or new folder, or pass --overwrite"
                    : key == runKey ? $"{option} {outDir}: the folder holds this run, complete, written with other output options ({written}); pass --overwrite to write it again"
                    : $"{option} {outDir}: the folder holds a different run (other inputs or options); choose another folder, or pass --overwrite to replace it");
            ScanCheckpoint.DeleteAll(dir);
        }
        var folder = new RunFolder(dir, runKey, outputs, complete: false);
        folder.Mark("running");
        return folder;
    }

    /// <summary>A checkpoint file of this run in the folder.</summary>
    public ScanCheckpoint Checkpoint(string fileName = ScanCheckpoint.FileName) =>
        new() { Path = System.IO.Path.Combine(Path, fileName), RunKey = RunKey };

    /// <summary>Marks the run complete (after its outputs are written) and removes its checkpoints.</summary>
    public void Complete()
    {
        Mark("complete");
        ScanCheckpoint.DeleteAll(Path);
    }

    void Mark(string state) => AtomicFile.WriteText(System.IO.Path.Combine(Path, MarkerName),
        new JsonObject { ["run_key"] = RunKey, ["state"] = state, ["outputs"] = _outputs }.ToJsonString() + "\n");

    static (string? Key, string? State, string? Outputs) ReadMarker(string dir)
    {
        string p = System.IO.Path.Combine(dir, MarkerName);
        if (!File.Exists(p)) return (null, null, null);
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(p)) as JsonObject;
            return (o?["run_key"]?.GetValue<string>(), o?["state"]?.GetValue<string>(), o?["outputs"]?.GetValue<string>());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException) { return ("(unreadable)", null, null); }
    }

    /// <summary>Creates the folder (and its parents) and proves it writable, before any compute; one-line errors for every
    /// way that fails. Returns the full path.</summary>
    public static string Create(string outDir, string option = "--out")
    {
        if (string.IsNullOrWhiteSpace(outDir)) throw new PolyEngineException($"{option} is empty; give an output folder");
        string full;
        try { full = System.IO.Path.GetFullPath(outDir); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new PolyEngineException($"{option} {outDir}: not a valid folder path ({e.Message})");
        }
        if (File.Exists(full)) throw new PolyEngineException($"{option} {outDir}: is a file; give a folder (it is created if missing)");
        try { Directory.CreateDirectory(full); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new PolyEngineException($"{option} {outDir}: cannot create the folder ({FirstLine(e.Message)}); choose a writable location");
        }
        string probe = System.IO.Path.Combine(full, $".polyengine-write-test-{Environment.ProcessId}");
        try { File.WriteAllBytes(probe, []); File.Delete(probe); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolyEngineException($"{option} {outDir}: the folder is not writable ({FirstLine(e.Message)}); choose a writable location");
        }
        return full;
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();
}

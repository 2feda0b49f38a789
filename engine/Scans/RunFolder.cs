using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// The output folder of a resumable run (a scan's <c>--out</c>), held and marked before anything is written:
/// <list type="bullet">
/// <item>an exclusive lock (<c>.polyengine-run.lock</c>, released when the run ends or its process dies): a second run
/// into the same folder is refused with a one-line error naming the holder;</item>
/// <item>a marker (<c>.polyengine-run.json</c>) with the run's key — its inputs by content and its options —, how its
/// outputs are written, and its state, running or complete.</item>
/// </list>
/// A rerun with the same key continues a running run from its checkpoint, and finds a complete run complete (nothing to
/// do) while the outputs it recorded are there. A folder holding another run is refused, naming what differs, unless the
/// caller overwrites it (the earlier run's recorded outputs and checkpoints go; other files stay); a failed run that left
/// nothing but the marker is taken over. Stale temporary files of killed writes are removed. The folder is checked to be
/// creatable and writable up front, with one-line errors.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string MarkerName = ".polyengine-run.json";
    public const string LockName = ".polyengine-run.lock";
    /// <summary>Who holds the lock (the lock file itself cannot be read while it is held).</summary>
    public const string HolderName = ".polyengine-run.holder";

    readonly string _outputs;
    readonly FileStream _lock;

    RunFolder(string path, RunKey key, string outputs, bool complete, FileStream lockFile)
    {
        Path = path; Key = key; _outputs = outputs; AlreadyComplete = complete; _lock = lockFile;
    }

    public string Path { get; }
    public RunKey Key { get; }
    public string RunKey => Key.Value;

    /// <summary>True when this folder already holds this run, complete: its outputs are there and nothing needs doing.</summary>
    public bool AlreadyComplete { get; }

    /// <summary>What the previous run in the folder was, when this one took it over or replaced it (for a note to the user).</summary>
    public string? Note { get; private init; }

    /// <summary>Takes and marks <paramref name="outDir"/> for the run <paramref name="key"/> (see the class summary).
    /// <paramref name="outputs"/> names how the run writes its results (table format, rows kept): a complete run is
    /// complete only if both match. <paramref name="overwrite"/> lets a folder holding another run (or a complete one)
    /// be reused: the files of the earlier run go first.</summary>
    public static RunFolder Prepare(string outDir, RunKey key, bool overwrite, string outputs = "", string option = "--out")
    {
        string dir = Create(outDir, option);
        var lockFile = TakeLock(dir, outDir, option);
        try
        {
            var marker = ReadMarker(dir);
            RemoveStaleTemporaries(dir);
            string? key0 = Text(marker, "run_key"), state = Text(marker, "state"), written = Text(marker, "outputs");
            if (key0 == key.Value && state == "complete" && written == outputs && !overwrite && OutputsIntact(dir, marker!))
            {
                ScanCheckpoint.DeleteAll(dir);   // a run killed between marking itself complete and removing its checkpoints
                return new RunFolder(dir, key, outputs, complete: true, lockFile);
            }
            // The same run: running (resume), or complete with outputs since lost or moved (run again).
            bool resumable = key0 == key.Value && (state == "running" || (state == "complete" && written == outputs && !overwrite));
            string? note = null;
            if (!resumable && HoldsWork(dir))
            {
                if (!overwrite)
                    throw new PolyEngineException(
                        marker is null ? $"{option} {outDir}: the folder holds other files; choose an empty or new folder, or pass --overwrite"
                        : key0 == key.Value ? $"{option} {outDir}: the folder holds this run, complete, written with other output options ({written}); pass --overwrite to write it again"
                        : $"{option} {outDir}: the folder holds a different run ({key.Difference(marker["inputs"] as JsonObject, marker["options"] as JsonObject) ?? "other inputs or options"}); " +
                          "choose another folder, or pass --overwrite to replace it");
                ClearEarlierRun(dir, marker);
                note = "replaced the earlier run's outputs (--overwrite)";
            }
            else if (!resumable && marker is not null)
                note = "took over the folder of an earlier run that stopped before writing anything";
            var folder = new RunFolder(dir, key, outputs, complete: false, lockFile) { Note = note };
            folder.Mark("running");
            return folder;
        }
        catch
        {
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>A checkpoint file of this run in the folder, saved every <paramref name="every"/> (default 30 s).</summary>
    public ScanCheckpoint Checkpoint(TimeSpan? every = null, string fileName = ScanCheckpoint.FileName) =>
        new() { Path = System.IO.Path.Combine(Path, fileName), RunKey = RunKey, Every = every ?? TimeSpan.FromSeconds(30) };

    /// <summary>Marks the run complete after its outputs are written — <paramref name="outputFiles"/>, names in the folder,
    /// recorded with their sizes (a rerun finds the run complete only while they are there; --overwrite removes just
    /// these) — and removes its checkpoints.</summary>
    public void Complete(IEnumerable<string> outputFiles)
    {
        var files = new JsonObject();
        foreach (var name in outputFiles) files[name] = new FileInfo(System.IO.Path.Combine(Path, name)).Length;
        Mark("complete", files);
        ScanCheckpoint.DeleteAll(Path);
    }

    public void Dispose() => _lock.Dispose();

    void Mark(string state, JsonObject? files = null) => AtomicFile.WriteText(System.IO.Path.Combine(Path, MarkerName), new JsonObject
    {
        ["run_key"] = RunKey, ["state"] = state, ["outputs"] = _outputs, ["files"] = files ?? new JsonObject(),
        ["inputs"] = Key.Inputs.DeepClone(), ["options"] = Key.Options.DeepClone(),
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    /// <summary>A string field of the marker, or null when it is absent or not a string (a damaged marker names no run).</summary>
    static string? Text(JsonObject? marker, string name) =>
        marker?[name] is JsonValue v && v.TryGetValue<string>(out var text) ? text : null;

    /// <summary>The complete run's recorded outputs, each still there with its size.</summary>
    static bool OutputsIntact(string dir, JsonObject marker) =>
        marker["files"] is JsonObject files && files.All(f =>
            f.Value is JsonValue size && size.TryGetValue<long>(out long n) && File.Exists(System.IO.Path.Combine(dir, f.Key))
            && new FileInfo(System.IO.Path.Combine(dir, f.Key)).Length == n);

    /// <summary>The exclusive lock on the folder; a one-line error naming the holder when another run has it.</summary>
    static FileStream TakeLock(string dir, string outDir, string option)
    {
        string path = System.IO.Path.Combine(dir, LockName);
        try
        {
            var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            try
            {
                AtomicFile.WriteText(System.IO.Path.Combine(dir, HolderName),
                    $"pid {Environment.ProcessId} on {Environment.MachineName}, since {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC\n");
            }
            catch
            {
                fs.Dispose();
                throw;
            }
            return fs;
        }
        catch (IOException)
        {
            string holder = HolderOf(System.IO.Path.Combine(dir, HolderName));
            throw new PolyEngineException($"{option} {outDir}: another polyengine run is writing to this folder ({holder}); wait for it to finish or choose another folder");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new PolyEngineException($"{option} {outDir}: cannot lock the folder ({e.Message}); choose a writable location");
        }
    }

    /// <summary>Who holds the lock, as the holder wrote it.</summary>
    static string HolderOf(string holderPath)
    {
        try
        {
            string line = File.ReadLines(holderPath).FirstOrDefault()?.Trim() ?? "";
            return line.Length > 0 ? line : "holder unknown";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return "holder unknown"; }
    }

    static JsonObject? ReadMarker(string dir)
    {
        string p = System.IO.Path.Combine(dir, MarkerName);
        if (!File.Exists(p)) return null;
        try { return JsonNode.Parse(File.ReadAllText(p)) as JsonObject ?? new JsonObject(); }
        catch (JsonException) { return new JsonObject(); }   // unreadable: a marker of no known run
    }

    static bool IsHousekeeping(string name) =>
        name is MarkerName or LockName or HolderName || name.StartsWith(".polyengine-write-test-") || (name.StartsWith('.') && name.EndsWith(".tmp"));

    /// <summary>True when the folder holds anything but this class's own files: outputs, checkpoints or other files.</summary>
    static bool HoldsWork(string dir) =>
        Directory.EnumerateFileSystemEntries(dir).Any(e => !IsHousekeeping(System.IO.Path.GetFileName(e)));

    /// <summary>Temporary files of atomic writes that a killed process left (we hold the lock, so nobody is writing them).</summary>
    static void RemoveStaleTemporaries(string dir)
    {
        foreach (var f in Directory.EnumerateFiles(dir, ".*.tmp").Concat(Directory.EnumerateFiles(dir, ".polyengine-write-test-*")))
            try { File.Delete(f); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>--overwrite: the earlier run's checkpoints and the outputs its marker records go (a user's own files in
    /// the folder stay; outputs of the new run replace same-named ones).</summary>
    static void ClearEarlierRun(string dir, JsonObject? marker)
    {
        ScanCheckpoint.DeleteAll(dir);
        if (marker?["files"] is not JsonObject files) return;
        foreach (var (name, _) in files)
        {
            string path = System.IO.Path.Combine(dir, System.IO.Path.GetFileName(name));   // names only, never a path outside
            if (File.Exists(path)) File.Delete(path);
        }
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

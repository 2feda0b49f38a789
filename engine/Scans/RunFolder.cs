using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// The output folder of a resumable run (a scan's <c>--out</c>), held and marked before anything is written.
/// <list type="number">
/// <item><see cref="Open"/>, first of all (before inputs are hashed or a model loaded): the folder is created, proved
/// writable and locked — an exclusive <c>flock</c> on <c>.polyengine-run.lock</c>, released when the run ends or its
/// process dies; <c>.polyengine-run.holder</c> names the holder, so a second run is refused with a line naming the
/// first. A filesystem that cannot lock (some NFS and Lustre mounts) is said in <see cref="LockWarning"/>.</item>
/// <item><see cref="Prepare(RunKey, bool, string, IReadOnlyCollection{string})"/>, with the run's key: the marker <c>.polyengine-run.json</c> records the key (inputs by
/// content, options), the outputs the run will write and its state, running or complete. The same run continues from
/// its checkpoint, or is found complete while the outputs it recorded are there; a folder of another run is refused,
/// naming what differs, unless overwritten — then only that run's outputs and checkpoints go, never other files; a run
/// that failed before writing anything is taken over.</item>
/// </list>
/// </summary>
public sealed partial class RunFolder : IDisposable
{
    public const string MarkerName = ".polyengine-run.json";
    public const string LockName = ".polyengine-run.lock";
    /// <summary>Who holds the lock (the lock file itself is not written, so readers never wait on it).</summary>
    public const string HolderName = ".polyengine-run.holder";

    readonly FileStream _lock;
    readonly string _option, _given;
    bool _marked;
    string _outputs = "";
    RunKey? _key;

    RunFolder(string path, string given, string option, FileStream lockFile, string? warning)
    {
        Path = path; _given = given; _option = option; _lock = lockFile; LockWarning = warning;
    }

    public string Path { get; }
    public RunKey Key => _key ?? throw new InvalidOperationException("Prepare the folder with the run's key first");
    public string RunKey => Key.Value;

    /// <summary>True when this folder already holds this run, complete: its outputs are there and nothing needs doing.</summary>
    public bool AlreadyComplete { get; private set; }

    /// <summary>What happened to an earlier run in the folder, when this one took it over or replaced it (a note for the user).</summary>
    public string? Note { get; private set; }

    /// <summary>Set when the filesystem cannot lock: two runs into this folder at once would not be refused.</summary>
    public string? LockWarning { get; }

    /// <summary>Creates, proves writable and locks <paramref name="outDir"/>; one-line errors for every way that fails,
    /// and for a folder another run holds.</summary>
    public static RunFolder Open(string outDir, string option = "--out")
    {
        string dir = Create(outDir, option);
        var (lockFile, warning) = TakeLock(dir, outDir, option);
        return new RunFolder(dir, outDir, option, lockFile, warning);
    }

    /// <summary><see cref="Open"/> and <see cref="Prepare(RunKey, bool, string, IReadOnlyCollection{string})"/> in one call.</summary>
    public static RunFolder Prepare(string outDir, RunKey key, bool overwrite, string outputs = "", IReadOnlyCollection<string>? planned = null,
        string option = "--out")
    {
        var folder = Open(outDir, option);
        try
        {
            folder.Prepare(key, overwrite, outputs, planned ?? []);
            return folder;
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    /// <summary>Marks the folder for the run <paramref name="key"/> (see the class summary). <paramref name="outputs"/> names
    /// how the run writes its results (table format, rows kept): a complete run is complete only if key and outputs match.
    /// <paramref name="planned"/> are the files the run will write, recorded before it writes any, so that a later
    /// --overwrite removes them even if this run is killed half-way. <paramref name="overwrite"/> lets a folder holding
    /// another run (or this one, complete) be reused.</summary>
    public void Prepare(RunKey key, bool overwrite, string outputs, IReadOnlyCollection<string> planned)
    {
        _key = key;
        _outputs = outputs;
        var marker = ReadMarker(Path);
        if (marker is not null) RemoveStaleTemporaries(Path);   // the folder is ours: temporaries of killed writes are ours
        string? key0 = Text(marker, "run_key"), state = Text(marker, "state"), written = Text(marker, "outputs");
        if (key0 == key.Value && state == "complete" && written == outputs && !overwrite && OutputsIntact(Path, marker!))
        {
            ScanCheckpoint.DeleteAll(Path);   // a run killed between marking itself complete and removing its checkpoints
            AlreadyComplete = true;
            return;
        }
        // The same run: running (resume), or complete with outputs since lost or moved (run again).
        bool resumable = key0 == key.Value && (state == "running" || (state == "complete" && written == outputs && !overwrite));
        if (!resumable && HoldsWork(Path))
        {
            if (!overwrite)
                throw new PolyEngineException(
                    marker is null ? $"{_option} {_given}: the folder holds other files; choose an empty or new folder, or pass --overwrite"
                    : key0 == key.Value ? $"{_option} {_given}: the folder holds this run, complete, written with other output options ({written}); pass --overwrite to write it again"
                    : $"{_option} {_given}: the folder holds a different run ({key.Difference(marker["inputs"] as JsonObject, marker["options"] as JsonObject) ?? "other inputs or options"}); " +
                      "choose another folder, or pass --overwrite to replace it");
            ClearEarlierRun(Path, marker);
            Note = marker is null ? "--overwrite: this run's outputs replace same-named files in the folder"
                : "replaced the earlier run's outputs (--overwrite)";
        }
        else if (!resumable && marker is not null)
            Note = "took over the folder of an earlier run that stopped before writing anything";
        Mark("running", planned: planned);
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
        FaultPoints.Reach("marked-complete");
        ScanCheckpoint.DeleteAll(Path);
    }

    /// <summary>Releases the lock. A folder this run never marked (refused, or failed before) keeps none of its files.</summary>
    public void Dispose()
    {
        if (!_marked && !File.Exists(System.IO.Path.Combine(Path, MarkerName)))
            foreach (var name in new[] { HolderName, LockName })
                try { File.Delete(System.IO.Path.Combine(Path, name)); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        _lock.Dispose();
    }

    void Mark(string state, JsonObject? files = null, IReadOnlyCollection<string>? planned = null)
    {
        var previous = ReadMarker(Path);
        AtomicFile.WriteText(System.IO.Path.Combine(Path, MarkerName), new JsonObject
        {
            ["run_key"] = RunKey, ["state"] = state, ["outputs"] = _outputs, ["files"] = files ?? new JsonObject(),
            ["planned"] = planned is not null ? new JsonArray(planned.Select(p => (JsonNode)p).ToArray()) : previous?["planned"]?.DeepClone() ?? new JsonArray(),
            ["inputs"] = Key.Inputs.DeepClone(), ["options"] = Key.Options.DeepClone(),
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        _marked = true;
    }

    /// <summary>A string field of the marker, or null when it is absent or not a string (a damaged marker names no run).</summary>
    static string? Text(JsonObject? marker, string name) =>
        marker?[name] is JsonValue v && v.TryGetValue<string>(out var text) ? text : null;

    /// <summary>The complete run's recorded outputs, each still there with its size.</summary>
    static bool OutputsIntact(string dir, JsonObject marker) =>
        marker["files"] is JsonObject files && files.All(f =>
            f.Value is JsonValue size && size.TryGetValue<long>(out long n) && File.Exists(System.IO.Path.Combine(dir, f.Key))
            && new FileInfo(System.IO.Path.Combine(dir, f.Key)).Length == n);

    // ---- locking ----------------------------------------------------------------------------------------------------

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(int fd, int operation);

    const int LockExclusive = 2, LockNonBlocking = 4;

    /// <summary>The exclusive lock on the folder: flock on Unix (called directly, so a filesystem that cannot lock is noticed
    /// rather than silently ignored), a share-none handle on Windows.</summary>
    static (FileStream Lock, string? Warning) TakeLock(string dir, string outDir, string option)
    {
        string path = System.IO.Path.Combine(dir, LockName), holderPath = System.IO.Path.Combine(dir, HolderName);
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, OperatingSystem.IsWindows() ? FileShare.None : FileShare.ReadWrite);
        }
        catch (IOException e) when ((e.HResult & 0xFFFF) is 32 or 11 or 35)   // held: a sharing violation (Windows) or EWOULDBLOCK (Linux, macOS) from .NET's own lock
        {
            throw new PolyEngineException($"{option} {outDir}: another polyengine run is writing to this folder ({HolderOf(holderPath)}); wait for it to finish or choose another folder");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolyEngineException($"{option} {outDir}: cannot create the lock file ({e.Message.Split('\n')[0]}); choose a writable location");
        }
        string? warning = null;
        if (!OperatingSystem.IsWindows())
        {
            int fd = (int)fs.SafeFileHandle.DangerousGetHandle();
            if (Flock(fd, LockExclusive | LockNonBlocking) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno is 11 or 35)   // EWOULDBLOCK (Linux, macOS): another process holds it
                {
                    fs.Dispose();
                    throw new PolyEngineException($"{option} {outDir}: another polyengine run is writing to this folder ({HolderOf(holderPath)}); wait for it to finish or choose another folder");
                }
                if (errno is 37 or 38 or 95 or 22 or 45 or 78)   // ENOLCK, ENOSYS, EOPNOTSUPP, EINVAL (Linux); ENOTSUP, ENOLCK (macOS)
                    warning = $"the filesystem of {outDir} cannot lock files (errno {errno}): two runs into this folder at once would not be refused";
                else
                {
                    fs.Dispose();
                    throw new PolyEngineException($"{option} {outDir}: cannot lock the folder (errno {errno}); choose another location");
                }
            }
        }
        try
        {
            AtomicFile.WriteText(holderPath, $"pid {Environment.ProcessId} on {Environment.MachineName}, since {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC\n");
        }
        catch
        {
            fs.Dispose();
            throw;
        }
        return (fs, warning);
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

    // ---- what is in the folder --------------------------------------------------------------------------------------

    static JsonObject? ReadMarker(string dir)
    {
        string p = System.IO.Path.Combine(dir, MarkerName);
        if (!File.Exists(p)) return null;
        try { return JsonNode.Parse(File.ReadAllText(p)) as JsonObject ?? new JsonObject(); }
        catch (JsonException) { return new JsonObject(); }   // unreadable: a marker of no known run
    }

    [GeneratedRegex(@"^\..+\.\d+\.tmp$")]
    private static partial Regex Temporary();   // AtomicFile's temporaries: .{name}.{pid}.tmp

    [GeneratedRegex(@"^\.polyengine-write-test-\d+$")]
    private static partial Regex WriteProbe();

    static bool IsHousekeeping(string name) => name is MarkerName or LockName or HolderName || WriteProbe().IsMatch(name) || Temporary().IsMatch(name);

    /// <summary>True when the folder holds anything but this class's own files: outputs, checkpoints or other files.</summary>
    static bool HoldsWork(string dir) =>
        Directory.EnumerateFileSystemEntries(dir).Any(e => !IsHousekeeping(System.IO.Path.GetFileName(e)));

    /// <summary>Temporary files of atomic writes that a killed process left in a folder of ours (we hold the lock, so
    /// nobody is writing them).</summary>
    static void RemoveStaleTemporaries(string dir)
    {
        foreach (var f in Directory.EnumerateFiles(dir, ".*"))
        {
            string name = System.IO.Path.GetFileName(f);
            if (Temporary().IsMatch(name) || WriteProbe().IsMatch(name))
                try { File.Delete(f); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }

    /// <summary>--overwrite: the earlier run's checkpoints and the outputs its marker recorded or planned go; other files stay.</summary>
    static void ClearEarlierRun(string dir, JsonObject? marker)
    {
        ScanCheckpoint.DeleteAll(dir);
        var names = (marker?["files"] as JsonObject)?.Select(f => f.Key) ?? [];
        if (marker?["planned"] is JsonArray planned)
            names = names.Concat(planned.Select(p => p is JsonValue v && v.TryGetValue<string>(out var s) ? s : null).OfType<string>());
        foreach (var name in names.Distinct())
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

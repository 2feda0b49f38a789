using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// A scan's state at a batch boundary, saved atomically to <c>checkpoint.safetensors</c> in the output folder every
/// <see cref="Every"/>: how many context windows were done, the scan's own state (counters, statistics) as tensors,
/// and a key of the run's inputs and options. A rerun with the same key continues from it and ends with identical
/// output; the file is deleted once the outputs are written.
/// </summary>
public sealed class ScanCheckpoint
{
    public required string Path { get; init; }
    public required string RunKey { get; init; }
    public TimeSpan Every { get; init; } = TimeSpan.FromSeconds(30);

    public const string FileName = "checkpoint.safetensors";

    readonly System.Diagnostics.Stopwatch _sinceSave = System.Diagnostics.Stopwatch.StartNew();
    TimeSpan _lastSaveTook;

    /// <summary>Saves when <see cref="Every"/> has passed since the last save — and at least ten times as long as that save
    /// took, so that large counters (1.2 GB at F = 24,576) never spend more than a tenth of the run on checkpoints.</summary>
    internal void MaybeSave(long windows, Action<SafeTensorsWriter> state)
    {
        var due = Every > _lastSaveTook * 10 ? Every : _lastSaveTook * 10;
        if (_sinceSave.Elapsed < due) return;
        Save(windows, state);
    }

    /// <summary>Saves now (atomically: a killed save leaves the previous checkpoint).</summary>
    internal void Save(long windows, Action<SafeTensorsWriter> state)
    {
        var took = System.Diagnostics.Stopwatch.StartNew();
        var w = new SafeTensorsWriter().AddMetadata("run_key", RunKey).AddMetadata("windows", windows.ToString());
        state(w);
        w.Save(Path);
        FaultPoints.Reach("checkpoint-saved");
        _lastSaveTook = Every == TimeSpan.Zero ? TimeSpan.Zero : took.Elapsed;   // Every = 0 (tests): save at every batch
        _sinceSave.Restart();
    }

    /// <summary>The saved state when it belongs to this run (the caller disposes the file), else null.</summary>
    internal (long Windows, SafeTensorsFile File)? Open()
    {
        if (!File.Exists(Path)) return null;
        SafeTensorsFile f;
        try { f = SafeTensorsFile.Open(Path); }
        catch (PolyEngineException e)
        {
            throw new PolyEngineException($"{Path}: the checkpoint cannot be read ({e.Message}); delete it to start this run over, or pass --overwrite");
        }
        if (f.Metadata.GetValueOrDefault("run_key") != RunKey) { f.Dispose(); return null; }
        return (long.Parse(f.Metadata["windows"]), f);
    }

    /// <summary>Records the seconds spent so far (this run and the runs it continues), so a resumed scan reports honest speeds.</summary>
    internal static void AddSeconds(SafeTensorsWriter w, double seconds) =>
        w.AddMetadata("seconds", seconds.ToString("R", System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The seconds a checkpoint recorded (0 when it recorded none).</summary>
    internal static double SecondsIn(SafeTensorsFile f) =>
        f.Metadata.TryGetValue("seconds", out var s) ? double.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : 0;

    public void Delete()
    {
        if (File.Exists(Path)) File.Delete(Path);
    }

    /// <summary>Deletes the checkpoints of scans in <paramref name="outDir"/>: <c>checkpoint.safetensors</c> and the
    /// <c>checkpoint.{k}.safetensors</c> of scans that keep one per SAE — only files a scan wrote (they carry a run key),
    /// never a user's own checkpoint-named files.</summary>
    public static void DeleteAll(string outDir)
    {
        if (!Directory.Exists(outDir)) return;
        foreach (var f in Directory.GetFiles(outDir, "checkpoint*.safetensors"))
        {
            if (!System.Text.RegularExpressions.Regex.IsMatch(System.IO.Path.GetFileName(f), @"^checkpoint(\.\d+)?\.safetensors$")) continue;
            bool ours;
            try { using var file = SafeTensorsFile.Open(f); ours = file.Metadata.ContainsKey("run_key"); }
            catch (PolyEngineException) { ours = false; }
            if (ours) File.Delete(f);
        }
    }
}

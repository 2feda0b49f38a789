namespace PolyEngine;

/// <summary>
/// Named points where a test can make the process die as a kill would (SIGKILL to itself: no cleanup runs) or make a
/// write fail as a full disk would, so the promises about killed and failing runs are checked at exact moments, not
/// only at random times. Off unless the environment variable <c>POLYENGINE_FAULT</c> (for a child process) or
/// <see cref="Set"/> (in process) names a point: <c>kill@NAME</c>, <c>kill@NAME#N</c> (the N-th time it is reached) or
/// <c>nospace@NAME</c>. Points: <c>checkpoint-saved</c>, <c>marked-complete</c>, and for every atomic write of a file
/// (its full path) <c>write:PATH</c> (the write fails there as a full disk), <c>before-rename:PATH</c> (written, not yet
/// in place) and <c>after-rename:PATH</c>.
/// </summary>
public static class FaultPoints
{
    static string? _spec = Environment.GetEnvironmentVariable("POLYENGINE_FAULT");
    static int _hits;

    /// <summary>Arms a fault in this process (null disarms); tests only.</summary>
    public static void Set(string? spec) { _spec = spec; _hits = 0; }

    /// <summary>Called at point <paramref name="name"/>: kills the process, or throws a disk-full IOException, when armed for it.</summary>
    public static void Reach(string name)
    {
        var spec = _spec;
        if (spec is null) return;
        int at = spec.IndexOf('@');
        if (at < 0) return;
        string action = spec[..at], target = spec[(at + 1)..];
        int nth = 1, hash = target.LastIndexOf('#');
        if (hash >= 0 && int.TryParse(target[(hash + 1)..], out int n)) { nth = n; target = target[..hash]; }
        if (target != name || Interlocked.Increment(ref _hits) != nth) return;
        if (action == "kill") System.Diagnostics.Process.GetCurrentProcess().Kill();
        if (action == "nospace") throw new IOException("No space left on device (fault injected at " + name + ")");
    }
}

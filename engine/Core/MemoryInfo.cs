namespace PolyEngine;

/// <summary>How much memory a run may still take: Linux's MemAvailable (free plus reclaimable cache, as the kernel
/// estimates it) within the process's own limit (a container's cgroup), else what .NET says is available minus what
/// the process holds already.</summary>
public static class MemoryInfo
{
    public static long AvailableBytes()
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - Environment.WorkingSet;
        try
        {
            if (File.Exists("/proc/meminfo"))
                foreach (var line in File.ReadLines("/proc/meminfo"))
                    if (line.StartsWith("MemAvailable:"))
                    {
                        long kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
                        return Math.Max(0, Math.Min(kb * 1024, limit));
                    }
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { }
        return Math.Max(0, limit);
    }

    /// <summary>A one-line error when <paramref name="bytes"/> would take more than 80 % of what is available.</summary>
    public static void Check(long bytes, string what, string fix)
    {
        long available = AvailableBytes();
        if (bytes > available * 0.8)
            throw new PolyEngineException($"{what} need {Gib(bytes)} GiB but only {Gib(available)} GiB are available; {fix}");
    }

    public static string Gib(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString("N1", System.Globalization.CultureInfo.InvariantCulture);
}

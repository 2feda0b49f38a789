using System.Collections.Concurrent;
using System.IO.Hashing;

namespace PolyEngine.Formats;

/// <summary>
/// Content hashes of input files, for run keys: XXH128 over every byte (through links), streamed in 1 MiB reads, so a
/// resumed run notices a changed weight or corpus file even when its size is the same. Fast enough for GB-sized files
/// (it runs at the speed the file can be read: several GB/s from the page cache); each file is hashed once per process
/// while its length and write time stay the same.
/// </summary>
public static class FileHash
{
    static readonly ConcurrentDictionary<(string Path, long Length, DateTime Written), string> Cache = new();

    /// <summary>The file's XXH128 as 32 hex digits.</summary>
    public static string Xxh128(string path)
    {
        string target = FileLinks.Resolve(path);
        var info = new FileInfo(target);
        return Cache.GetOrAdd((Path.GetFullPath(target), info.Length, info.LastWriteTimeUtc), _ =>
        {
            var hash = new XxHash128();
            using var fs = new FileStream(target, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            var buffer = new byte[1 << 20];
            int n;
            while ((n = fs.Read(buffer)) > 0) hash.Append(buffer.AsSpan(0, n));
            return Convert.ToHexStringLower(hash.GetCurrentHash());
        });
    }
}

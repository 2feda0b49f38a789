using System.IO.Hashing;

namespace PolyEngine.Formats;

/// <summary>
/// Content hashes of input files, for run keys: XXH128 over every byte (through links), streamed in 1 MiB reads, so a
/// resumed run notices a changed weight or corpus file even when its size and write time are the same. Cheap for GB-sized
/// files: it runs at the speed the file can be read (measured: 1 GiB from the page cache in 0.36 s; SHA-256 takes 1.04 s).
/// </summary>
public static class FileHash
{
    /// <summary>The file's XXH128 as 32 hex digits.</summary>
    public static string Xxh128(string path)
    {
        var hash = new XxHash128();
        using var fs = new FileStream(FileLinks.Resolve(path), FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        int n;
        while ((n = fs.Read(buffer)) > 0) hash.Append(buffer.AsSpan(0, n));
        return Convert.ToHexStringLower(hash.GetCurrentHash());
    }
}

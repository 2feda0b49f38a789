using System.IO.Compression;
using System.Text;

namespace PolyEngine.Output;

/// <summary>
/// NumPy's <c>.npz</c>: a zip of <c>.npy</c> arrays (format 1.0, little-endian, C order), one per name, written
/// atomically; <c>np.load(path)[name]</c> reads each back. For users who would rather not install safetensors.
/// </summary>
public sealed class NpzWriter
{
    readonly List<(string Name, string Descr, long[] Shape, Action<Stream> Write)> _arrays = [];

    public NpzWriter Add(string name, float[] data, params long[] shape) =>
        Add(name, "<f4", shape, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())));

    public NpzWriter Add(string name, long[] data, params long[] shape) =>
        Add(name, "<i8", shape, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())));

    /// <summary>A 0-d unicode array (numpy <c>&lt;U</c>, UTF-32): <c>str(np.load(path)[name])</c> gives the text back.</summary>
    public NpzWriter AddText(string name, string text)
    {
        var runes = text.EnumerateRunes().Select(r => r.Value).ToArray();
        return Add(name, $"<U{Math.Max(1, runes.Length)}", [], s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(
            (runes.Length == 0 ? new int[1] : runes).AsSpan())));
    }

    NpzWriter Add(string name, string descr, long[] shape, Action<Stream> write)
    {
        if (_arrays.Any(a => a.Name == name)) throw new ArgumentException($"array '{name}' added twice");
        _arrays.Add((name, descr, shape, write));
        return this;
    }

    public void Save(string path) => Formats.AtomicFile.Write(path, stream =>
    {
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        foreach (var (name, descr, shape, write) in _arrays)
        {
            using var entry = zip.CreateEntry(name + ".npy", CompressionLevel.NoCompression).Open();
            entry.Write(Header(descr, shape));
            write(entry);
        }
    });

    /// <summary>One float32 array as a plain <c>.npy</c> file (<c>np.load(path)</c>), atomically.</summary>
    public static void SaveNpy(string path, float[] data, params long[] shape) => Formats.AtomicFile.Write(path, s =>
    {
        s.Write(Header("<f4", shape));
        s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
    });

    /// <summary>The .npy 1.0 header: magic, version, header length, and the dict padded so the data starts 64-byte aligned.</summary>
    internal static byte[] Header(string descr, long[] shape)
    {
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}";
        int total = 10 + dict.Length + 1;
        dict = dict.PadRight(dict.Length + (64 - total % 64) % 64) + "\n";
        var header = new byte[10 + dict.Length];
        header[0] = 0x93;
        Encoding.ASCII.GetBytes("NUMPY").CopyTo(header, 1);
        header[6] = 1;
        header[7] = 0;
        BitConverter.TryWriteBytes(header.AsSpan(8, 2), (ushort)dict.Length);
        Encoding.ASCII.GetBytes(dict).CopyTo(header, 10);
        return header;
    }
}

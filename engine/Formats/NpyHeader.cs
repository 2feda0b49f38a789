using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace PolyEngine.Formats;

/// <summary>
/// The header of a <c>.npy</c> file (format versions 1–3): its dtype, shape and where the data starts, checked against
/// the file's size for the dtypes a reader takes. C order only. Errors start with the option and file they concern.
/// </summary>
public sealed record NpyHeader(string Descr, long[] Shape, long DataStart, long Count, int Width)
{
    public string ShapeText => $"({string.Join(", ", Shape)})";

    /// <summary>Reads and checks the header of <paramref name="file"/>; <paramref name="widths"/> maps each dtype the caller
    /// takes (e.g. <c>&lt;f4</c>) to its element size, <paramref name="dtypes"/> names them for the error.</summary>
    public static NpyHeader Read(string file, string option, IReadOnlyDictionary<string, int> widths, string dtypes)
    {
        long length = FileLinks.Length(file);
        using var fs = File.OpenRead(FileLinks.Resolve(file));
        var head = new byte[Math.Min(1 << 16, length)];   // numpy's headers are a few hundred bytes; allow big ones
        fs.ReadExactly(head);
        return Parse(file, option, head, length, widths, dtypes);
    }

    public static NpyHeader Parse(string file, string option, byte[] b, long length, IReadOnlyDictionary<string, int> widths, string dtypes)
    {
        string at = $"{option} {file}";
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY")
            throw new PolyEngineException($"{at}: not a .npy file (bad magic)");
        int major = b[6];
        int start = major == 1 ? 10 : 12;
        if (major is < 1 or > 3 || b.Length < start) throw new PolyEngineException($"{at}: .npy format version {major} is not 1, 2 or 3, or the header is cut short");
        long headerLen = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(8)) : BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8));
        if (start + headerLen > b.Length) throw new PolyEngineException($"{at}: .npy header is longer than the file allows");
        string header = Encoding.ASCII.GetString(b, start, (int)headerLen);
        string descr = Regex.Match(header, @"'descr':\s*'([^']+)'").Groups[1].Value;
        if (header.Contains("'fortran_order': True")) throw new PolyEngineException($"{at}: Fortran-ordered .npy is not supported; save it with np.ascontiguousarray");
        var shape = Regex.Match(header, @"'shape':\s*\(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.TryParse(s, out long v) && v >= 0 ? v : throw new PolyEngineException($"{at}: .npy shape entry '{s}' is not a size")).ToArray();
        if (!widths.TryGetValue(descr, out int width))
            throw new PolyEngineException($"{at}: .npy dtype '{descr}' is not supported ({dtypes})");
        long count, dataStart = start + headerLen;
        try { count = shape.Aggregate(1L, (x, y) => checked(x * y)); _ = checked(count * width); }
        catch (OverflowException) { throw new PolyEngineException($"{at}: the .npy shape ({string.Join(", ", shape)}) is too large; the header is corrupt"); }
        if (dataStart + count * width != length)
            throw new PolyEngineException($"{at}: the .npy header says shape ({string.Join(", ", shape)}) = {count} values of {width} bytes, " +
                $"but the file holds {length - dataStart} data bytes; the file is truncated or corrupt");
        return new NpyHeader(descr, shape, dataStart, count, width);
    }
}

using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace PolyEngine.Formats;

/// <summary>
/// Token files, read in bounded pieces: <c>.npy</c> (int32/int64/uint16/uint32/uint64, little-endian, C order; 1-D is one
/// document, 2-D [n, ctx] is n documents of ctx tokens — how tokenized datasets are saved), llm.c <c>.bin</c> (256-int32
/// header, magic 20240520, uint16 or uint32 tokens), nanoGPT raw uint16 <c>.bin</c> and raw uint32 <c>.u32</c>.
/// </summary>
static class TokenFiles
{
    /// <summary>Where a token file's ids start, their width in bytes, how many there are and how many make one document
    /// (the whole file, or a row of a 2-D .npy).</summary>
    internal readonly record struct Layout(long Offset, int Width, long Count, long DocumentLength, bool Signed = false);

    public static bool Is(string file) => Path.GetExtension(file).ToLowerInvariant() is ".npy" or ".bin" or ".u32";

    /// <summary>The file's documents in pieces of at most <paramref name="pieceTokens"/> ids (a piece never spans two
    /// documents): (tokens, document index within the file, the piece's first and last byte as fractions of the file).</summary>
    public static IEnumerable<(int[] Tokens, long Document, double Start, double End)> Pieces(string file, int pieceTokens)
    {
        var layout = Read(file);
        long fileBytes = Math.Max(1, FileLinks.Length(file));
        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        fs.Seek(layout.Offset, SeekOrigin.Begin);
        var buffer = new byte[Math.Min(pieceTokens, Math.Max(1, layout.Count)) * layout.Width];
        for (long done = 0; done < layout.Count;)
        {
            long inDocument = done % layout.DocumentLength;
            int n = (int)Math.Min(Math.Min(pieceTokens, layout.Count - done), layout.DocumentLength - inDocument);
            try { fs.ReadExactly(buffer, 0, n * layout.Width); }
            catch (EndOfStreamException) { throw new PolyEngineException($"--corpus {file}: the file ended early (it changed while being read?); check the file"); }
            double start = (layout.Offset + done * layout.Width) / (double)fileBytes;
            done += n;
            yield return (Cast(file, buffer.AsSpan(0, n * layout.Width), layout.Width, layout.Signed, done - n), (done - 1) / layout.DocumentLength,
                start, (layout.Offset + done * layout.Width) / (double)fileBytes);
        }
    }

    /// <summary>The layout of a token file, validated against its size.</summary>
    public static Layout Read(string file)
    {
        long length = FileLinks.Length(file);
        string ext = Path.GetExtension(file).ToLowerInvariant();
        if (ext == ".npy")
        {
            using var fs = File.OpenRead(file);
            var head = new byte[Math.Min(1 << 16, length)];   // numpy's headers are a few hundred bytes; allow big ones
            fs.ReadExactly(head);
            return Npy(file, head, length);
        }
        if (ext == ".u32") { long n = Whole(file, length, 4); return new(0, 4, n, Math.Max(1, n)); }
        if (length >= 1024)
        {
            using var fs = File.OpenRead(file);
            var head = new byte[12];
            fs.ReadExactly(head);
            if (BinaryPrimitives.ReadInt32LittleEndian(head) == 20240520)
            {
                int version = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(4));
                long n = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(8));
                int width = version == 1 ? 2 : version == 2 ? 4 : throw new PolyEngineException($"--corpus {file}: llm.c token file version {version} is not supported (1 or 2)");
                if (1024 + n * width != length)
                    throw new PolyEngineException($"--corpus {file}: llm.c header says {n} tokens but the file holds {(length - 1024) / width}; the file is truncated");
                return new(1024, width, n, Math.Max(1, n));
            }
        }
        long count = Whole(file, length, 2);
        return new(0, 2, count, Math.Max(1, count));
    }

    static long Whole(string file, long bytes, int width) => bytes % width == 0 ? bytes / width
        : throw new PolyEngineException($"--corpus {file}: {bytes} bytes is not a whole number of {width * 8}-bit tokens");

    /// <summary>Little-endian ids of <paramref name="width"/> bytes as int32, each checked to be a valid token id.</summary>
    static int[] Cast(string file, ReadOnlySpan<byte> bytes, int width, bool signed, long firstIndex)
    {
        var ids = new int[bytes.Length / width];
        for (int i = 0; i < ids.Length; i++)
        {
            var at = bytes[(i * width)..];
            Int128 v = (width, signed) switch
            {
                (2, _) => BinaryPrimitives.ReadUInt16LittleEndian(at),
                (4, true) => BinaryPrimitives.ReadInt32LittleEndian(at),
                (4, false) => BinaryPrimitives.ReadUInt32LittleEndian(at),
                (_, true) => BinaryPrimitives.ReadInt64LittleEndian(at),
                _ => BinaryPrimitives.ReadUInt64LittleEndian(at),
            };
            if (v < 0 || v > int.MaxValue) throw new PolyEngineException($"--corpus {file}: token {firstIndex + i} = {v} is not a valid token id");
            ids[i] = (int)v;
        }
        return ids;
    }

    static readonly Dictionary<string, int> TokenDtypes = new() { ["<i4"] = 4, ["<u4"] = 4, ["<i8"] = 8, ["<u8"] = 8, ["<u2"] = 2 };

    /// <summary>The .npy header (<see cref="NpyHeader"/>): int32/int64/uint16/uint32/uint64 little-endian, 1-D or 2-D.</summary>
    static Layout Npy(string file, byte[] b, long length)
    {
        var h = NpyHeader.Parse(file, "--corpus", b, length, TokenDtypes, "int32, int64, uint16, uint32 or uint64, little-endian");
        if (h.Shape.Length is not (1 or 2))
            throw new PolyEngineException($"--corpus {file}: .npy token files must be 1-D (one document) or 2-D [documents, tokens], found shape {h.ShapeText}");
        return new(h.DataStart, h.Width, h.Count, h.Shape.Length == 2 ? Math.Max(1, h.Shape[1]) : Math.Max(1, h.Count), Signed: h.Descr[1] == 'i');
    }
}

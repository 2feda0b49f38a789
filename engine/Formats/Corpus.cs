using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using PolyEngine.Tokenization;

namespace PolyEngine.Formats;

/// <summary>
/// A token corpus, streamed (memory does not grow with the corpus): plain text (<c>.txt</c>, one document per file),
/// JSONL with a <c>text</c> field (one document per line), or token files — <c>.npy</c> (int32/uint16/uint32, 1-D),
/// llm.c <c>.bin</c> (256-int32 header, magic 20240520, uint16 tokens), nanoGPT raw uint16 <c>.bin</c>, raw <c>.u32</c>.
/// A folder is every such file in it, in name order. Token files are one document each (their EOT tokens stay in).
/// </summary>
public sealed class Corpus
{
    readonly List<string> _files;
    readonly ModelTokenizer? _tokenizer;

    Corpus(List<string> files, ModelTokenizer? tokenizer) { _files = files; _tokenizer = tokenizer; }

    public IReadOnlyList<string> Files => _files;

    static readonly string[] Extensions = [".txt", ".jsonl", ".npy", ".bin", ".u32"];

    /// <param name="tokenizer">Needed for text and JSONL (null: only token files are accepted).</param>
    public static Corpus Open(string path, ModelTokenizer? tokenizer)
    {
        List<string> files;
        if (Directory.Exists(path))
            files = Directory.GetFiles(path).Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => f, StringComparer.Ordinal).ToList();
        else if (File.Exists(path)) files = [path];
        else throw new PolyEngineException($"--corpus {path}: not found");
        if (files.Count == 0) throw new PolyEngineException($"--corpus {path}: no .txt, .jsonl, .npy, .bin or .u32 files in the folder");
        foreach (var f in files)
            if (!Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                throw new PolyEngineException($"--corpus {f}: unknown corpus format '{Path.GetExtension(f)}' (use .txt, .jsonl, .npy, .bin or .u32)");
        return new Corpus(files, tokenizer);
    }

    /// <summary>Each document's token ids, in order (a token file is one document, read whole: use <see cref="Windows"/> to stream).</summary>
    public IEnumerable<int[]> Documents() =>
        Pieces().GroupByDocument().Select(g => g.SelectMany(p => p).ToArray());

    /// <summary>The corpus as pieces of documents: (tokens, document index). A text document is one piece; a token file
    /// comes in pieces of at most <see cref="PieceTokens"/> tokens, so memory does not grow with the file.</summary>
    IEnumerable<(int[] Tokens, long Document)> Pieces()
    {
        long doc = 0;
        foreach (var f in _files)
        {
            if (IsTokenFile(f))
            {
                bool any = false;
                foreach (var piece in ReadTokenPieces(f, PieceTokens)) { any = true; yield return (piece, doc); }
                if (any) doc++;
            }
            else
                foreach (var d in Read(f)) yield return (d, doc++);
        }
        if (doc == 0) throw new PolyEngineException($"--corpus: {string.Join(", ", _files)} hold no documents (empty corpus)");
    }

    internal const int PieceTokens = 1 << 20;

    static bool IsTokenFile(string f) => Path.GetExtension(f).ToLowerInvariant() is ".npy" or ".bin" or ".u32";

    /// <summary>Documents cut into windows of <paramref name="contextSize"/> tokens; with <paramref name="bos"/>, each window is
    /// BOS + (contextSize − 1) tokens. A document's last, shorter window is kept. Each window carries its document index.
    /// Streamed: at most one piece of a token file is in memory.</summary>
    public IEnumerable<(int[] Tokens, long Document)> Windows(int contextSize, int? bos) => Windows(Pieces(), contextSize, bos);

    internal static IEnumerable<(int[] Tokens, long Document)> Windows(IEnumerable<(int[] Tokens, long Document)> pieces, int contextSize, int? bos)
    {
        if (contextSize < (bos is null ? 1 : 2)) throw new PolyEngineException($"context size {contextSize} is too small");
        int body = bos is null ? contextSize : contextSize - 1;
        int head = bos is null ? 0 : 1;
        var carry = new List<int>(body);
        long current = -1;
        int[] Window(ReadOnlySpan<int> tokens)
        {
            var w = new int[tokens.Length + head];
            if (bos is int b) w[0] = b;
            tokens.CopyTo(w.AsSpan(head));
            return w;
        }
        foreach (var (piece, doc) in pieces)
        {
            if (doc != current)
            {
                if (carry.Count > 0) yield return (Window(carry.ToArray()), current);
                carry.Clear();
                current = doc;
            }
            int i = 0;
            if (carry.Count > 0)
            {
                int take = Math.Min(body - carry.Count, piece.Length);
                carry.AddRange(piece.AsSpan(0, take).ToArray());
                i = take;
                if (carry.Count == body) { yield return (Window(carry.ToArray()), doc); carry.Clear(); }
            }
            for (; i + body <= piece.Length; i += body) yield return (Window(piece.AsSpan(i, body)), doc);
            if (i < piece.Length) carry.AddRange(piece.AsSpan(i).ToArray());
        }
        if (carry.Count > 0) yield return (Window(carry.ToArray()), current);
    }

    IEnumerable<int[]> Read(string file)
    {
        switch (Path.GetExtension(file).ToLowerInvariant())
        {
            case ".txt":
                string text = ReadText(file);
                if (text.Length > 0) yield return Tokenizer(file).Encode(text);
                break;
            case ".jsonl":
                int line = 0;
                foreach (var raw in File.ReadLines(file, Encoding.UTF8))
                {
                    line++;
                    if (string.IsNullOrWhiteSpace(raw)) continue;
                    string? t;
                    try
                    {
                        using var doc = JsonDocument.Parse(raw);
                        t = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("text", out var v) && v.ValueKind == JsonValueKind.String
                            ? v.GetString() : null;
                    }
                    catch (JsonException e) { throw new PolyEngineException($"--corpus {file}:{line}: not valid JSON ({e.Message.Split('\n')[0]})"); }
                    if (t is null) throw new PolyEngineException($"--corpus {file}:{line}: each JSONL line needs a string field 'text'");
                    if (t.Length > 0) yield return Tokenizer(file).Encode(t);
                }
                break;
            default:
                throw new InvalidOperationException("token files are read in pieces");
        }
    }

    ModelTokenizer Tokenizer(string file) => _tokenizer
        ?? throw new PolyEngineException($"--corpus {file}: text needs the model's tokenizer, and none is available; give token files (.npy/.bin) instead");

    static string ReadText(string file)
    {
        try { return new UTF8Encoding(false, true).GetString(File.ReadAllBytes(file)); }
        catch (DecoderFallbackException) { throw new PolyEngineException($"--corpus {file}: not UTF-8 text; a .txt corpus must be UTF-8"); }
    }

    /// <summary>A token file in pieces of at most <paramref name="pieceTokens"/> ids, read with a bounded buffer.</summary>
    static IEnumerable<int[]> ReadTokenPieces(string file, int pieceTokens)
    {
        var (offset, width, count) = TokenLayout(file);
        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        fs.Seek(offset, SeekOrigin.Begin);
        var buffer = new byte[Math.Min(pieceTokens, Math.Max(1, count)) * width];
        for (long done = 0; done < count;)
        {
            int n = (int)Math.Min(pieceTokens, count - done);
            fs.ReadExactly(buffer, 0, n * width);
            yield return Cast(file, buffer.AsSpan(0, n * width).ToArray(), 0, width);
            done += n;
        }
    }

    /// <summary>Where a token file's ids start, their width in bytes and their count (validated against the file size).</summary>
    static (long Offset, int Width, long Count) TokenLayout(string file)
    {
        long length = FileLinks.Length(file);
        string ext = Path.GetExtension(file).ToLowerInvariant();
        if (ext == ".npy")
        {
            using var fs = File.OpenRead(file);
            var head = new byte[Math.Min(4096, length)];
            fs.ReadExactly(head);
            var (start, width) = NpyHeader(file, head);
            return (start, width, Whole(file, length - start, width));
        }
        if (ext == ".u32") return (0, 4, Whole(file, length, 4));
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
                return (1024, width, n);
            }
        }
        return (0, 2, Whole(file, length, 2));
    }

    static long Whole(string file, long bytes, int width) => bytes % width == 0 ? bytes / width
        : throw new PolyEngineException($"--corpus {file}: {bytes} bytes is not a whole number of {width * 8}-bit tokens");

    /// <summary>Token ids from a token file (whole file: token files are one document).</summary>
    public static int[] ReadTokens(string file) => ReadTokenPieces(file, PieceTokens).SelectMany(p => p).ToArray();

    static int[] Cast(string file, byte[] bytes, int offset, int width)
    {
        if ((bytes.Length - offset) % width != 0)
            throw new PolyEngineException($"--corpus {file}: {bytes.Length - offset} bytes is not a whole number of {width * 8}-bit tokens");
        var ids = new int[(bytes.Length - offset) / width];
        for (int i = 0; i < ids.Length; i++)
        {
            long v = width == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset + i * 2)) : BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset + i * 4));
            if (v > int.MaxValue) throw new PolyEngineException($"--corpus {file}: token {i} = {v} is not a valid token id");
            ids[i] = (int)v;
        }
        return ids;
    }

    static (int Start, int Width) NpyHeader(string file, byte[] b)
    {
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY")
            throw new PolyEngineException($"--corpus {file}: not a .npy file (bad magic)");
        int major = b[6];
        int headerLen = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(8)) : (int)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8));
        int start = major == 1 ? 10 : 12;
        if (start + headerLen > b.Length) throw new PolyEngineException($"--corpus {file}: .npy header is longer than the file allows");
        string header = Encoding.ASCII.GetString(b, start, headerLen);
        string descr = System.Text.RegularExpressions.Regex.Match(header, @"'descr':\s*'([^']+)'").Groups[1].Value;
        if (header.Contains("'fortran_order': True")) throw new PolyEngineException($"--corpus {file}: Fortran-ordered .npy is not supported");
        var shape = System.Text.RegularExpressions.Regex.Match(header, @"'shape':\s*\(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (shape.Length != 1) throw new PolyEngineException($"--corpus {file}: .npy token files must be 1-D, found shape ({string.Join(", ", shape)})");
        int width = descr switch
        {
            "<i4" or "<u4" => 4,
            "<u2" => 2,
            _ => throw new PolyEngineException($"--corpus {file}: .npy dtype '{descr}' is not supported (int32, uint32 or uint16, little-endian)"),
        };
        return (start + headerLen, width);
    }
}

static class CorpusPieces
{
    /// <summary>Consecutive pieces of the same document, grouped (pieces arrive in document order).</summary>
    public static IEnumerable<List<int[]>> GroupByDocument(this IEnumerable<(int[] Tokens, long Document)> pieces)
    {
        List<int[]>? group = null;
        long current = -1;
        foreach (var (tokens, doc) in pieces)
        {
            if (doc != current && group is not null) { yield return group; group = null; }
            current = doc;
            (group ??= []).Add(tokens);
        }
        if (group is not null) yield return group;
    }
}

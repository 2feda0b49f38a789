using System.Text;
using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>A context window cut from a corpus.</summary>
/// <param name="Tokens">The window's token ids (BOS first when one was prepended).</param>
/// <param name="Document">The index of the document it comes from, counted over the whole corpus.</param>
/// <param name="Offset">The position, within that document, of the window's first corpus token (not the BOS).</param>
/// <param name="Progress">How far through the corpus the window ends, as a fraction of its bytes (for progress and ETA).</param>
public readonly record struct CorpusWindow(int[] Tokens, long Document, long Offset, double Progress);

/// <summary>A piece of one document: its tokens, the document's index, and where the piece starts and ends in the
/// corpus as fractions of its bytes.</summary>
public readonly record struct CorpusPiece(int[] Tokens, long Document, double Start, double End);

/// <summary>
/// A token corpus, streamed (memory does not grow with the corpus): plain text (<c>.txt</c>, one document per file),
/// JSONL with a <c>text</c> field (one document per line), Parquet with a <c>text</c> column or a list-of-token-ids
/// column (one document per row, as HuggingFace datasets export), or token files (<see cref="TokenFiles"/>: <c>.npy</c>
/// 1-D or 2-D, llm.c and nanoGPT <c>.bin</c>, <c>.u32</c>). A folder is every such file in it, in name order.
/// </summary>
public sealed class Corpus
{
    readonly List<string> _files;
    readonly Lazy<ITextTokenizer?> _tokenizer;   // made only when a text file needs it: token files need none
    readonly long _totalBytes;

    readonly Func<ITextTokenizer?> _tokenizerFactory;

    Corpus(List<string> files, Func<ITextTokenizer?> tokenizer)
    {
        _tokenizerFactory = tokenizer;
        _files = files;
        _tokenizer = new Lazy<ITextTokenizer?>(tokenizer);
        _totalBytes = Math.Max(1, files.Sum(FileLinks.Length));
    }

    public IReadOnlyList<string> Files => _files;

    /// <summary>The documents this corpus yields: document k (numbered over the whole corpus) belongs to shard k mod n.
    /// Windows never cross documents, so per-window results of the shards add up to the whole corpus's.</summary>
    public Shard Shard { get; init; } = Shard.All;

    /// <summary>The same corpus, limited to <paramref name="shard"/>'s documents.</summary>
    public Corpus Sharded(Shard shard) => new(_files, _tokenizerFactory) { Shard = shard.Checked() };

    readonly SortedList<long, string> _fileStarts = [];   // the first document of each file read so far

    /// <summary>The file a document (numbered over the whole corpus) comes from, and its number within that file, once the
    /// corpus has been read that far.</summary>
    public (string File, long Document) Locate(long document)
    {
        lock (_fileStarts)
        {
            (string, long) found = (_files[0], document);
            foreach (var (first, f) in _fileStarts) if (first <= document) found = (f, document - first); else break;
            return found;
        }
    }

    /// <summary>The corpus's size in tokens when every file is a token file (known without reading it), else null.</summary>
    public long? KnownTokens => _files.All(TokenFiles.Is) ? _files.Sum(f => TokenFiles.Read(f).Count) : null;

    static readonly string[] Extensions = [".txt", ".jsonl", ".parquet", ".npy", ".bin", ".u32"];
    const string ExtensionList = ".txt, .jsonl, .parquet, .npy, .bin or .u32";

    /// <param name="tokenizer">Asked for only when a text file is read (<c>() => model.Tokenizer</c>: a model without
    /// tokenizer.json still scans token files); null, or returning null: only token files and token-id columns are accepted.</param>
    public static Corpus Open(string path, Func<ITextTokenizer?>? tokenizer)
    {
        List<string> files;
        if (Directory.Exists(path))
            files = Directory.GetFiles(path).Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => f, StringComparer.Ordinal).ToList();
        else if (File.Exists(path)) files = [path];
        else throw new PolyEngineException($"--corpus {path}: not found");
        if (files.Count == 0) throw new PolyEngineException($"--corpus {path}: no {ExtensionList} files in the folder");
        foreach (var f in files)
            if (!Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                throw new PolyEngineException($"--corpus {f}: unknown corpus format '{Path.GetExtension(f)}' (use {ExtensionList})");
        return new Corpus(files, tokenizer ?? (() => null));
    }

    /// <summary>Each document's token ids, in order (a document is read whole: use <see cref="Windows(int, int?)"/> to stream).</summary>
    public IEnumerable<int[]> Documents() =>
        Pieces().GroupByDocument().Select(g => g.SelectMany(p => p).ToArray());

    /// <summary>The corpus as pieces of documents, in order. A text document is one piece; a token file comes in pieces of
    /// at most <see cref="PieceTokens"/> tokens, so memory does not grow with the file.</summary>
    public IEnumerable<CorpusPiece> Pieces()
    {
        long doc = 0, bytesBefore = 0;
        foreach (var f in _files)
        {
            long fileBytes = FileLinks.Length(f);
            double At(double fractionOfFile) => (bytesBefore + fractionOfFile * fileBytes) / _totalBytes;
            long first = doc;
            lock (_fileStarts) _fileStarts[first] = f;
            var pieces = Path.GetExtension(f).ToLowerInvariant() switch
            {
                ".txt" => ReadText(f),
                ".jsonl" => ReadJsonl(f),
                ".parquet" => ParquetCorpus.Read(f, () => Tokenizer(f)),
                _ => TokenFiles.Pieces(f, PieceTokens),
            };
            foreach (var (tokens, docInFile, start, end) in pieces)
            {
                doc = first + docInFile;
                if (doc % Shard.Count == Shard.Index) yield return new CorpusPiece(tokens, doc, At(start), At(end));
                doc++;
            }
            bytesBefore += fileBytes;
        }
        if (doc == 0) throw new PolyEngineException($"--corpus: {string.Join(", ", _files)} hold no documents (empty corpus)");
    }

    internal const int PieceTokens = 1 << 20;

    /// <summary>Documents cut into windows of <paramref name="contextSize"/> tokens; with <paramref name="bos"/>, each window is
    /// BOS + (contextSize − 1) tokens, and a document that already starts with BOS (pretokenized rows usually do) gives it
    /// to its first window instead of getting a second one. A document's last, shorter window is kept. Streamed: at most
    /// one piece of a token file is in memory.</summary>
    public IEnumerable<CorpusWindow> Windows(int contextSize, int? bos) => Windows(Pieces(), contextSize, bos);

    internal static IEnumerable<CorpusWindow> Windows(IEnumerable<CorpusPiece> pieces, int contextSize, int? bos)
    {
        if (contextSize < (bos is null ? 1 : 2))
            throw new PolyEngineException($"context size {contextSize} is too small: a window needs at least {(bos is null ? 1 : 2)} token(s){(bos is null ? "" : " with BOS")}; give --context-size");
        int body = bos is null ? contextSize : contextSize - 1;
        int head = bos is null ? 0 : 1;
        var carry = new List<int>(body);
        long current = -1, carryOffset = 0, docPosition = 0;   // docPosition: tokens of the current document before this piece
        double carryEnd = 0;
        int[] Window(ReadOnlySpan<int> tokens)
        {
            var w = new int[tokens.Length + head];
            if (bos is int b) w[0] = b;
            tokens.CopyTo(w.AsSpan(head));
            return w;
        }
        foreach (var (piece, doc, start, end) in pieces)
        {
            int i = 0;
            if (doc != current)
            {
                if (carry.Count > 0) yield return new CorpusWindow(Window(carry.ToArray()), current, carryOffset, carryEnd);
                carry.Clear();
                current = doc;
                docPosition = 0;
                if (bos is int b && piece.Length > 0 && piece[0] == b) i = 1;   // the document's own BOS serves its first window
            }
            double At(int i) => piece.Length == 0 ? end : start + (end - start) * i / piece.Length;
            if (carry.Count > 0)
            {
                int take = Math.Min(body - carry.Count, piece.Length);
                carry.AddRange(piece.AsSpan(0, take).ToArray());
                i = take;
                carryEnd = At(i);
                if (carry.Count == body) { yield return new CorpusWindow(Window(carry.ToArray()), doc, carryOffset, carryEnd); carry.Clear(); }
            }
            for (; i + body <= piece.Length; i += body) yield return new CorpusWindow(Window(piece.AsSpan(i, body)), doc, docPosition + i, At(i + body));
            if (i < piece.Length)
            {
                if (carry.Count == 0) carryOffset = docPosition + i;
                carry.AddRange(piece.AsSpan(i).ToArray());
                carryEnd = end;
            }
            docPosition += piece.Length;
        }
        if (carry.Count > 0) yield return new CorpusWindow(Window(carry.ToArray()), current, carryOffset, carryEnd);
    }

    IEnumerable<(int[] Tokens, long Document, double Start, double End)> ReadText(string file)
    {
        string text;
        try { text = new UTF8Encoding(false, true).GetString(File.ReadAllBytes(file)); }
        catch (DecoderFallbackException) { throw new PolyEngineException($"--corpus {file}: not UTF-8 text; a .txt corpus must be UTF-8"); }
        if (text.Length > 0) yield return (Tokenizer(file).Encode(text), 0, 0, 1);
    }

    /// <summary>One document per line with a string field <c>text</c>; blank lines are skipped, invalid UTF-8 is an error naming the line.</summary>
    IEnumerable<(int[] Tokens, long Document, double Start, double End)> ReadJsonl(string file)
    {
        long fileBytes = Math.Max(1, FileLinks.Length(file)), bytes = 0, doc = 0;
        int line = 0;
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        foreach (var lineBytes in Lines(file))
        {
            line++;
            var rawBytes = line == 1 && lineBytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? lineBytes[3..] : lineBytes;   // a UTF-8 BOM (utf-8-sig)
            double start = bytes / (double)fileBytes;
            bytes += lineBytes.Length + 1;
            string raw;
            try { raw = utf8.GetString(rawBytes); }
            catch (DecoderFallbackException) { throw new PolyEngineException($"--corpus {file}:{line}: not valid UTF-8; JSONL corpora must be UTF-8"); }
            if (string.IsNullOrWhiteSpace(raw)) continue;
            string? t;
            try
            {
                using var json = JsonDocument.Parse(raw);
                t = json.RootElement.ValueKind == JsonValueKind.Object && json.RootElement.TryGetProperty("text", out var v) && v.ValueKind == JsonValueKind.String
                    ? v.GetString() : null;
            }
            catch (JsonException e) { throw new PolyEngineException($"--corpus {file}:{line}: not valid JSON ({e.Message.Split('\n')[0]})"); }
            if (t is null) throw new PolyEngineException($"--corpus {file}:{line}: each JSONL line needs a string field 'text'");
            if (t.Length > 0) yield return (Tokenizer(file).Encode(t), doc++, start, Math.Min(1, bytes / (double)fileBytes));
        }
    }

    /// <summary>A file's lines as bytes (split at '\n', a trailing '\r' dropped), streamed.</summary>
    static IEnumerable<byte[]> Lines(string file)
    {
        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var line = new List<byte>();
        var buffer = new byte[1 << 16];
        int n;
        while ((n = fs.Read(buffer)) > 0)
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != (byte)'\n') { line.Add(buffer[i]); continue; }
                if (line.Count > 0 && line[^1] == (byte)'\r') line.RemoveAt(line.Count - 1);
                yield return [.. line];
                line.Clear();
            }
        if (line.Count > 0) yield return [.. line];
    }

    ITextTokenizer Tokenizer(string file) => _tokenizer.Value
        ?? throw new PolyEngineException($"--corpus {file}: text needs the model's tokenizer, and none is available; give token files (.npy/.bin) instead");

    /// <summary>Token ids from a token file, all documents concatenated.</summary>
    public static int[] ReadTokens(string file) => TokenFiles.Pieces(file, PieceTokens).SelectMany(p => p.Tokens).ToArray();
}

static class CorpusPieces
{
    /// <summary>Consecutive pieces of the same document, grouped (pieces arrive in document order).</summary>
    public static IEnumerable<List<int[]>> GroupByDocument(this IEnumerable<CorpusPiece> pieces)
    {
        List<int[]>? group = null;
        long current = -1;
        foreach (var (tokens, doc, _, _) in pieces)
        {
            if (doc != current && group is not null) { yield return group; group = null; }
            current = doc;
            (group ??= []).Add(tokens);
        }
        if (group is not null) yield return group;
    }
}

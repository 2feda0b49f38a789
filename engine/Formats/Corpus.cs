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

    /// <summary>Each document's token ids, in order.</summary>
    public IEnumerable<int[]> Documents()
    {
        long count = 0;
        foreach (var f in _files)
            foreach (var doc in Read(f))
            {
                count++;
                yield return doc;
            }
        if (count == 0) throw new PolyEngineException($"--corpus: {string.Join(", ", _files)} hold no documents (empty corpus)");
    }

    /// <summary>Documents cut into windows of <paramref name="contextSize"/> tokens; with <paramref name="bos"/>, each window is
    /// BOS + (contextSize − 1) tokens. A document's last, shorter window is kept. Each window carries its document index.</summary>
    public IEnumerable<(int[] Tokens, long Document)> Windows(int contextSize, int? bos)
    {
        if (contextSize < (bos is null ? 1 : 2)) throw new PolyEngineException($"context size {contextSize} is too small");
        int body = bos is null ? contextSize : contextSize - 1;
        long doc = 0;
        foreach (var tokens in Documents())
        {
            for (int start = 0; start < tokens.Length; start += body)
            {
                int n = Math.Min(body, tokens.Length - start);
                var w = new int[n + (bos is null ? 0 : 1)];
                if (bos is int b) w[0] = b;
                Array.Copy(tokens, start, w, bos is null ? 0 : 1, n);
                yield return (w, doc);
            }
            doc++;
        }
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
                yield return ReadTokens(file);
                break;
        }
    }

    ModelTokenizer Tokenizer(string file) => _tokenizer
        ?? throw new PolyEngineException($"--corpus {file}: text needs the model's tokenizer, and none is available; give token files (.npy/.bin) instead");

    static string ReadText(string file)
    {
        try { return new UTF8Encoding(false, true).GetString(File.ReadAllBytes(file)); }
        catch (DecoderFallbackException) { throw new PolyEngineException($"--corpus {file}: not UTF-8 text; a .txt corpus must be UTF-8"); }
    }

    /// <summary>Token ids from a token file (whole file: token files are one document).</summary>
    public static int[] ReadTokens(string file)
    {
        var bytes = File.ReadAllBytes(file);
        string ext = Path.GetExtension(file).ToLowerInvariant();
        if (ext == ".npy") return ReadNpy(file, bytes);
        if (ext == ".u32") return Cast(file, bytes, 0, 4);
        // .bin: llm.c header (256 int32: magic 20240520, version 1, token count) or raw uint16 (nanoGPT)
        if (bytes.Length >= 1024 && BinaryPrimitives.ReadInt32LittleEndian(bytes) == 20240520)
        {
            int version = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4));
            long n = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
            int width = version == 1 ? 2 : version == 2 ? 4 : throw new PolyEngineException($"--corpus {file}: llm.c token file version {version} is not supported (1 or 2)");
            if (1024 + n * width != bytes.Length)
                throw new PolyEngineException($"--corpus {file}: llm.c header says {n} tokens but the file holds {(bytes.Length - 1024) / width}; the file is truncated");
            return Cast(file, bytes, 1024, width);
        }
        return Cast(file, bytes, 0, 2);
    }

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

    static int[] ReadNpy(string file, byte[] b)
    {
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY")
            throw new PolyEngineException($"--corpus {file}: not a .npy file (bad magic)");
        int major = b[6];
        int headerLen = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(8)) : (int)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8));
        int start = major == 1 ? 10 : 12;
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
        var ids = Cast(file, b, start + headerLen, width);
        if (descr == "<i4" && ids.Any(v => v < 0)) throw new PolyEngineException($"--corpus {file}: negative token id");
        return ids;
    }
}

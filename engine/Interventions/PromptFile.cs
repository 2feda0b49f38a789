using System.Text;
using System.Text.Json;
using PolyEngine.Formats;

namespace PolyEngine.Interventions;

/// <summary>
/// A sweep's prompts as JSONL, one object a line (blank lines skipped; a prompt's index counts the others, from 0):
/// <c>{"ids": [...]}</c> or <c>{"text": "..."}</c> (the model's tokenizer), with <c>"targets": [token ids]</c> or
/// <c>"target_strings": ["..."]</c> (each string's first token id, as the paper takes them). Other fields are ignored, so
/// a line can carry its own labels. Errors name the file and line.
/// </summary>
public static class PromptFile
{
    /// <param name="bos">When given, this token id goes first in every prompt (the paper's prompts have no BOS).</param>
    public static IReadOnlyList<SteerPrompt> Load(string path, Func<ITextTokenizer> tokenizer, int? bos = null, string option = "--prompts")
    {
        if (!File.Exists(path)) throw new PolyEngineException($"{option} {path}: file not found");
        var prompts = new List<SteerPrompt>();
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        int line = 0;
        foreach (var raw in File.ReadAllBytes(FileLinks.Resolve(path)).Split((byte)'\n'))
        {
            line++;
            string at = $"{option} {path}:{line}";
            var bytes = line == 1 && raw.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? raw[3..] : raw;
            string text;
            try { text = utf8.GetString(bytes).TrimEnd('\r'); }
            catch (DecoderFallbackException) { throw new PolyEngineException($"{at}: not valid UTF-8"); }
            if (string.IsNullOrWhiteSpace(text)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(text); }
            catch (JsonException e) { throw new PolyEngineException($"{at}: not valid JSON ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]})"); }
            using (doc)
            {
                var o = doc.RootElement;
                if (o.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"{at}: each line must be a JSON object like {{\"text\": \"...\", \"targets\": [42]}}");
                bool hasIds = o.TryGetProperty("ids", out var ids), hasText = o.TryGetProperty("text", out var t);
                if (hasIds == hasText) throw new PolyEngineException($"{at}: give \"ids\" (token ids) or \"text\", one of them");
                int[] tokens = hasIds ? Ints(ids, at, "ids")
                    : t.ValueKind == JsonValueKind.String ? tokenizer().Encode(t.GetString()!) : throw new PolyEngineException($"{at}: \"text\" must be a string");
                if (tokens.Length == 0) throw new PolyEngineException($"{at}: the prompt is empty; give at least one token");
                bool hasTargets = o.TryGetProperty("targets", out var targets), hasStrings = o.TryGetProperty("target_strings", out var strings);
                if (hasTargets == hasStrings) throw new PolyEngineException($"{at}: give \"targets\" (token ids) or \"target_strings\", one of them");
                int[] targetIds = hasTargets ? Ints(targets, at, "targets") : FirstTokens(strings, tokenizer, at);
                if (targetIds.Length == 0) throw new PolyEngineException($"{at}: no targets; give at least one target token");
                prompts.Add(new SteerPrompt(bos is int b ? [b, .. tokens] : tokens, targetIds));
            }
        }
        if (prompts.Count == 0) throw new PolyEngineException($"{option} {path}: no prompts; give one JSON object a line");
        return prompts;
    }

    /// <summary>Writes prompts as this file reads them: one <c>{"ids": [...], "targets": [...]}</c> a line, atomically.</summary>
    public static void Write(string path, IEnumerable<SteerPrompt> prompts) => AtomicFile.Write(path, stream =>
    {
        using var w = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
        foreach (var p in prompts) w.Write($"{{\"ids\": [{string.Join(", ", p.Ids)}], \"targets\": [{string.Join(", ", p.Targets)}]}}\n");
    });

    static int[] Ints(JsonElement e, string at, string field) =>
        e.ValueKind == JsonValueKind.Array
            ? e.EnumerateArray().Select((x, i) => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int v) && v >= 0 ? v
                : throw new PolyEngineException($"{at}: \"{field}\"[{i}] is {x.GetRawText()}, not a token id")).ToArray()
            : throw new PolyEngineException($"{at}: \"{field}\" must be an array of token ids");

    static int[] FirstTokens(JsonElement e, Func<ITextTokenizer> tokenizer, string at)
    {
        if (e.ValueKind != JsonValueKind.Array) throw new PolyEngineException($"{at}: \"target_strings\" must be an array of strings");
        return e.EnumerateArray().Select((x, i) =>
        {
            if (x.ValueKind != JsonValueKind.String || x.GetString() is not { Length: > 0 } s)
                throw new PolyEngineException($"{at}: \"target_strings\"[{i}] must be a non-empty string");
            var ids = tokenizer().Encode(s);
            return ids.Length > 0 ? ids[0] : throw new PolyEngineException($"{at}: \"target_strings\"[{i}] \"{s}\" tokenizes to nothing");
        }).ToArray();
    }

    static IEnumerable<byte[]> Split(this byte[] bytes, byte separator)
    {
        int start = 0;
        for (int i = 0; i <= bytes.Length; i++)
            if (i == bytes.Length || bytes[i] == separator)
            {
                yield return bytes[start..i];
                start = i + 1;
            }
    }
}

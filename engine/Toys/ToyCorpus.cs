using System.Text.Json;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Toys;

/// <summary>A deterministic synthetic corpus (JSONL, one <c>{"text": ...}</c> per line) of simple English sentences, for
/// the demo and tests: the same seed gives the same bytes. Its grammar also gives the experiments' test sentences: for a
/// word, the sentence beginnings it continues (<see cref="WriteTokenSentences"/>), and token types with sentences that
/// ask for a token of the type (<see cref="WriteTypes"/>).</summary>
public static class ToyCorpus
{
    static readonly string[] Subjects = ["The dog", "A cat", "My neighbour", "The old sailor", "A small robot", "The teacher", "Her brother", "The river"];
    static readonly string[] Verbs = ["sees", "follows", "paints", "remembers", "finds", "carries", "builds", "hears"];
    static readonly string[] Objects = ["a red ball", "the quiet house", "seven apples", "the northern lights", "an old map", "the last train", "a blue kite", "the garden"];
    static readonly string[] Tails = ["in the morning.", "after the storm.", "near the station.", "with great care.", "every Sunday.", "for the first time.", "again and again.", "at night."];

    /// <summary>The word types of the grammar: the last word of each object, each verb, and the last word of each tail.</summary>
    static readonly (string Type, string[] Words, Func<Rng, string> Sentence)[] Types =
    [
        ("object", [.. Objects.Select(o => o.Split(' ')[^1])], r => $"{Pick(r, Subjects)} {Pick(r, Verbs)} {string.Join(' ', Pick(r, Objects).Split(' ')[..^1])}"),
        ("verb", Verbs, r => Pick(r, Subjects)),
        ("tail", [.. Tails.Select(t => t.TrimEnd('.').Split(' ')[^1])], r => $"{Pick(r, Subjects)} {Pick(r, Verbs)} {Pick(r, Objects)} {string.Join(' ', Pick(r, Tails).Split(' ')[..^1])}"),
    ];

    static string Pick(Rng rng, string[] a) => a[rng.NextU64() % (ulong)a.Length];

    /// <summary>Test sentences by token string, as the experiments read them (<c>{" ball": ["The dog sees a red", …]}</c>):
    /// for every word of the grammar, <paramref name="perToken"/> sentence beginnings that it continues.</summary>
    public static void WriteTokenSentences(string path, int perToken, ulong seed)
    {
        var rng = new Rng(seed);
        var json = new System.Text.Json.Nodes.JsonObject();
        foreach (var (_, words, sentence) in Types)
            foreach (var w in words)
                json[" " + w] = new System.Text.Json.Nodes.JsonArray([.. Enumerable.Range(0, perToken).Select(_ => (System.Text.Json.Nodes.JsonNode)sentence(rng))]);
        AtomicFile.WriteText(path, json.ToJsonString());
    }

    /// <summary>Token types for the injection experiment: the type map (<c>{" ball": "object", …}</c>) and, per type,
    /// <paramref name="perType"/> sentences whose next word is of that type.</summary>
    public static void WriteTypes(string typeMapPath, string sentencesPath, int perType, ulong seed)
    {
        var rng = new Rng(seed);
        var map = new System.Text.Json.Nodes.JsonObject();
        var sentences = new System.Text.Json.Nodes.JsonObject();
        foreach (var (type, words, sentence) in Types)
        {
            foreach (var w in words) map[" " + w] = type;
            sentences[type] = new System.Text.Json.Nodes.JsonArray([.. Enumerable.Range(0, perType).Select(_ => (System.Text.Json.Nodes.JsonNode)sentence(rng))]);
        }
        AtomicFile.WriteText(typeMapPath, map.ToJsonString());
        AtomicFile.WriteText(sentencesPath, sentences.ToJsonString());
    }

    public static void Write(string path, int documents, int sentencesPerDocument, ulong seed)
    {
        if (documents <= 0 || sentencesPerDocument <= 0) throw new PolyEngineException("--docs and --sentences must be positive");
        var rng = new Rng(seed);
        string Pick(string[] a) => ToyCorpus.Pick(rng, a);
        AtomicFile.Write(path, s =>
        {
            using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), 1 << 16, leaveOpen: true);
            for (int d = 0; d < documents; d++)
            {
                var text = string.Join(" ", Enumerable.Range(0, sentencesPerDocument).Select(_ => $"{Pick(Subjects)} {Pick(Verbs)} {Pick(Objects)} {Pick(Tails)}"));
                w.WriteLine(JsonSerializer.Serialize(new { text }));
            }
        });
    }
}

using System.Text.Json;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Toys;

/// <summary>A deterministic synthetic corpus (JSONL, one <c>{"text": ...}</c> per line) of simple English sentences, for
/// the demo and tests: the same seed gives the same bytes.</summary>
public static class ToyCorpus
{
    static readonly string[] Subjects = ["The dog", "A cat", "My neighbour", "The old sailor", "A small robot", "The teacher", "Her brother", "The river"];
    static readonly string[] Verbs = ["sees", "follows", "paints", "remembers", "finds", "carries", "builds", "hears"];
    static readonly string[] Objects = ["a red ball", "the quiet house", "seven apples", "the northern lights", "an old map", "the last train", "a blue kite", "the garden"];
    static readonly string[] Tails = ["in the morning.", "after the storm.", "near the station.", "with great care.", "every Sunday.", "for the first time.", "again and again.", "at night."];

    public static void Write(string path, int documents, int sentencesPerDocument, ulong seed)
    {
        if (documents <= 0 || sentencesPerDocument <= 0) throw new PolyEngineException("--docs and --sentences must be positive");
        var rng = new Rng(seed);
        string Pick(string[] a) => a[rng.NextU64() % (ulong)a.Length];
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

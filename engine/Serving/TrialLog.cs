using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Interventions;

namespace PolyEngine.Serving;

/// <summary>
/// An append-only log of the endpoint's answers, in front of a <see cref="CompletionClient"/>: each answer is appended as
/// one JSON line (the prompt's ids or text, and its candidates) and flushed the moment it arrives, so a run killed at any
/// point loses no answered request; a rerun answers every logged prompt from the log and asks the server only for the
/// rest. A torn last line (a kill mid-write) is dropped and asked again. Probabilities round-trip exactly.
/// </summary>
public sealed class TrialLog : ITrialModel, IDisposable
{
    readonly CompletionClient _client;
    readonly Dictionary<string, NextToken[]> _answers = new(StringComparer.Ordinal);
    readonly StreamWriter _writer;
    readonly object _lock = new();

    public TrialLog(string path, CompletionClient client)
    {
        _client = client;
        if (File.Exists(path))
        {
            // Whole lines only: a line counts when its newline was written; a torn tail (no newline, or not JSON) is cut.
            var bytes = File.ReadAllBytes(path);
            long good = 0;
            for (int start = 0, nl; start < bytes.Length && (nl = Array.IndexOf(bytes, (byte)'\n', start)) >= 0; start = nl + 1)
            {
                if (!TryParse(Encoding.UTF8.GetString(bytes, start, nl - start), out var key, out var top)) break;
                _answers[key] = top;
                good = nl + 1;
            }
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write)) fs.SetLength(good);
        }
        Resumed = _answers.Count;
        _writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false)) { NewLine = "\n" };
    }

    /// <summary>Answers read back from an earlier run's log.</summary>
    public int Resumed { get; }
    /// <summary>Prompts answered from the log in this run, and prompts sent to the server.</summary>
    public int FromLog { get; private set; }
    public int Sent { get; private set; }

    public int[]? Encode(string text, bool prependBos) => _client.Encode(text, prependBos);

    public IReadOnlyList<NextToken[]> Top(IReadOnlyList<TrialPrompt> prompts, int k, CancellationToken cancel = default) =>
        Task.WhenAll(prompts.Select(async p =>
        {
            string key = Key(p);
            lock (_lock)
                if (_answers.TryGetValue(key, out var known) && known.Length >= k) { FromLog++; return known[..k]; }
            var top = await _client.TopAsync(p, k, cancel);
            var line = new JsonObject
            {
                ["prompt"] = key,
                ["top"] = new JsonArray([.. top.Select(t => (JsonNode)new JsonArray(t.Id, t.Text, (double)t.Probability))]),
            }.ToJsonString();
            lock (_lock)
            {
                _answers[key] = top;
                _writer.WriteLine(line);
                _writer.Flush();
                Sent++;
            }
            return top;
        })).GetAwaiter().GetResult();

    static string Key(TrialPrompt p) => p.Ids is { } ids ? "ids:" + string.Join(",", ids) : "text:" + p.Text;

    static bool TryParse(string line, out string key, out NextToken[] top)
    {
        (key, top) = ("", []);
        try
        {
            var o = JsonNode.Parse(line);
            key = (string)o!["prompt"]!;
            top = [.. o["top"]!.AsArray().Select(x => new NextToken((int)x![0]!, (string?)x[1], (float)(double)x[2]!))];
            return true;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException) { return false; }
    }

    public void Dispose() => _writer.Dispose();
}

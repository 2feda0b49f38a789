namespace PolyEngine.Interventions;

/// <summary>A prompt as a trial sends it: its text, and its token ids when the tokenizer is known (null: sent as text).</summary>
public sealed record TrialPrompt(string Text, int[]? Ids);

/// <summary>One next-token candidate: its id (−1 when only its string is known), its string (null when only its id is
/// known) and its probability.</summary>
public readonly record struct NextToken(int Id, string? Text, float Probability);

/// <summary>Where the injection trials run: the engine's own model (<see cref="ModelTrials"/>), or a served model
/// behind an endpoint (the serving client).</summary>
public interface ITrialModel
{
    /// <summary>The prompt's token ids as this model runs them, or null when it is sent as text.</summary>
    int[]? Encode(string text, bool prependBos);

    /// <summary>Each prompt's top-<paramref name="k"/> next tokens, most likely first.</summary>
    IReadOnlyList<NextToken[]> Top(IReadOnlyList<TrialPrompt> prompts, int k, CancellationToken cancel = default);
}

/// <summary>The trials on the engine's model: prompts in batches of <paramref name="batch"/>, right-padded, each read at
/// its last real token; the top-k reduced where the logits are.</summary>
public sealed class ModelTrials(Model model, int batch = 64) : ITrialModel
{
    public int[]? Encode(string text, bool prependBos) => model.Encode(text, prependBos);

    public IReadOnlyList<NextToken[]> Top(IReadOnlyList<TrialPrompt> prompts, int k, CancellationToken cancel = default)
    {
        var result = new NextToken[prompts.Count][];
        for (int start = 0; start < prompts.Count; start += batch)
        {
            cancel.ThrowIfCancellationRequested();
            var chunk = prompts.Skip(start).Take(batch).Select(p => p.Ids ?? model.Encode(p.Text, prependBos: false)).ToList();
            var top = model.Run(chunk, new RunOptions { TopLogits = k, Logits = LogitsMode.None }).Top!;
            for (int i = 0; i < chunk.Count; i++)
                result[start + i] = [.. Enumerable.Range(0, top.K).Select(j => top.At(i, j)).Select(t => new NextToken(t.Id, null, t.Probability))];
        }
        return result;
    }
}

namespace PolyEngine.Forward;

/// <summary>One candidate next token.</summary>
public readonly record struct TokenScore(int Id, float Logit, float Probability);

public static class TopTokens
{
    /// <summary>The <paramref name="n"/> largest logits of one vocabulary row with their softmax probabilities (ties: lower id first).</summary>
    public static TokenScore[] Of(ReadOnlySpan<float> logits, int n)
    {
        float max = float.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        var idx = Enumerable.Range(0, logits.Length).ToArray();
        var keys = logits.ToArray();
        var order = idx.OrderByDescending(i => keys[i]).ThenBy(i => i).Take(Math.Min(n, logits.Length));
        return order.Select(i => new TokenScore(i, keys[i], (float)(Math.Exp(keys[i] - max) / sum))).ToArray();
    }
}

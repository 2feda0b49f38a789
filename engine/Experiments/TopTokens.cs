using PolyEngine.Formats;

namespace PolyEngine.Experiments;

/// <summary>A token of a feature's target set T_f: its string, the id it runs as, and its highest activation.</summary>
public sealed record TopToken(string Text, int Id, double Activation);

/// <summary>
/// T_f as the authors' <c>get_unique_top_act_tokens(n, r)</c> builds it: each unique token string's highest activation
/// over the feature's records, sorted descending (first appearance first among equals), the top n, those below r·max
/// dropped, each string as the first token id of its tokenisation — or, for records that carry ids (a features run's
/// contexts), the id it had there.
/// </summary>
public static class TopTokens
{
    public static IReadOnlyList<TopToken> Of(IReadOnlyList<ActivationRecord> records, Model model, int n = 5, double ratio = 0.5)
    {
        if (!(ratio > 0 && ratio <= 1)) throw new PolyEngineException($"--ratio {ratio}: give a number in (0, 1]");
        var best = new Dictionary<string, (double Value, int Order, int? Id)>();
        int order = 0;
        foreach (var r in records)
            for (int i = 0; i < r.Tokens.Length; i++)
            {
                double v = r.Values[i];
                if (!double.IsFinite(v)) continue;
                if (!best.TryGetValue(r.Tokens[i], out var b)) best[r.Tokens[i]] = (v, order++, r.Ids?[i]);
                else if (v > b.Value) best[r.Tokens[i]] = (v, b.Order, b.Id);
            }
        var top = best.OrderByDescending(x => x.Value.Value).ThenBy(x => x.Value.Order).Take(n).ToList();
        if (top.Count == 0) return [];
        double max = top[0].Value.Value;
        var result = new List<TopToken>();
        foreach (var (text, (value, _, id)) in top)
        {
            if (value < ratio * max) continue;
            int tokenId = id ?? model.Tokenizer.Encode(text).FirstOrDefault(-1);
            if (tokenId < 0) continue;   // a string that tokenises to nothing cannot be a target
            if (tokenId >= model.Spec.DVocab) throw new PolyEngineException($"token '{text}' of the records has id {tokenId}, outside the model's vocabulary; are the records from another model's tokenizer?");
            result.Add(new TopToken(text, tokenId, value));
        }
        return result;
    }
}

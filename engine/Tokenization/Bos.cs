namespace PolyEngine.Tokenization;

/// <summary>
/// Whether a BOS token goes in front of a prompt or a context window. TransformerLens prepends one by default, SAELens
/// records in each SAE's cfg whether its training windows had one (<c>prepend_bos</c>), and token ids given by hand are
/// usually meant as they are. <c>--bos auto|on|off</c>: auto follows the SAEs when there are any (they must agree),
/// else the verb's own default; the choice and its reason are always printed.
/// </summary>
public static class Bos
{
    /// <summary>Parses a <c>--bos</c> value: auto (null), on/true/yes, off/false/no.</summary>
    public static bool? Parse(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "on" or "true" or "yes" => true,
        "off" or "false" or "no" => false,
        _ => throw new PolyEngineException($"--bos '{value}' is not auto, on or off"),
    };

    /// <summary>The BOS decision: an explicit <paramref name="choice"/> wins; else the SAEs' <c>prepend_bos</c> (which must
    /// agree); else <paramref name="fallback"/>. Returns the decision and why, in words.</summary>
    public static (bool Prepend, string Reason) Resolve(bool? choice, IEnumerable<(string Sae, bool PrependBos)> saes, bool fallback, string fallbackReason)
    {
        if (choice is bool c) return (c, "--bos " + (c ? "on" : "off"));
        var list = saes.ToList();
        if (list.Count == 0) return (fallback, fallbackReason);
        if (list.Select(s => s.PrependBos).Distinct().Count() > 1)
            throw new PolyEngineException("the SAEs disagree on prepend_bos (" + string.Join(", ", list.Select(s => $"{s.Sae}: {s.PrependBos.ToString().ToLowerInvariant()}")) +
                "); scan them separately or choose with --bos on|off");
        return (list[0].PrependBos, $"the SAE's prepend_bos is {list[0].PrependBos.ToString().ToLowerInvariant()}");
    }
}

using System.Text.RegularExpressions;
using PolyEngine.Models;

namespace PolyEngine;

/// <summary>The hook points of a forward pass, named exactly as TransformerLens names them.</summary>
public enum HookPoint
{
    Embed, PosEmbed,
    ResidPre, Ln1Scale, Ln1Normalized, AttnQ, AttnK, AttnV, AttnRotQ, AttnRotK, AttnPattern, AttnZ, AttnOut,
    ResidMid, Ln2Scale, Ln2Normalized, MlpPre, MlpPost, MlpOut, ResidPost,
    LnFinalScale, LnFinalNormalized,
}

/// <summary>
/// A hook point with its layer; <see cref="ToString"/> is the TransformerLens name (<c>blocks.5.mlp.hook_pre</c>).
/// Values are those of the unprocessed HF model (TransformerLens <c>from_pretrained_no_processing</c>).
/// </summary>
public readonly record struct HookName(HookPoint Point, int Layer = -1) : IComparable<HookName>
{
    public bool IsBlock => Point is >= HookPoint.ResidPre and <= HookPoint.ResidPost;

    /// <summary>True for the hooks whose values live in the residual stream's space (d_model wide, added to or read
    /// from the stream as they are): the embeddings, resid_pre/mid/post, attn_out and mlp_out.</summary>
    public bool InResidualSpace => Point is HookPoint.Embed or HookPoint.PosEmbed or HookPoint.ResidPre or HookPoint.ResidMid
        or HookPoint.ResidPost or HookPoint.AttnOut or HookPoint.MlpOut;

    public override string ToString() => Point switch
    {
        HookPoint.Embed => "hook_embed",
        HookPoint.PosEmbed => "hook_pos_embed",
        HookPoint.LnFinalScale => "ln_final.hook_scale",
        HookPoint.LnFinalNormalized => "ln_final.hook_normalized",
        _ => $"blocks.{Layer}.{BlockSuffix(Point)}",
    };

    static string BlockSuffix(HookPoint p) => p switch
    {
        HookPoint.ResidPre => "hook_resid_pre",
        HookPoint.Ln1Scale => "ln1.hook_scale",
        HookPoint.Ln1Normalized => "ln1.hook_normalized",
        HookPoint.AttnQ => "attn.hook_q",
        HookPoint.AttnK => "attn.hook_k",
        HookPoint.AttnV => "attn.hook_v",
        HookPoint.AttnRotQ => "attn.hook_rot_q",
        HookPoint.AttnRotK => "attn.hook_rot_k",
        HookPoint.AttnPattern => "attn.hook_pattern",
        HookPoint.AttnZ => "attn.hook_z",
        HookPoint.AttnOut => "hook_attn_out",
        HookPoint.ResidMid => "hook_resid_mid",
        HookPoint.Ln2Scale => "ln2.hook_scale",
        HookPoint.Ln2Normalized => "ln2.hook_normalized",
        HookPoint.MlpPre => "mlp.hook_pre",
        HookPoint.MlpPost => "mlp.hook_post",
        HookPoint.MlpOut => "hook_mlp_out",
        HookPoint.ResidPost => "hook_resid_post",
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    static readonly Dictionary<string, HookPoint> Suffixes =
        Enum.GetValues<HookPoint>().Where(p => p is >= HookPoint.ResidPre and <= HookPoint.ResidPost).ToDictionary(BlockSuffix);

    static readonly Regex BlockPattern = new(@"^blocks\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);

    public static bool TryParse(string text, out HookName name)
    {
        name = default;
        switch (text)
        {
            case "hook_embed": name = new(HookPoint.Embed); return true;
            case "hook_pos_embed": name = new(HookPoint.PosEmbed); return true;
            case "ln_final.hook_scale": name = new(HookPoint.LnFinalScale); return true;
            case "ln_final.hook_normalized": name = new(HookPoint.LnFinalNormalized); return true;
        }
        var m = BlockPattern.Match(text);
        if (!m.Success || !int.TryParse(m.Groups[1].Value, out int layer) || !Suffixes.TryGetValue(m.Groups[2].Value, out var point)) return false;
        name = new(point, layer);
        return true;
    }

    public static HookName Parse(string text) => TryParse(text, out var n) ? n
        : throw new PolyEngineException($"'{text}' is not a TransformerLens hook name (e.g. blocks.0.hook_resid_pre, blocks.1.mlp.hook_post)");

    /// <summary>Every hook a model of this spec has, in forward order.</summary>
    public static IReadOnlyList<HookName> AllFor(ModelSpec spec)
    {
        var list = new List<HookName> { new(HookPoint.Embed) };
        if (spec.HasPositionEmbedding) list.Add(new(HookPoint.PosEmbed));
        for (int l = 0; l < spec.NLayers; l++)
            foreach (var p in Enum.GetValues<HookPoint>())
            {
                if (p is < HookPoint.ResidPre or > HookPoint.ResidPost) continue;
                if (p is HookPoint.AttnRotQ or HookPoint.AttnRotK && spec.RotaryDim == 0) continue;
                if (p == HookPoint.ResidMid && spec.ParallelResidual) continue;
                list.Add(new(p, l));
            }
        list.Add(new(HookPoint.LnFinalScale));
        list.Add(new(HookPoint.LnFinalNormalized));
        return list;
    }

    /// <summary>Shape of this hook's tensor: [batch, pos, ...]; attention heads [batch, pos, head, d_head]; patterns [batch, head, query, key].</summary>
    /// <summary>Values per position, [batch, pos, ...] flattened after pos (d_model, d_mlp, n_heads·d_head); 0 for the
    /// attention pattern, which is [batch, head, query, key].</summary>
    public int WidthFor(ModelSpec spec) => Point == HookPoint.AttnPattern ? 0 : (int)ShapeFor(spec, 1, 1).Skip(2).Aggregate(1L, (a, b) => a * b);

    public long[] ShapeFor(ModelSpec spec, int batch, int seq) => Point switch
    {
        HookPoint.Ln1Scale or HookPoint.Ln2Scale or HookPoint.LnFinalScale => [batch, seq, 1],
        HookPoint.AttnQ or HookPoint.AttnK or HookPoint.AttnV or HookPoint.AttnRotQ or HookPoint.AttnRotK or HookPoint.AttnZ
            => [batch, seq, spec.NHeads, spec.DHead],
        HookPoint.AttnPattern => [batch, spec.NHeads, seq, seq],
        HookPoint.MlpPre or HookPoint.MlpPost => [batch, seq, spec.DMlp],
        _ => [batch, seq, spec.DModel],
    };

    /// <summary>
    /// Resolves a user's hook list against a model: comma-separated names, <c>*</c> wildcards, or <c>all</c>.
    /// An entry that matches nothing is an error listing the valid names.
    /// </summary>
    public static IReadOnlyList<HookName> Select(ModelSpec spec, string? list)
    {
        var all = AllFor(spec);
        if (string.IsNullOrWhiteSpace(list)) return [];
        var chosen = new SortedSet<HookName>();
        foreach (var raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (raw == "all") { chosen.UnionWith(all); continue; }
            var rx = new Regex("^" + Regex.Escape(raw).Replace(@"\*", ".*") + "$", RegexOptions.CultureInvariant);
            var hits = all.Where(h => rx.IsMatch(h.ToString())).ToList();
            if (hits.Count == 0)
                throw new PolyEngineException($"--hooks: '{raw}' matches no hook of this {spec.Architecture} model; valid names: {Summarize(all)}");
            chosen.UnionWith(hits);
        }
        return chosen.ToList();
    }

    static string Summarize(IReadOnlyList<HookName> all)
    {
        var global = all.Where(h => !h.IsBlock).Select(h => h.ToString());
        var block = all.Where(h => h.IsBlock && h.Layer == 0).Select(h => h.ToString().Replace("blocks.0.", "blocks.{L}."));
        int layers = all.Where(h => h.IsBlock).Select(h => h.Layer).DefaultIfEmpty(-1).Max() + 1;
        return string.Join(", ", global.Concat(block)) + $" (L = 0..{layers - 1}); wildcards like 'blocks.*.hook_resid_post' and 'all' work";
    }

    public int CompareTo(HookName other)
    {
        int Rank(HookName h) => h.Point switch
        {
            HookPoint.Embed => 0, HookPoint.PosEmbed => 1,
            HookPoint.LnFinalScale => int.MaxValue - 1, HookPoint.LnFinalNormalized => int.MaxValue,
            _ => 2 + h.Layer * 64 + (int)h.Point,
        };
        return Rank(this).CompareTo(Rank(other));
    }
}

using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>What to scan for one SAE: its folder, and optionally its explanation file and feature list.</summary>
public sealed record InterferenceSource(string Folder, string? Explanations = null, string? Active = null);

/// <summary>
/// One SAE prepared for the interference scan: the features it covers (ascending feature indices: the active list when
/// given, minus features without an explanation embedding when explanations are given, minus dead decoder rows) with
/// their unit decoder directions d̂ = W_dec[j]/‖W_dec[j]‖ [n, d_in] and unit mean explanation embeddings [n, e].
/// </summary>
public sealed class InterferenceInputs
{
    public required SaeConfig Config { get; init; }
    public required string Name { get; init; }
    public required InterferenceSource Source { get; init; }
    /// <summary>Compact index → feature index, ascending.</summary>
    public required int[] Features { get; init; }
    /// <summary>[n, d_in] unit decoder rows.</summary>
    public required float[] Unit { get; init; }
    /// <summary>[n, e] unit mean explanation embeddings, or null without explanations.</summary>
    public float[]? Embed { get; init; }
    public int EmbedDim { get; init; }
    public Explanations? Explanations { get; init; }
    /// <summary>Features outside the --active list.</summary>
    public int NotActive { get; init; }
    /// <summary>Features (of those left) without an explanation embedding.</summary>
    public int WithoutExplanation { get; init; }
    /// <summary>Features (of those left) whose decoder row is zero: no direction, no cosine.</summary>
    public int DeadRows { get; init; }

    public int N => Features.Length;
    public int D => Config.DIn;

    public static InterferenceInputs Load(InterferenceSource source, string name, bool strict)
    {
        var c = SaeConfig.Load(source.Folder);
        var wDec = SparseAutoencoder.ReadDecoder(c);   // [d_sae, d_in]
        int dSae = c.DSae, d = c.DIn;
        var keep = new bool[dSae];
        int notActive = 0, withoutExplanation = 0, dead = 0;
        if (source.Active is { } active)
        {
            foreach (int j in FeatureList.Load(active, dSae)) keep[j] = true;
            notActive = keep.Count(k => !k);
        }
        else Array.Fill(keep, true);
        var ex = source.Explanations is { } path ? Formats.Explanations.Load(path, dSae, strict) : null;
        var norms = new double[dSae];
        for (int j = 0; j < dSae; j++)
        {
            if (!keep[j]) continue;
            if (ex is not null && !ex.Has(j)) { keep[j] = false; withoutExplanation++; continue; }
            double ss = 0;
            foreach (var v in wDec.AsSpan(j * d, d)) ss += (double)v * v;
            norms[j] = Math.Sqrt(ss);
            if (norms[j] == 0) { keep[j] = false; dead++; }
        }
        var features = Enumerable.Range(0, dSae).Where(j => keep[j]).ToArray();
        var unit = new float[(long)features.Length * d];
        int e = ex?.Dim ?? 0;
        var embed = ex is null ? null : new float[(long)features.Length * e];
        int zeroEmbedding = 0;
        for (int a = 0; a < features.Length; a++)
        {
            int j = features[a];
            var src = wDec.AsSpan(j * d, d);
            var dst = unit.AsSpan(a * d, d);
            for (int i = 0; i < d; i++) dst[i] = (float)(src[i] / norms[j]);
            if (ex is not null && !ex.UnitMean(j, embed.AsSpan(a * e, e))) zeroEmbedding++;
        }
        ex?.ReleaseEmbeddings();   // the unit means are in embed now
        if (zeroEmbedding > 0)
            throw new PolyEngineException($"--explanations {ex!.Path}: {zeroEmbedding} feature(s) have an all-zero mean embedding, which has no direction; drop those lines");
        if (features.Length < 2)
            throw new PolyEngineException($"{source.Folder}: only {features.Length} feature(s) left to scan ({notActive} outside --active, {withoutExplanation} without an explanation embedding, {dead} with a zero decoder row); a pair needs two");
        return new InterferenceInputs
        {
            Config = c, Name = name, Source = source, Features = features, Unit = unit, Embed = embed, EmbedDim = e, Explanations = ex,
            NotActive = notActive, WithoutExplanation = withoutExplanation, DeadRows = dead,
        };
    }
}

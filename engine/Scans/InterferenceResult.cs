using System.Globalization;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// What one SAE's interference scan reports, in feature indices, compact enough to keep on disk until every SAE of a
/// run is done: the histograms; per τ the qualified targets with their unrelated-partner count per bin and their
/// strongest partners per bin; the top-N partner pairs; each reported pair with its similarity and the local proxies
/// (logit-lens cosine, co-activation Jaccard; NaN where the data are absent); and the seeded sample as JSON.
/// </summary>
public sealed class InterferenceResult
{
    public required string Name { get; init; }
    public required string Folder { get; init; }
    public required string Hook { get; init; }
    public required int DSae { get; init; }
    public required int DIn { get; init; }
    /// <summary>Features scanned, and those left out (outside --active, without an explanation, zero decoder row).</summary>
    public required int Features { get; init; }
    public int NotActive { get; init; }
    public int WithoutExplanation { get; init; }
    public int DeadRows { get; init; }
    public required float[] Taus { get; init; }
    public required bool Semantic { get; init; }
    public required long[] Fine { get; init; }
    public required long[] Bins { get; init; }
    /// <summary>[τ, bin] unrelated pairs, or null without explanations.</summary>
    public long[]? Unrelated { get; init; }
    /// <summary>Pairs per fine bin of explanation similarity, and per τ the pairs below it (every pair; null without explanations).</summary>
    public long[]? SimilarityFine { get; init; }
    public long[]? SimilarityBelow { get; init; }
    /// <summary>Qualified targets per τ.</summary>
    public required int[] Qualified { get; init; }

    /// <summary>targets table: (τ index, target, bin, unrelated partners in the bin), qualified targets only.</summary>
    public required int[] TargetTau, TargetFeature, TargetBin, TargetPartners;
    /// <summary>qualified table: (τ index, target, bin, partner) with the pair's values.</summary>
    public required int[] QTau, QTarget, QBin, QPartner;
    public required float[] QCosine, QSimilarity, QLogit, QJaccard;
    /// <summary>partners table: pairs (a &lt; b) in some feature's top-N by cosine.</summary>
    public required int[] TopA, TopB;
    public required float[] TopCosine, TopSimilarity, TopLogit, TopJaccard;
    /// <summary>The seeded sample of this SAE (a JSON object), or null when not asked for.</summary>
    public string? SampleJson { get; init; }
    /// <summary>Seconds the scan took (over every run that worked on it).</summary>
    public double Seconds { get; init; }

    public long Pairs => (long)Features * (Features - 1) / 2;

    /// <summary>Per bin, the pairs whose cosine is below the bin's top, negatives included (the paper's App. F "x % of
    /// pairs &lt; 0.1"); the last is every pair.</summary>
    public long[] BelowHi
    {
        get
        {
            var below = new long[InterferenceBins.Count];
            long sum = Pairs - Bins.Sum();   // the negatives
            for (int b = 0; b < below.Length; b++) below[b] = sum += Bins[b];
            return below;
        }
    }

    /// <summary>Turns a finished scan into its report: every reported pair annotated, the sample drawn.</summary>
    public static InterferenceResult From(InterferenceInputs inp, InterferenceState st, InterferenceOptions options,
        LogitLens? lens, CoactivationLookup? coactivation, InterferenceSampleOptions? sample, double seconds = double.NaN)
    {
        int n = inp.N, nt = options.Taus.Length;
        var f = inp.Features;
        float Similarity(int a, int b) => inp.Embed is null ? float.NaN
            : System.Numerics.Tensors.TensorPrimitives.Dot(inp.Embed.AsSpan(a * inp.EmbedDim, inp.EmbedDim), inp.Embed.AsSpan(b * inp.EmbedDim, inp.EmbedDim));
        float Logit(int a, int b) => lens?.Cosine(a, b) ?? float.NaN;
        float Jaccard(int a, int b) => coactivation is null ? float.NaN : (float)coactivation.Jaccard(f[a], f[b]);

        var qualified = new int[nt];
        List<int> tTau = [], tFeature = [], tBin = [], tPartners = [];
        List<int> qTau = [], qTarget = [], qBin = [], qPartner = [];
        List<float> qCos = [], qSim = [], qLogit = [], qJac = [];
        if (st.PartnerCounts is not null)
            for (int t = 0; t < nt; t++)
                for (int a = 0; a < n; a++)
                {
                    if (!st.Qualified(t, a)) continue;
                    qualified[t]++;
                    for (int b = 0; b < InterferenceBins.Count; b++)
                    {
                        int owner = InterferenceState.Owner(t, a, b, n);
                        tTau.Add(t); tFeature.Add(f[a]); tBin.Add(b); tPartners.Add(st.PartnerCounts[owner]);
                        foreach (var (p, cos) in st.Partners!.Sorted(owner))
                        {
                            qTau.Add(t); qTarget.Add(f[a]); qBin.Add(b); qPartner.Add(f[p]); qCos.Add(cos);
                            qSim.Add(Similarity(a, p)); qLogit.Add(Logit(a, p)); qJac.Add(Jaccard(a, p));
                        }
                    }
                }
        List<int> topA = [], topB = [];
        List<float> topCos = [], topSim = [], topLogit = [], topJac = [];
        if (st.Top is not null)
        {
            var pairs = new SortedDictionary<(int, int), float>();
            for (int a = 0; a < n; a++)
                foreach (var (p, cos) in st.Top.Sorted(a)) pairs[(Math.Min(a, p), Math.Max(a, p))] = cos;
            foreach (var ((a, b), cos) in pairs)
            {
                topA.Add(f[a]); topB.Add(f[b]); topCos.Add(cos);
                topSim.Add(Similarity(a, b)); topLogit.Add(Logit(a, b)); topJac.Add(Jaccard(a, b));
            }
        }
        return new InterferenceResult
        {
            Name = inp.Name, Folder = inp.Config.Folder, Hook = inp.Config.Hook.ToString(), DSae = inp.Config.DSae, DIn = inp.Config.DIn,
            Features = n, NotActive = inp.NotActive, WithoutExplanation = inp.WithoutExplanation, DeadRows = inp.DeadRows,
            Taus = options.Taus, Semantic = st.PartnerCounts is not null, Fine = st.Fine, Bins = st.Bins, Unrelated = st.Unrelated,
            SimilarityFine = st.SimilarityFine, SimilarityBelow = st.SimilarityBelow,
            Qualified = qualified,
            TargetTau = [.. tTau], TargetFeature = [.. tFeature], TargetBin = [.. tBin], TargetPartners = [.. tPartners],
            QTau = [.. qTau], QTarget = [.. qTarget], QBin = [.. qBin], QPartner = [.. qPartner],
            QCosine = [.. qCos], QSimilarity = [.. qSim], QLogit = [.. qLogit], QJaccard = [.. qJac],
            TopA = [.. topA], TopB = [.. topB], TopCosine = [.. topCos], TopSimilarity = [.. topSim], TopLogit = [.. topLogit], TopJaccard = [.. topJac],
            SampleJson = sample is null || st.PartnerCounts is null ? null : InterferenceSampling.Draw(inp, st, options.Taus, sample, lens, coactivation).ToJsonString(),
            Seconds = seconds,
        };
    }

    static readonly string[] IntArrays = ["target_tau", "target_feature", "target_bin", "target_partners", "q_tau", "q_target", "q_bin", "q_partner", "top_a", "top_b"];
    static readonly string[] FloatArrays = ["q_cosine", "q_similarity", "q_logit", "q_jaccard", "top_cosine", "top_similarity", "top_logit", "top_jaccard"];

    int[][] Ints => [TargetTau, TargetFeature, TargetBin, TargetPartners, QTau, QTarget, QBin, QPartner, TopA, TopB];
    float[][] Floats => [QCosine, QSimilarity, QLogit, QJaccard, TopCosine, TopSimilarity, TopLogit, TopJaccard];

    internal void Save(SafeTensorsWriter w)
    {
        var inv = CultureInfo.InvariantCulture;
        w.AddMetadata("result.name", Name).AddMetadata("result.folder", Folder).AddMetadata("result.hook", Hook)
            .AddMetadata("result.dims", string.Join(",", new[] { DSae, DIn, Features, NotActive, WithoutExplanation, DeadRows }.Select(v => v.ToString(inv))))
            .AddMetadata("result.taus", string.Join(",", Taus.Select(t => t.ToString("R", inv))))
            .AddMetadata("result.semantic", Semantic ? "1" : "0").AddMetadata("result.seconds", Seconds.ToString("R", inv));
        if (SampleJson is not null) w.AddMetadata("result.sample", SampleJson);
        w.Add("fine", Fine, Fine.Length).Add("bins", Bins, Bins.Length).Add("qualified", Qualified, Qualified.Length);
        if (Unrelated is not null) w.Add("unrelated", Unrelated, Unrelated.Length);
        if (SimilarityFine is not null) w.Add("similarity_fine", SimilarityFine, SimilarityFine.Length);
        if (SimilarityBelow is not null) w.Add("similarity_below", SimilarityBelow, SimilarityBelow.Length);
        for (int i = 0; i < IntArrays.Length; i++) w.Add(IntArrays[i], Ints[i], Ints[i].Length);
        for (int i = 0; i < FloatArrays.Length; i++) w.Add(FloatArrays[i], Floats[i], Floats[i].Length);
    }

    internal static InterferenceResult Load(SafeTensorsFile file)
    {
        var m = file.Metadata;
        var dims = m["result.dims"].Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        int[] I(string name) => file.ReadInt64(name).Select(v => (int)v).ToArray();
        var ints = IntArrays.Select(I).ToArray();
        var floats = FloatArrays.Select(file.ReadFloat32).ToArray();
        return new InterferenceResult
        {
            Name = m["result.name"], Folder = m["result.folder"], Hook = m["result.hook"],
            DSae = dims[0], DIn = dims[1], Features = dims[2], NotActive = dims[3], WithoutExplanation = dims[4], DeadRows = dims[5],
            Taus = m["result.taus"].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray(),
            Semantic = m["result.semantic"] == "1",
            Fine = file.ReadInt64("fine"), Bins = file.ReadInt64("bins"), Qualified = I("qualified"),
            Unrelated = file.Contains("unrelated") ? file.ReadInt64("unrelated") : null,
            SimilarityFine = file.Contains("similarity_fine") ? file.ReadInt64("similarity_fine") : null,
            SimilarityBelow = file.Contains("similarity_below") ? file.ReadInt64("similarity_below") : null,
            TargetTau = ints[0], TargetFeature = ints[1], TargetBin = ints[2], TargetPartners = ints[3],
            QTau = ints[4], QTarget = ints[5], QBin = ints[6], QPartner = ints[7], TopA = ints[8], TopB = ints[9],
            QCosine = floats[0], QSimilarity = floats[1], QLogit = floats[2], QJaccard = floats[3],
            TopCosine = floats[4], TopSimilarity = floats[5], TopLogit = floats[6], TopJaccard = floats[7],
            SampleJson = m.GetValueOrDefault("result.sample"),
            Seconds = double.Parse(m["result.seconds"], CultureInfo.InvariantCulture),
        };
    }
}

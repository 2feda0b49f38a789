namespace PolyEngine.Stats;

/// <summary>One experiment row as the paper's regressions read it: the metric's baseline c(O), its best steered value
/// c(Õ), the pair's interference and semantic similarity, and the layer type (att, mlp, res, …).</summary>
public sealed record RegressionRow(double Baseline, double Steered, double Interference, double Similarity, string LayerType);

/// <summary>
/// The paper's two regressions over experiment rows, with layer-type dummies (the first type in order is the
/// reference level, as treatment coding does):
/// <list type="bullet">
/// <item>Model A: c(Õ) ~ interference + similarity + c(O) + dummies — the steered value, controlling for the baseline.</item>
/// <item>Model B: Δc = (c(Õ) − c(O)) / |c(O)| (the paper's eq. 2, with |·| so a negative baseline keeps the change's sign; the cases' relative column) ~ interference + similarity + dummies; rows with c(O) = 0 have
/// no Δc and are an error (drop them first).</item>
/// </list>
/// </summary>
public static class PaperModels
{
    public static OlsFit ModelA(IReadOnlyList<RegressionRow> rows) =>
        Fit(rows, r => r.Steered, withBaseline: true);

    public static OlsFit ModelB(IReadOnlyList<RegressionRow> rows) =>
        Fit(rows, r => (r.Steered - r.Baseline) / Math.Abs(r.Baseline), withBaseline: false);

    static OlsFit Fit(IReadOnlyList<RegressionRow> rows, Func<RegressionRow, double> response, bool withBaseline)
    {
        var types = rows.Select(r => r.LayerType).Distinct().Order(StringComparer.Ordinal).ToList();
        var names = new List<string> { "interference", "similarity" };
        if (withBaseline) names.Add("baseline");
        names.AddRange(types.Skip(1).Select(t => $"type[{t}]"));
        var x = rows.Select(r =>
        {
            var v = new List<double> { r.Interference, r.Similarity };
            if (withBaseline) v.Add(r.Baseline);
            v.AddRange(types.Skip(1).Select(t => r.LayerType == t ? 1.0 : 0.0));
            return v.ToArray();
        }).ToList();
        return OlsFit.Fit(names, x, rows.Select(response).ToList());
    }
}

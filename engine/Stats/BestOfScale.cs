namespace PolyEngine.Stats;

/// <summary>Where a best-of-scale search starts (PAPER's two loops disagree; the experiments say which ran).</summary>
public enum BestStart
{
    /// <summary>Only the steered values compete (the best scale, however bad).</summary>
    None,
    /// <summary>The best starts at 0, as the authors' feature (SAE) loop: a metric that only falls reports 0.</summary>
    Zero,
    /// <summary>The best starts at the baseline, as the authors' token (gradient) loop: improvements are never negative.</summary>
    Baseline,
}

/// <summary>
/// The best value of a metric over the scales (or factors, or vectors × scales) of one intervention: the largest value,
/// or the largest |value| for correlations (the authors compare <c>abs(current) &gt; abs(best)</c>), the first of equal
/// values winning. <see cref="BestStart"/> says what it starts from; when the start wins, <see cref="Index"/> is −1.
/// </summary>
public readonly record struct BestOfScale(double Value, int Index)
{
    public static BestOfScale Of(IReadOnlyList<double> values, bool byMagnitude, BestStart start = BestStart.None, double baseline = double.NaN)
    {
        if (start == BestStart.Baseline && double.IsNaN(baseline)) throw new ArgumentException("BestStart.Baseline needs the baseline");
        double best = start switch { BestStart.Zero => 0, BestStart.Baseline => baseline, _ => double.NaN };
        int index = -1;
        for (int i = 0; i < values.Count; i++)
        {
            double v = values[i];
            bool better = index < 0 && start == BestStart.None || (byMagnitude ? Math.Abs(v) > Math.Abs(best) : v > best);
            if (better) { best = v; index = i; }
        }
        return new(best, index);
    }
}

namespace PolyEngine.Stats;

/// <summary>Where a best-of-scale search starts (the authors' two loops disagree; the experiments say which ran).</summary>
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
    /// <remarks>NaN values never win; a NaN baseline under <see cref="BestStart.Baseline"/> starts from nothing, as
    /// <see cref="BestStart.None"/>. With no winner the value is the start (NaN under None).</remarks>
    public static BestOfScale Of(IReadOnlyList<double> values, bool byMagnitude, BestStart start = BestStart.None, double baseline = double.NaN)
    {
        double best = start switch { BestStart.Zero => 0, BestStart.Baseline => baseline, _ => double.NaN };
        bool open = double.IsNaN(best);   // nothing to beat yet
        int index = -1;
        for (int i = 0; i < values.Count; i++)
        {
            double v = values[i];
            if (double.IsNaN(v)) continue;
            bool better = open || (byMagnitude ? Math.Abs(v) > Math.Abs(best) : v > best);
            open = false;
            if (better) { best = v; index = i; }
        }
        return new(best, index);
    }
}

using MathNet.Numerics.Distributions;

namespace PolyEngine.Stats;

/// <summary>
/// Welch's unequal-variance t-test of two samples' means, two-sided: t = (m₁ − m₂) / √(s₁²/n₁ + s₂²/n₂) with the
/// Welch–Satterthwaite degrees of freedom. As SciPy's <c>ttest_ind(equal_var=False)</c>: with both variances zero, the
/// means' difference gives t = ±∞ and p = 0, or t = p = NaN when the means are equal too; fewer than two values on a side
/// give NaN.
/// </summary>
public sealed record WelchTest(double T, double DegreesOfFreedom, double P, double MeanDifference)
{
    public static WelchTest Of(IReadOnlyCollection<double> a, IReadOnlyCollection<double> b)
    {
        var (x, y) = (MeanStats.Of(a), MeanStats.Of(b));
        double diff = x.Mean - y.Mean;
        if (x.N < 2 || y.N < 2) return new(double.NaN, double.NaN, double.NaN, diff);
        double va = x.StdDev * x.StdDev / x.N, vb = y.StdDev * y.StdDev / y.N;
        double se2 = va + vb;
        if (se2 == 0) return diff == 0 ? new(double.NaN, double.NaN, double.NaN, 0) : new(diff > 0 ? double.PositiveInfinity : double.NegativeInfinity, double.NaN, 0, diff);
        double df = se2 * se2 / (va * va / (x.N - 1) + vb * vb / (y.N - 1));
        double t = diff / Math.Sqrt(se2);
        return new(t, df, TwoSided(t, df), diff);
    }

    /// <summary>P(|T| ≥ |t|) for Student's t with <paramref name="df"/> degrees of freedom.</summary>
    public static double TwoSided(double t, double df) => 2 * StudentT.CDF(0, 1, df, -Math.Abs(t));
}

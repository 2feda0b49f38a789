using MathNet.Numerics.Distributions;

namespace PolyEngine.Stats;

/// <summary>A sample's mean with its spread: n, mean, standard deviation (n − 1), standard error and the two-sided 95 %
/// confidence interval from Student's t with n − 1 degrees of freedom (NaN where n is too small for it).</summary>
public sealed record MeanStats(int N, double Mean, double StdDev, double StdErr, double Ci95Low, double Ci95High)
{
    /// <summary>The statistics of <paramref name="values"/> (NaN values are an error: filter them first).</summary>
    public static MeanStats Of(IEnumerable<double> values)
    {
        var x = values.ToArray();
        if (x.Any(double.IsNaN)) throw new PolyEngineException("a mean over values that include NaN; drop the NaN rows first");
        int n = x.Length;
        if (n == 0) return new(0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
        double mean = 0;
        foreach (var v in x) mean += v;
        mean /= n;
        if (n == 1) return new(1, mean, double.NaN, double.NaN, double.NaN, double.NaN);
        double ss = 0;
        foreach (var v in x) ss += (v - mean) * (v - mean);
        double sd = Math.Sqrt(ss / (n - 1)), se = sd / Math.Sqrt(n);
        double q = StudentT.InvCDF(0, 1, n - 1, 0.975);
        return new(n, mean, sd, se, mean - q * se, mean + q * se);
    }

    /// <summary>The paper's figures' statistic: the mean over the strictly positive values only (improvements), with the
    /// share of values that were positive. The unconditional <see cref="Of"/> belongs beside it.</summary>
    public static (MeanStats Positive, double FractionPositive) ConditionalPositive(IEnumerable<double> values)
    {
        var x = values.ToArray();
        var pos = x.Where(v => v > 0).ToArray();
        return (Of(pos), x.Length == 0 ? double.NaN : pos.Length / (double)x.Length);
    }
}

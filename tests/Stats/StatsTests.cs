using System.Text.Json;
using PolyEngine.Stats;
using Xunit;

namespace PolyEngine.Tests.Stats;

/// <summary>
/// engine/Stats against SciPy and statsmodels on the same data (fixtures/stats-reference, written by make_reference.py
/// beside this file), and against values worked by hand.
/// </summary>
public class StatsTests
{
    static readonly JsonElement Ref = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Root, "stats-reference", "reference.json"))).RootElement;

    static double[] Doubles(JsonElement e) => e.EnumerateArray().Select(x => x.GetDouble()).ToArray();

    static void Near(double expected, double actual, double rtol, string what) =>
        Assert.True(Math.Abs(expected - actual) <= rtol * Math.Max(1e-300, Math.Abs(expected)), $"{what}: {actual:R}, reference {expected:R}");

    [Fact]
    public void MeansMatchScipy()
    {
        var m = Ref.GetProperty("mean");
        var s = MeanStats.Of(Doubles(m.GetProperty("x")));
        Assert.Equal(m.GetProperty("n").GetInt32(), s.N);
        Near(m.GetProperty("mean").GetDouble(), s.Mean, 1e-12, "mean");
        Near(m.GetProperty("sd").GetDouble(), s.StdDev, 1e-12, "sd");
        Near(m.GetProperty("se").GetDouble(), s.StdErr, 1e-12, "se");
        Near(m.GetProperty("ci95")[0].GetDouble(), s.Ci95Low, 1e-9, "ci95 low");
        Near(m.GetProperty("ci95")[1].GetDouble(), s.Ci95High, 1e-9, "ci95 high");
        var (pos, frac) = MeanStats.ConditionalPositive(Doubles(m.GetProperty("x")));
        var p = m.GetProperty("positive");
        Assert.Equal(p.GetProperty("n").GetInt32(), pos.N);
        Near(p.GetProperty("mean").GetDouble(), pos.Mean, 1e-12, "positive mean");
        Near(p.GetProperty("ci95")[1].GetDouble(), pos.Ci95High, 1e-9, "positive ci95 high");
        Near(p.GetProperty("fraction").GetDouble(), frac, 1e-15, "fraction positive");
    }

    [Fact]
    public void MeansByHand()
    {
        var s = MeanStats.Of([1, 2, 3, 4]);
        Assert.Equal(2.5, s.Mean);
        Assert.Equal(Math.Sqrt(5.0 / 3), s.StdDev, 14);
        Assert.Equal(Math.Sqrt(5.0 / 3) / 2, s.StdErr, 14);
        Assert.Equal(2.5 - 3.182446305284263 * s.StdErr, s.Ci95Low, 9);   // t(0.975, 3)
        Assert.True(double.IsNaN(MeanStats.Of([7]).StdErr));
        Assert.Equal(0, MeanStats.Of([]).N);
        Assert.Contains("NaN", Assert.Throws<PolyEngineException>(() => MeanStats.Of([1, double.NaN])).Message);
        var (pos, frac) = MeanStats.ConditionalPositive([-1, 0, 2, 4]);
        Assert.Equal(3, pos.Mean);
        Assert.Equal(0.5, frac);
    }

    [Fact]
    public void WelchMatchesScipy()
    {
        int i = 0;
        foreach (var w in Ref.GetProperty("welch").EnumerateArray())
        {
            var r = WelchTest.Of(Doubles(w.GetProperty("a")), Doubles(w.GetProperty("b")));
            Near(w.GetProperty("t").GetDouble(), r.T, 1e-10, $"welch {i} t");
            Near(w.GetProperty("df").GetDouble(), r.DegreesOfFreedom, 1e-10, $"welch {i} df");
            Near(w.GetProperty("p").GetDouble(), r.P, 1e-8, $"welch {i} p");
            i++;
        }
        Assert.Equal(3, i);
    }

    [Fact]
    public void WelchEdgesFollowScipy()
    {
        var same = WelchTest.Of([1, 1, 1], [1, 1]);
        Assert.True(double.IsNaN(same.T) && double.IsNaN(same.P));
        var apart = WelchTest.Of([1, 1, 1], [0, 0]);
        Assert.Equal(double.PositiveInfinity, apart.T);
        Assert.Equal(0, apart.P);
        Assert.True(double.IsNaN(WelchTest.Of([1], [0, 2]).T));
    }

    static List<RegressionRow> Rows() => Ref.GetProperty("rows").EnumerateArray().Select(r => new RegressionRow(
        r.GetProperty("baseline").GetDouble(), r.GetProperty("steered").GetDouble(), r.GetProperty("interference").GetDouble(),
        r.GetProperty("similarity").GetDouble(), r.GetProperty("type").GetString()!)).ToList();

    [Theory]
    [InlineData("A")]
    [InlineData("B")]
    public void PaperModelsMatchStatsmodels(string which)
    {
        var fit = which == "A" ? PaperModels.ModelA(Rows()) : PaperModels.ModelB(Rows());
        var r = Ref.GetProperty(which);
        var names = r.GetProperty("names").EnumerateArray().Select(x => x.GetString()).ToArray();
        Assert.Equal(names, fit.Terms.Select(t => t.Name));
        Assert.Equal(r.GetProperty("df").GetInt32(), fit.DegreesOfFreedom);
        Near(r.GetProperty("r2").GetDouble(), fit.RSquared, 1e-10, "R²");
        Near(r.GetProperty("adj_r2").GetDouble(), fit.AdjustedRSquared, 1e-10, "adjusted R²");
        for (int j = 0; j < names.Length; j++)
        {
            var t = fit.Terms[j];
            Near(r.GetProperty("coef")[j].GetDouble(), t.Coefficient, 1e-9, $"{which} {t.Name} coef");
            Near(r.GetProperty("se")[j].GetDouble(), t.StdErr, 1e-9, $"{which} {t.Name} se");
            Near(r.GetProperty("t")[j].GetDouble(), t.T, 1e-9, $"{which} {t.Name} t");
            Near(r.GetProperty("p")[j].GetDouble(), t.P, 1e-6, $"{which} {t.Name} p");
            // An interval's end b ± q·se can sit near 0: compare it at 1e-9 of the terms it is made of.
            double scale = Math.Abs(t.Coefficient) + 3 * t.StdErr;
            foreach (var (name, k, got) in new[] { ("ci90", 0, t.Ci90Low), ("ci90", 1, t.Ci90High), ("ci95", 0, t.Ci95Low), ("ci95", 1, t.Ci95High), ("ci99", 0, t.Ci99Low), ("ci99", 1, t.Ci99High) })
            {
                double expected = r.GetProperty(name)[j][k].GetDouble();
                Assert.True(Math.Abs(expected - got) <= 1e-9 * scale, $"{which} {t.Name} {name}[{k}]: {got:R}, reference {expected:R}");
            }
        }
    }

    [Fact]
    public void OlsByHandAndItsErrors()
    {
        // y = 1 + 2x exactly: the coefficients exactly, zero residual.
        var exact = OlsFit.Fit(["x"], [[0.0], [1.0], [2.0], [3.0]], [1, 3, 5, 7]);
        Assert.Equal(1, exact["intercept"].Coefficient, 12);
        Assert.Equal(2, exact["x"].Coefficient, 12);
        Assert.Equal(1, exact.RSquared, 12);
        var collinear = Assert.Throws<PolyEngineException>(() => OlsFit.Fit(["a", "b"], [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.1 - 0.1]], [1, 2, 3, 4]));
        Assert.Contains("collinear (b", collinear.Message);
        Assert.Contains("more rows than coefficients", Assert.Throws<PolyEngineException>(() => OlsFit.Fit(["a"], [[1.0], [2.0]], [1, 2])).Message);
        Assert.Contains("NaN", Assert.Throws<PolyEngineException>(() => OlsFit.Fit(["a"], [[1.0], [2.0], [3.0]], [1, double.NaN, 2])).Message);
    }

    [Fact]
    public void BestOfScaleFollowsEachLoopsStart()
    {
        double[] falling = [-0.3, -0.1, -0.2];
        Assert.Equal(new BestOfScale(-0.1, 1), BestOfScale.Of(falling, byMagnitude: false));
        Assert.Equal(new BestOfScale(0, -1), BestOfScale.Of(falling, byMagnitude: false, BestStart.Zero));              // the feature loop
        Assert.Equal(new BestOfScale(-0.05, -1), BestOfScale.Of(falling, byMagnitude: false, BestStart.Baseline, -0.05)); // the token loop
        Assert.Equal(new BestOfScale(-0.1, 1), BestOfScale.Of(falling, byMagnitude: false, BestStart.Baseline, -0.2));
        // Correlations by magnitude; the first of equal values wins.
        Assert.Equal(new BestOfScale(-0.3, 0), BestOfScale.Of(falling, byMagnitude: true, BestStart.Zero));
        Assert.Equal(new BestOfScale(2, 0), BestOfScale.Of([2.0, 2.0], byMagnitude: false));
        // NaN never wins; a NaN baseline starts from nothing.
        Assert.Equal(new BestOfScale(1, 1), BestOfScale.Of([double.NaN, 1.0, double.NaN], byMagnitude: false));
        Assert.Equal(new BestOfScale(-0.1, 1), BestOfScale.Of(falling, byMagnitude: false, BestStart.Baseline, double.NaN));
        Assert.True(double.IsNaN(BestOfScale.Of([double.NaN], byMagnitude: true).Value));
    }

    static bool SamePartition(int[] a, int[] b) =>
        a.Length == b.Length && Enumerable.Range(0, a.Length).All(i => Enumerable.Range(0, a.Length).All(j => (a[i] == a[j]) == (b[i] == b[j])));

    [Fact]
    public void AverageLinkageMatchesScipy()
    {
        var c = Ref.GetProperty("clusters");
        var rows = c.GetProperty("unit").EnumerateArray().Select(Doubles).ToArray();
        int n = rows.Length, dim = rows[0].Length;
        var unit = rows.SelectMany(r => r.Select(x => (float)x)).ToArray();
        var labels = Clustering.Cluster(unit, n, dim, c.GetProperty("cutoff").GetDouble(), ClusterMethod.AverageLinkage);
        var expected = c.GetProperty("labels").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        Assert.True(SamePartition(expected, labels), $"partition differs: scipy {string.Join(",", expected)} vs {string.Join(",", labels)}");
        Assert.Equal(6, labels.Distinct().Count());
        Assert.Equal(0, labels[0]);   // labels in order of each cluster's lowest member

        // The pairwise threshold: connected components of the pairs within the cut, by brute force here.
        var th = Clustering.Cluster(unit, n, dim, 0.25, ClusterMethod.PairwiseThreshold);
        var comp = Enumerable.Range(0, n).ToArray();
        bool changed = true;
        while (changed)
        {
            changed = false;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    if (1 - Enumerable.Range(0, dim).Sum(k => (double)unit[i * dim + k] * unit[j * dim + k]) <= 0.25 && comp[j] > comp[i]) { comp[j] = comp[i]; changed = true; }
        }
        Assert.True(SamePartition(comp, th));
    }
}

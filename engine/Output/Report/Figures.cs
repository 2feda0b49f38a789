using System.Globalization;

namespace PolyEngine.Output.Report;

/// <summary>The report's figures, drawn with ScottPlot and saved as PNG and SVG.</summary>
static class Figures
{
    /// <summary>Per level, two bars: the conditional-positive mean of the relative change (the paper's figures) and the
    /// unconditional mean, each with its 95 % CI; <paramref name="path"/> gets .png and .svg.</summary>
    public static void LevelBars(string path, string title, IReadOnlyList<Dictionary<string, string>> rows)
    {
        double D(Dictionary<string, string> r, string c) => double.TryParse(r[c], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : double.NaN;
        var plot = new ScottPlot.Plot();
        var positive = new List<ScottPlot.Bar>();
        var all = new List<ScottPlot.Bar>();
        for (int i = 0; i < rows.Count; i++)
        {
            var r = rows[i];
            ScottPlot.Bar Bar(double x, string mean, string low, string high, ScottPlot.Color color)
            {
                double m = D(r, mean), lo = D(r, low), hi = D(r, high);
                return new ScottPlot.Bar
                {
                    Position = x, Value = double.IsFinite(m) ? m : 0, FillColor = color,
                    Error = double.IsFinite(lo) && double.IsFinite(hi) ? (hi - lo) / 2 : 0,
                };
            }
            positive.Add(Bar(3 * i, "positive_mean", "positive_ci95_low", "positive_ci95_high", ScottPlot.Colors.SteelBlue));
            all.Add(Bar(3 * i + 1, "mean", "ci95_low", "ci95_high", ScottPlot.Colors.Orange));
        }
        var p1 = plot.Add.Bars(positive);
        p1.LegendText = "positive cases only (the paper's bars)";
        var p2 = plot.Add.Bars(all);
        p2.LegendText = "all cases";
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. rows.Select((r, i) => new ScottPlot.Tick(3 * i + 0.5, r["level"]))]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Title(title);
        plot.YLabel("relative change (mean, 95 % CI)");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path + ".png", 900, 420);
        plot.SaveSvg(path + ".svg", 900, 420);
    }
}

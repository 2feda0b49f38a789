using System.Globalization;
using static PolyEngine.Output.Report.ReportPage;

namespace PolyEngine.Output.Report;

/// <summary>The report's figures, drawn with ScottPlot and saved as PNG and SVG. Text uses DejaVu Sans shipped inside the
/// engine (Output/Report/Fonts, with its licence), so a machine without system fonts still labels its figures.</summary>
static class Figures
{
    const string Font = "PolyEngine DejaVu Sans";
    static readonly Lazy<bool> FontReady = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "polyengine-fonts");
        string path = Path.Combine(dir, "DejaVuSans-2.37.ttf");
        if (!File.Exists(path))
        {
            Directory.CreateDirectory(dir);
            using var src = typeof(Figures).Assembly.GetManifestResourceStream("PolyEngine.DejaVuSans.ttf")
                ?? throw new InvalidOperationException("the DejaVu Sans resource is missing from the PolyEngine assembly");
            string tmp = path + $".{Environment.ProcessId}.tmp";
            using (var dst = File.Create(tmp)) src.CopyTo(dst);
            File.Move(tmp, path, overwrite: true);
        }
        ScottPlot.Fonts.AddFontFile(Font, path, bold: false, italic: false);
        ScottPlot.Fonts.AddFontFile(Font, path, bold: true, italic: false);   // titles: the regular face (no bold file shipped)
        return true;
    });

    static ScottPlot.Plot NewPlot()
    {
        _ = FontReady.Value;
        var plot = new ScottPlot.Plot();
        plot.Font.Set(Font);
        return plot;
    }

    /// <summary>Saves both renderings of <paramref name="plot"/> at <paramref name="stem"/>.png and .svg, each atomically.</summary>
    static void Save(ScottPlot.Plot plot, string stem, int width = 900, int height = 420)
    {
        var png = plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        Formats.AtomicFile.Write(stem + ".png", s => s.Write(png));
        Formats.AtomicFile.WriteText(stem + ".svg", plot.GetSvgXml(width, height));
    }

    static readonly ScottPlot.Color[] Palette = [ScottPlot.Colors.SteelBlue, ScottPlot.Colors.Orange, ScottPlot.Colors.ForestGreen, ScottPlot.Colors.Crimson,
        ScottPlot.Colors.MediumPurple, ScottPlot.Colors.SaddleBrown, ScottPlot.Colors.HotPink, ScottPlot.Colors.Gray, ScottPlot.Colors.Olive, ScottPlot.Colors.Teal];

    /// <summary>One cumulative-distribution line per series — the fraction of pairs at or below each histogram bin's top —
    /// with a dashed line at each of <paramref name="edges"/>; the x range is where the distributions move, edges included.</summary>
    public static void Cdf(string stem, string title, string xLabel, IReadOnlyList<(string Name, double[] Hi, long[] Counts)> series, double[] edges)
    {
        var plot = NewPlot();
        double xMin = edges.Min(), xMax = edges.Max();
        for (int s = 0; s < series.Count; s++)
        {
            var (name, hi, counts) = series[s];
            double total = Math.Max(1, counts.Sum()), sum = 0;
            var ys = new double[counts.Length];
            for (int i = 0; i < counts.Length; i++) ys[i] = (sum += counts[i]) / total;
            int first = Array.FindIndex(ys, y => y > 0.001), last = Array.FindIndex(ys, y => y >= 0.999);
            if (first >= 0) xMin = Math.Min(xMin, hi[first] - 0.02);
            if (last >= 0) xMax = Math.Max(xMax, hi[last] + 0.02);
            var line = plot.Add.ScatterLine(hi, ys, Palette[s % Palette.Length]);
            line.LegendText = name;
            line.LineWidth = 2;
        }
        foreach (var e in edges)
        {
            var v = plot.Add.VerticalLine(e, 1, ScottPlot.Colors.Gray, ScottPlot.LinePattern.Dashed);
            v.Text = e.ToString("0.0##", CultureInfo.InvariantCulture);
        }
        plot.Axes.SetLimits(xMin, xMax, 0, 1.02);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel("fraction of pairs at or below");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Save(plot, stem);
    }

    /// <summary>One line per series over bin centres (a histogram drawn as lines, so several SAEs share one figure).</summary>
    public static void Lines(string stem, string title, string xLabel, string yLabel, IReadOnlyList<(string Name, double[] X, double[] Y)> series)
    {
        var plot = NewPlot();
        for (int s = 0; s < series.Count; s++)
        {
            var line = plot.Add.ScatterLine(series[s].X, series[s].Y, Palette[s % Palette.Length]);
            line.LegendText = series[s].Name;
            line.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        Save(plot, stem);
    }

    /// <summary>A forest plot of regression coefficients: per row its estimate and the 90, 95 and 99 % intervals (thick to
    /// thin), a line at zero.</summary>
    public static void Coefficients(string stem, string title, IReadOnlyList<(string Label, double Estimate, (double Lo, double Hi)[] Intervals)> rows)
    {
        var plot = NewPlot();
        float[] widths = [7, 4, 1.5f];   // 90, 95, 99 %
        for (int i = 0; i < rows.Count; i++)
        {
            double y = rows.Count - 1 - i;
            for (int k = 0; k < rows[i].Intervals.Length; k++)
            {
                var (lo, hi) = rows[i].Intervals[k];
                if (!double.IsFinite(lo) || !double.IsFinite(hi)) continue;
                var l = plot.Add.Line(lo, y, hi, y);
                l.LineWidth = widths[k];
                l.LineColor = ScottPlot.Colors.SteelBlue.WithAlpha(0.45 + 0.2 * k);
            }
            if (double.IsFinite(rows[i].Estimate)) plot.Add.Marker(rows[i].Estimate, y, ScottPlot.MarkerShape.FilledCircle, 9, ScottPlot.Colors.Black);
        }
        plot.Add.VerticalLine(0, 1, ScottPlot.Colors.Gray, ScottPlot.LinePattern.Dashed);
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. rows.Select((r, i) => new ScottPlot.Tick(rows.Count - 1 - i, r.Label))]);
        plot.Axes.SetLimitsY(-0.7, rows.Count - 0.3);
        plot.Title(title);
        plot.XLabel("coefficient (dot), 90 / 95 / 99 % intervals (thick to thin)");
        Save(plot, stem, 900, 120 + 34 * rows.Count);
    }

    /// <summary>Per level, two bars: the conditional-positive mean of the relative change (the paper's figures) and the
    /// unconditional mean, each with its 95 % CI; <paramref name="path"/> gets .png and .svg.</summary>
    public static void LevelBars(string path, string title, IReadOnlyList<Dictionary<string, string>> rows)
    {
        var plot = NewPlot();
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
        Save(plot, path);
    }

    /// <summary>Per degree bucket two boxes (min, quartiles, median, max): the largest drop of the top-10 weighted cosine
    /// under masking (as a negative change) and its largest increase under amplifying. Returns the boxes' numbers.</summary>
    public static System.Text.Json.Nodes.JsonArray NeuronBoxes(string path, IReadOnlyList<Dictionary<string, string>> rows)
    {
        var order = Experiments.DegreeBuckets.All.Select(b => b.Name).ToList();
        var buckets = rows.Select(r => r["bucket"]).Distinct().OrderBy(b => order.IndexOf(b)).ToList();
        var plot = NewPlot();
        var mask = new List<ScottPlot.Box>();
        var amplify = new List<ScottPlot.Box>();
        var numbers = new System.Text.Json.Nodes.JsonArray();
        for (int i = 0; i < buckets.Count; i++)
        {
            var mine = rows.Where(r => r["bucket"] == buckets[i]).ToList();
            foreach (var (direction, values, boxes, x) in new[]
            {
                ("mask", mine.Select(r => -D(r, "mask_max_abs_drop")), mask, 3.0 * i),
                ("amplify", mine.Select(r => D(r, "amplify_max_abs_increase")), amplify, 3.0 * i + 1),
            })
            {
                var v = values.Where(double.IsFinite).Order().ToArray();
                if (v.Length == 0) continue;
                double Q(double p) => MathNet.Numerics.Statistics.SortedArrayStatistics.Quantile(v, p);
                boxes.Add(new ScottPlot.Box { Position = x, WhiskerMin = v[0], BoxMin = Q(0.25), BoxMiddle = Q(0.5), BoxMax = Q(0.75), WhiskerMax = v[^1] });
                numbers.Add(new System.Text.Json.Nodes.JsonObject
                {
                    ["bucket"] = buckets[i], ["direction"] = direction, ["cases"] = v.Length,
                    ["min"] = v[0], ["q1"] = Q(0.25), ["median"] = Q(0.5), ["q3"] = Q(0.75), ["max"] = v[^1],
                });
            }
        }
        var b1 = plot.Add.Boxes(mask);
        b1.LegendText = "masking (factor < 1): largest drop";
        b1.FillColor = ScottPlot.Colors.SteelBlue;
        var b2 = plot.Add.Boxes(amplify);
        b2.LegendText = "amplifying (factor > 1): largest increase";
        b2.FillColor = ScottPlot.Colors.Orange;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. buckets.Select((b, i) => new ScottPlot.Tick(3 * i + 0.5, b))]);
        plot.Title("neurons: change of the top-10 weighted cosine per polysemanticity bucket");
        plot.XLabel("clusters aligned with the neuron");
        plot.YLabel("change in weighted cosine");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        Save(plot, path);
        return numbers;
    }
}

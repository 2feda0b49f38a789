using System.Globalization;
using System.Net;
using System.Text;

namespace PolyEngine.Output.Report;

/// <summary>The page being written: its HTML, and its figures (numbered across the page, saved under <c>figures/</c> as
/// PNG and SVG, the PNG embedded as a data URI so the page stands alone).</summary>
sealed class ReportPage(string outDir)
{
    readonly StringBuilder _html = new();
    int _figures;

    public string FiguresDir { get; } = Path.Combine(outDir, "figures");

    public ReportPage Append(string html) { _html.Append(html); return this; }

    public ReportPage Heading(int level, string text) => Append($"<h{level}>{Esc(text)}</h{level}>");

    public ReportPage Paragraph(string text) => Append($"<p>{Esc(text)}</p>");

    /// <summary>A remark the reader should not miss (a missing table, an empty run, a table that cannot be read).</summary>
    public ReportPage Note(string text) => Append($"<p class=\"note\">{Esc(text)}</p>");

    /// <summary>The path stem (no extension) of the next figure, <c>figures/fig{N}-{name}</c>; the caller saves .png and .svg there.</summary>
    public string NextFigure(string name) => Path.Combine(FiguresDir, $"fig{++_figures}-{name}");

    /// <summary>Embeds the PNG saved at <paramref name="stem"/>.png, with its alt text and a link to the SVG beside it.</summary>
    public ReportPage Figure(string stem, string alt) =>
        Append($"<figure><img alt=\"{Esc(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(stem + ".png"))}\">" +
               $"<figcaption>{Esc(alt)} (<a href=\"figures/{Esc(Path.GetFileName(stem))}.svg\">SVG</a>)</figcaption></figure>");

    /// <summary>A table of rows of cells (already formatted); the first column left-aligned.</summary>
    public ReportPage Table(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string>> rows)
    {
        _html.Append("<table><tr>");
        foreach (var h in header) _html.Append($"<th>{Esc(h)}</th>");
        _html.Append("</tr>");
        foreach (var r in rows)
        {
            _html.Append("<tr>");
            foreach (var c in r) _html.Append($"<td>{Esc(c)}</td>");
            _html.Append("</tr>");
        }
        _html.Append("</table>");
        return this;
    }

    public override string ToString() => _html.ToString();

    public static string Esc(string s) => WebUtility.HtmlEncode(s);

    /// <summary>A number for a table cell: four significant digits, integers as they are.</summary>
    public static string Num(double v) => double.IsNaN(v) ? "NaN" : v == Math.Floor(v) && Math.Abs(v) < 1e15 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : v.ToString("G4", CultureInfo.InvariantCulture);

    public static string Percent(double v) => double.IsFinite(v) ? (100 * v).ToString("F2", CultureInfo.InvariantCulture) + " %" : "–";

    /// <summary>A cell's number (NaN when it is empty or not a number).</summary>
    public static double D(Dictionary<string, string> row, string column) =>
        row.TryGetValue(column, out var s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : double.NaN;
}

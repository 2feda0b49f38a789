using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Parquet;
using Parquet.Schema;

namespace PolyEngine.Output.Report;

/// <summary>A table of a run folder read back as text cells (Parquet or CSV, whichever the run wrote), for the report. A
/// column is numeric when every cell is a number in invariant round-trip form (a text column of digits stays text only
/// if some cell is not one: " 42", a token string, is not).</summary>
sealed class Table(IReadOnlyList<string> columns, List<Dictionary<string, string>> rows)
{
    public IReadOnlyList<string> Columns { get; } = columns;
    public List<Dictionary<string, string>> Rows { get; } = rows;

    public IEnumerable<string> Column(string name) => Rows.Select(r => r[name]);

    readonly HashSet<string> _numeric = [.. columns.Where(c => rows.All(r => IsNumber(r[c])))];

    /// <summary>A cell the writers wrote as a number: no spaces, invariant digits, or NaN/±Infinity.</summary>
    static bool IsNumber(string cell) => cell is "NaN" or "Infinity" or "-Infinity" || (cell.Length > 0 && !char.IsWhiteSpace(cell[0]) && !char.IsWhiteSpace(cell[^1])
        && double.TryParse(cell, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent, CultureInfo.InvariantCulture, out _));

    /// <summary>Rows as JSON objects, numeric columns as numbers (NaN and infinities as null: JSON has none).</summary>
    public JsonArray ToJson() => new([.. Rows.Select(r => (JsonNode)new JsonObject(Columns.Select(c => new KeyValuePair<string, JsonNode?>(c,
        _numeric.Contains(c) ? (double.Parse(r[c], NumberStyles.Float, CultureInfo.InvariantCulture) is var v && double.IsFinite(v) ? JsonValue.Create(v) : null)
            : JsonValue.Create(r[c])))))]);

    public string Html()
    {
        var sb = new StringBuilder("<table><tr>");
        foreach (var c in Columns) sb.Append($"<th>{WebUtility.HtmlEncode(c)}</th>");
        sb.Append("</tr>");
        foreach (var r in Rows)
        {
            sb.Append("<tr>");
            foreach (var c in Columns)
                sb.Append($"<td>{WebUtility.HtmlEncode(_numeric.Contains(c) && r[c].Contains('.') ? double.Parse(r[c], NumberStyles.Float, CultureInfo.InvariantCulture).ToString("G4", CultureInfo.InvariantCulture) : r[c])}</td>");
            sb.Append("</tr>");
        }
        return sb.Append("</table>").ToString();
    }
}

static class Tables
{
    /// <summary>The table <paramref name="name"/> of a run folder (.parquet or .csv, whichever the run wrote) read whole, or
    /// null when the run has none; a one-line error when it lacks one of <paramref name="required"/> or cannot be read.</summary>
    public static Table? Read(string run, string name, params string[] required)
    {
        var columns = Columns(run, name, required);
        return columns is null ? null : new Table(columns, [.. CheckedRows(run, name)]);
    }

    /// <summary>The rows of a table one at a time (a Parquet row group is read at a time), for tables too big to hold as
    /// text; every scalar column, list columns left out. Empty when the run has no such table.</summary>
    public static IEnumerable<Dictionary<string, string>> Rows(string run, string name, params string[] required)
    {
        return Columns(run, name, required) is null ? [] : CheckedRows(run, name);
    }

    /// <summary>The rows of a table whose columns were checked; a failure to read is a one-line error.</summary>
    static IEnumerable<Dictionary<string, string>> CheckedRows(string run, string name)
    {
        string parquet = Path.Combine(run, name + ".parquet"), csv = Path.Combine(run, name + ".csv");
        var rows = File.Exists(parquet) ? ParquetRows(parquet) : CsvRows(csv);
        using var e = rows.GetEnumerator();
        while (true)
        {
            try { if (!e.MoveNext()) yield break; }
            catch (Exception x) when (x is not PolyEngineException) { throw Unreadable(run, name, x); }
            yield return e.Current;
        }
    }

    /// <summary>Whether the run wrote the table (as .parquet or .csv).</summary>
    public static bool Exists(string run, string name) => File.Exists(Path.Combine(run, name + ".parquet")) || File.Exists(Path.Combine(run, name + ".csv"));

    /// <summary>The table's column names, or null when the run has no such table; checks <paramref name="required"/>.</summary>
    static List<string>? Columns(string run, string name, string[] required)
    {
        string parquet = Path.Combine(run, name + ".parquet"), csv = Path.Combine(run, name + ".csv");
        List<string> columns;
        try
        {
            if (File.Exists(parquet))
            {
                using var fs = File.OpenRead(parquet);
                var reader = ParquetReader.CreateAsync(fs).GetAwaiter().GetResult();
                try { columns = [.. reader.Schema.GetDataFields().Where(f => f.MaxRepetitionLevel == 0).Select(f => f.Name)]; }
                finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            }
            else if (File.Exists(csv))
            {
                using var r = new StreamReader(csv);
                columns = TableReader.Records(r).FirstOrDefault() ?? [];
            }
            else return null;
        }
        catch (Exception e) when (e is not PolyEngineException) { throw Unreadable(run, name, e); }
        foreach (var c in required)
            if (!columns.Contains(c))
                throw new PolyEngineException($"report: {Path.Combine(run, name)} has no column '{c}' (an older PolyEngine wrote it?); rerun the command that wrote it");
        return columns;
    }

    static PolyEngineException Unreadable(string run, string name, Exception e) =>
        new($"report: {Path.Combine(run, name)} cannot be read ({e.Message.Split('\n')[0]}); rerun the command that wrote it");

    static IEnumerable<Dictionary<string, string>> ParquetRows(string path)
    {
        using var fs = File.OpenRead(path);
        var reader = ParquetReader.CreateAsync(fs).GetAwaiter().GetResult();
        try
        {
            var fields = reader.Schema.GetDataFields().Where(f => f.MaxRepetitionLevel == 0).ToArray();
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                string[][] cells;
                int n;
                using (var rg = reader.OpenRowGroupReader(g))
                {
                    n = checked((int)rg.RowCount);
                    cells = [.. fields.Select(f => Cells(rg, f, n))];
                }
                for (int i = 0; i < n; i++)
                {
                    var row = new Dictionary<string, string>(fields.Length);
                    for (int c = 0; c < fields.Length; c++) row[fields[c].Name] = cells[c][i];
                    yield return row;
                }
            }
        }
        finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    /// <summary>A scalar column chunk as text cells (numbers in invariant round-trip form, nulls empty).</summary>
    static string[] Cells(ParquetRowGroupReader rg, DataField f, int n)
    {
        var values = ParquetColumns.Read(rg, f, n);
        var cells = new string[n];
        for (int i = 0; i < n; i++) cells[i] = values.GetValue(i) is { } v ? Text(v) : "";
        return cells;
    }

    static string Text(object v) => v switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        IFormattable x => x.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    static IEnumerable<Dictionary<string, string>> CsvRows(string path)
    {
        using var r = new StreamReader(path);
        List<string>? columns = null;
        foreach (var cells in TableReader.Records(r))
        {
            if (columns is null) { columns = cells; continue; }
            yield return columns.Select((c, k) => (c, k < cells.Count ? cells[k] : "")).ToDictionary(x => x.c, x => x.Item2);
        }
    }
}

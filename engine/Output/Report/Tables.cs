using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace PolyEngine.Output.Report;

/// <summary>A table of a run folder read back as text cells (Parquet or CSV, whichever the run wrote), for the report.</summary>
sealed class Table(IReadOnlyList<string> columns, List<Dictionary<string, string>> rows)
{
    public IReadOnlyList<string> Columns { get; } = columns;
    public List<Dictionary<string, string>> Rows { get; } = rows;

    public IEnumerable<string> Column(string name) => Rows.Select(r => r[name]);

    /// <summary>Rows as JSON objects, numbers as numbers (NaN and infinities as null: JSON has none).</summary>
    public JsonArray ToJson() => new([.. Rows.Select(r => (JsonNode)new JsonObject(Columns.Select(c => new KeyValuePair<string, JsonNode?>(c,
        double.TryParse(r[c], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? (double.IsFinite(v) ? JsonValue.Create(v) : null) : JsonValue.Create(r[c])))))]);

    public string Html()
    {
        var sb = new StringBuilder("<table><tr>");
        foreach (var c in Columns) sb.Append($"<th>{WebUtility.HtmlEncode(c)}</th>");
        sb.Append("</tr>");
        foreach (var r in Rows)
        {
            sb.Append("<tr>");
            foreach (var c in Columns)
                sb.Append($"<td>{WebUtility.HtmlEncode(double.TryParse(r[c], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && r[c].Contains('.') ? v.ToString("G4", CultureInfo.InvariantCulture) : r[c])}</td>");
            sb.Append("</tr>");
        }
        return sb.Append("</table>").ToString();
    }
}

static class Tables
{
    /// <summary>The table <paramref name="name"/> of a run folder (.parquet, read into <typeparamref name="T"/>'s columns, or
    /// .csv), or null when it has none.</summary>
    public static Table? Read<T>(string run, string name) where T : class, new()
    {
        string parquet = Path.Combine(run, name + ".parquet"), csv = Path.Combine(run, name + ".csv");
        try
        {
            if (File.Exists(parquet)) return ReadParquet<T>(parquet);
            if (File.Exists(csv)) return ReadCsv(csv);
        }
        catch (Exception e) when (e is not PolyEngineException)
        {
            throw new PolyEngineException($"report: {Path.Combine(run, name)} cannot be read ({e.Message.Split('\n')[0]}); rerun the command that wrote it");
        }
        return null;
    }

    /// <summary>The columns the report reads of each table kind (a Parquet table is read into these by name).</summary>
    public sealed class LevelColumns
    {
        [JsonPropertyName("level")] public string Level { get; set; } = "";
        [JsonPropertyName("metric")] public string Metric { get; set; } = "";
        [JsonPropertyName("cases")] public int Cases { get; set; }
        [JsonPropertyName("positive_cases")] public int PositiveCases { get; set; }
        [JsonPropertyName("fraction_positive")] public double FractionPositive { get; set; }
        [JsonPropertyName("positive_mean")] public double PositiveMean { get; set; }
        [JsonPropertyName("positive_se")] public double PositiveSe { get; set; }
        [JsonPropertyName("positive_ci95_low")] public double PositiveCi95Low { get; set; }
        [JsonPropertyName("positive_ci95_high")] public double PositiveCi95High { get; set; }
        [JsonPropertyName("mean")] public double Mean { get; set; }
        [JsonPropertyName("se")] public double Se { get; set; }
        [JsonPropertyName("ci95_low")] public double Ci95Low { get; set; }
        [JsonPropertyName("ci95_high")] public double Ci95High { get; set; }
    }

    public sealed class RegressionColumns
    {
        [JsonPropertyName("model")] public string Model { get; set; } = "";
        [JsonPropertyName("metric")] public string Metric { get; set; } = "";
        [JsonPropertyName("term")] public string Term { get; set; } = "";
        [JsonPropertyName("n")] public int N { get; set; }
        [JsonPropertyName("r_squared")] public double RSquared { get; set; }
        [JsonPropertyName("coefficient")] public double Coefficient { get; set; }
        [JsonPropertyName("se")] public double Se { get; set; }
        [JsonPropertyName("t")] public double T { get; set; }
        [JsonPropertyName("p")] public double P { get; set; }
        [JsonPropertyName("ci90_low")] public double Ci90Low { get; set; }
        [JsonPropertyName("ci90_high")] public double Ci90High { get; set; }
        [JsonPropertyName("ci95_low")] public double Ci95Low { get; set; }
        [JsonPropertyName("ci95_high")] public double Ci95High { get; set; }
        [JsonPropertyName("ci99_low")] public double Ci99Low { get; set; }
        [JsonPropertyName("ci99_high")] public double Ci99High { get; set; }
    }

    /// <summary>The neuron experiment's cases columns the report reads.</summary>
    public sealed class NeuronCaseColumns
    {
        [JsonPropertyName("bucket")] public string Bucket { get; set; } = "";
        [JsonPropertyName("neuron")] public int Neuron { get; set; }
        [JsonPropertyName("feature")] public int Feature { get; set; }
        [JsonPropertyName("baseline")] public double Baseline { get; set; }
        [JsonPropertyName("mask_max_abs_drop")] public double MaskMaxAbsDrop { get; set; }
        [JsonPropertyName("amplify_max_abs_increase")] public double AmplifyMaxAbsIncrease { get; set; }
    }

    static Table ReadParquet<T>(string path) where T : class, new()
    {
        using var fs = File.OpenRead(path);
        var data = Parquet.Serialization.ParquetSerializer.DeserializeAsync<T>(fs).GetAwaiter().GetResult().Data;
        var props = typeof(T).GetProperties();
        var columns = props.Select(p => p.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false).OfType<JsonPropertyNameAttribute>().First().Name).ToList();
        var rows = data.Select(row => props.Select((p, k) => (columns[k], Text(p.GetValue(row)))).ToDictionary(x => x.Item1, x => x.Item2)).ToList();
        return new Table(columns, rows);
    }

    static string Text(object? v) => v switch
    {
        null => "",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        IFormattable x => x.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    static Table ReadCsv(string path)
    {
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0) return new Table([], []);
        var columns = Split(lines[0]);
        var rows = lines.Skip(1).Where(l => l.Length > 0).Select(Split).Select(cells => columns.Select((c, k) => (c, k < cells.Count ? cells[k] : "")).ToDictionary(x => x.c, x => x.Item2)).ToList();
        return new Table(columns, rows);
    }

    /// <summary>One CSV line's cells (double-quoted cells may hold commas and doubled quotes).</summary>
    static List<string> Split(string line)
    {
        var cells = new List<string>();
        var cell = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char ch = line[i];
            if (quoted)
            {
                if (ch == '"' && i + 1 < line.Length && line[i + 1] == '"') { cell.Append('"'); i++; }
                else if (ch == '"') quoted = false;
                else cell.Append(ch);
            }
            else if (ch == '"') quoted = true;
            else if (ch == ',') { cells.Add(cell.ToString()); cell.Clear(); }
            else cell.Append(ch);
        }
        cells.Add(cell.ToString());
        return cells;
    }
}

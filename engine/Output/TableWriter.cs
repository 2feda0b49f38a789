using System.Globalization;
using System.Text;
using Parquet.Serialization;
using PolyEngine.Formats;

namespace PolyEngine.Output;

public enum TableFormat { Parquet, Csv }

/// <summary>
/// Writes a table of records as Parquet (default; pandas, polars, DuckDB, Spark read it) or CSV (invariant culture,
/// header row), atomically. Column names come from [JsonPropertyName], else the property name in snake_case.
/// </summary>
public static class TableWriter
{
    public static TableFormat ParseFormat(string s) => s switch
    {
        "parquet" => TableFormat.Parquet,
        "csv" => TableFormat.Csv,
        _ => throw new PolyEngineException($"--format '{s}' is unknown; choose parquet or csv"),
    };

    public static string Extension(TableFormat f) => f == TableFormat.Parquet ? ".parquet" : ".csv";

    public static void Write<T>(string path, IReadOnlyList<T> rows, TableFormat format) where T : new()
    {
        if (format == TableFormat.Parquet)
            AtomicFile.Write(path, s => ParquetSerializer.SerializeAsync(rows, s).GetAwaiter().GetResult());
        else
            AtomicFile.Write(path, s =>
            {
                using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
                var props = typeof(T).GetProperties();
                w.WriteLine(string.Join(",", props.Select(ColumnName)));
                foreach (var row in rows)
                    w.WriteLine(string.Join(",", props.Select(p => Format(p.GetValue(row)))));
            });
    }

    static string Format(object? v) => v switch
    {
        null => "",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        string s when s.Contains(',') || s.Contains('"') => "\"" + s.Replace("\"", "\"\"") + "\"",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    /// <summary>The column name: the property's [JsonPropertyName] (which Parquet.Net also uses), else its snake_case name.</summary>
    static string ColumnName(System.Reflection.PropertyInfo p) =>
        p.GetCustomAttributes(typeof(System.Text.Json.Serialization.JsonPropertyNameAttribute), false) is [System.Text.Json.Serialization.JsonPropertyNameAttribute a, ..]
            ? a.Name : SnakeCase(p.Name);

    internal static string SnakeCase(string name)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0 && !char.IsUpper(name[i - 1])) sb.Append('_');
            sb.Append(char.ToLowerInvariant(name[i]));
        }
        return sb.ToString();
    }
}

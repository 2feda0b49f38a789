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

    /// <summary>Writes row groups of columns (each group one <see cref="ColumnTable"/> with the same columns as
    /// <paramref name="schema"/>), atomically; groups are produced lazily, so a table larger than memory streams through.</summary>
    public static void WriteColumns(string path, ColumnTable schema, IEnumerable<ColumnTable> groups, TableFormat format)
    {
        if (format == TableFormat.Parquet)
            AtomicFile.Write(path, s => WriteParquet(s, schema, groups).GetAwaiter().GetResult());
        else
            AtomicFile.Write(path, s =>
            {
                using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
                w.WriteLine(string.Join(",", schema.Columns.Select(c => c.Name)));
                var line = new string[schema.Columns.Count];
                foreach (var g in groups)
                {
                    schema.CheckSameColumns(g);
                    for (int r = 0; r < g.Rows; r++)
                    {
                        for (int c = 0; c < line.Length; c++) line[c] = Format(g.Columns[c].Value(r));
                        w.WriteLine(string.Join(",", line));
                    }
                }
            });
    }

    static async Task WriteParquet(Stream s, ColumnTable schema, IEnumerable<ColumnTable> groups)
    {
        var ps = new Parquet.Schema.ParquetSchema(schema.Columns.Select(c => c.Field).ToArray());
        await using var writer = await Parquet.ParquetWriter.CreateAsync(ps, s);
        foreach (var g in groups)
        {
            schema.CheckSameColumns(g);
            if (g.Rows == 0) continue;
            using var rg = writer.CreateRowGroup();
            for (int c = 0; c < g.Columns.Count; c++) await g.Columns[c].WriteTo(rg, ps.DataFields[c]);
        }
    }

    static string Format(object? v) => v switch
    {
        null => "",
        Array a => Quote(System.Text.Json.JsonSerializer.Serialize(a, a.GetType(), ListJson)),   // list columns: a JSON array
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        string s => Quote(s),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    static readonly System.Text.Json.JsonSerializerOptions ListJson = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>A CSV field: quoted when it holds a comma, a quote or a line break (quotes doubled).</summary>
    static string Quote(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

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

/// <summary>One column of a <see cref="ColumnTable"/>: a name and a growable typed array.</summary>
public abstract class TableColumn(string name)
{
    public string Name { get; } = name;
    public abstract int Count { get; }
    internal abstract Parquet.Schema.DataField Field { get; }
    internal abstract object? Value(int row);
    internal abstract Task WriteTo(Parquet.ParquetRowGroupWriter rg, Parquet.Schema.DataField field);
}

/// <summary>A column of numbers or booleans.</summary>
public sealed class TableColumn<T>(string name) : TableColumn(name) where T : struct
{
    readonly List<T> _values = [];

    public void Add(T value) => _values.Add(value);
    public override int Count => _values.Count;
    internal override Parquet.Schema.DataField Field => new Parquet.Schema.DataField<T>(Name);
    internal override object? Value(int row) => _values[row];

    internal override Task WriteTo(Parquet.ParquetRowGroupWriter rg, Parquet.Schema.DataField field) =>
        rg.WriteAsync<T>(field, new ReadOnlyMemory<T>(_values.ToArray()), null, null, default);
}

/// <summary>A column of strings (repeated values such as SAE names cost a reference each).</summary>
public sealed class TextColumn(string name) : TableColumn(name)
{
    readonly List<string> _values = [];

    public void Add(string value) => _values.Add(value);
    public override int Count => _values.Count;
    internal override Parquet.Schema.DataField Field => new Parquet.Schema.DataField<string>(Name);
    internal override object? Value(int row) => _values[row];
    internal override Task WriteTo(Parquet.ParquetRowGroupWriter rg, Parquet.Schema.DataField field) => rg.WriteAsync(field, _values);
}

/// <summary>A table held by columns (compact for millions of rows; written by <see cref="TableWriter.WriteColumns"/>).</summary>
public sealed class ColumnTable(params TableColumn[] columns)
{
    public IReadOnlyList<TableColumn> Columns { get; } = columns;

    public int Rows => Columns.Count == 0 ? 0 : Columns[0].Count;


    internal void CheckSameColumns(ColumnTable other)
    {
        if (!other.Columns.Select(c => (c.Name, c.GetType())).SequenceEqual(Columns.Select(c => (c.Name, c.GetType()))))
            throw new ArgumentException("a row group's columns differ from the table's");
        if (other.Columns.Any(c => c.Count != other.Rows)) throw new ArgumentException("columns of a row group differ in length");
    }
}

using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Parquet.Serialization;

namespace PolyEngine.Output;

/// <summary>
/// Reads back a table <see cref="TableWriter.Write{T}"/> wrote, into the same row class: Parquet through Parquet.Net's
/// serializer, CSV by column name (quoted fields may hold commas, quotes and line breaks; list columns are JSON arrays).
/// Numbers round-trip exactly (the writer uses round-trip formats). For merging shards and other tools that rebuild a
/// run from its tables.
/// </summary>
public static class TableReader
{
    public static List<T> Read<T>(string path) where T : class, new()
    {
        try
        {
            if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
            {
                using var fs = File.OpenRead(path);
                return [.. ParquetSerializer.DeserializeAsync<T>(fs).GetAwaiter().GetResult().Data];
            }
            using var reader = new StreamReader(path, Encoding.UTF8);
            return ReadCsv<T>(reader);
        }
        catch (Exception e) when (e is not PolyEngineException)
        {
            throw new PolyEngineException($"{path}: cannot be read as a {typeof(T).Name} table ({e.Message.Split('\n')[0]}); rerun the command that wrote it");
        }
    }

    static List<T> ReadCsv<T>(TextReader text) where T : new()
    {
        var records = Records(text).ToList();
        if (records.Count == 0) return [];
        var header = records[0];
        var props = typeof(T).GetProperties().ToDictionary(Name);
        var columns = header.Select(h => props.GetValueOrDefault(h)).ToArray();
        foreach (var p in props)
            if (!header.Contains(p.Key)) throw new PolyEngineException($"no column '{p.Key}'");
        var rows = new List<T>(records.Count - 1);
        foreach (var cells in records.Skip(1))
        {
            var row = new T();
            for (int c = 0; c < columns.Length && c < cells.Count; c++)
                if (columns[c] is { } p) p.SetValue(row, Parse(cells[c], p.PropertyType));
            rows.Add(row);
        }
        return rows;
    }

    static string Name(PropertyInfo p) => p.GetCustomAttribute<System.Text.Json.Serialization.JsonPropertyNameAttribute>()?.Name ?? p.Name;

    static object? Parse(string cell, Type t)
    {
        var inv = CultureInfo.InvariantCulture;
        if (t == typeof(string)) return cell;
        if (t.IsArray) return JsonSerializer.Deserialize(cell, t, new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals });
        if (t == typeof(int)) return int.Parse(cell, inv);
        if (t == typeof(long)) return long.Parse(cell, inv);
        if (t == typeof(double)) return double.Parse(cell, NumberStyles.Float, inv);
        if (t == typeof(float)) return float.Parse(cell, NumberStyles.Float, inv);
        if (t == typeof(bool)) return bool.Parse(cell);
        throw new NotSupportedException($"a {t.Name} column");
    }

    /// <summary>A CSV's records, streamed: fields split at commas outside quotes, records at line breaks outside quotes
    /// (a doubled quote inside quotes is one quote); empty lines are skipped.</summary>
    internal static IEnumerable<List<string>> Records(TextReader text) => RecordsWithText(text).Select(r => r.Fields);

    /// <summary><see cref="Records"/>, each with its text as written (without the line break), for rewriting records
    /// unchanged.</summary>
    internal static IEnumerable<(List<string> Fields, string Text)> RecordsWithText(TextReader text)
    {
        var record = new List<string>();
        var field = new StringBuilder();
        var raw = new StringBuilder();
        bool quoted = false, any = false;
        for (int c; (c = text.Read()) >= 0;)
        {
            char ch = (char)c;
            if (quoted || ch is not ('\n' or '\r')) raw.Append(ch);
            if (quoted)
            {
                if (ch == '"' && text.Peek() == '"') { field.Append('"'); raw.Append((char)text.Read()); }
                else if (ch == '"') quoted = false;
                else field.Append(ch);
            }
            else if (ch == '"') { quoted = true; any = true; }
            else if (ch == ',') { record.Add(field.ToString()); field.Clear(); any = true; }
            else if (ch is '\n' or '\r')
            {
                if (ch == '\r' && text.Peek() == '\n') text.Read();
                if (!any && field.Length == 0) continue;   // an empty line
                record.Add(field.ToString());
                field.Clear();
                yield return (record, raw.ToString());
                record = [];
                raw.Clear();
                any = false;
            }
            else { field.Append(ch); any = true; }
        }
        if (any || field.Length > 0) { record.Add(field.ToString()); yield return (record, raw.ToString()); }
    }
}

using System.Globalization;
using System.Text;
using Parquet;
using Parquet.Schema;

namespace PolyEngine.Output;

/// <summary>
/// The tables of a run's shards as one table, rows ordered by an integer key column as the single run orders them (a
/// key's rows all come from one shard, kept in its order; ties across shards in shard order), written in row groups of
/// the single run's size, so the bytes are the single run's. Parquet tables of scalar columns are rewritten column by
/// column; CSV tables line by line.
/// </summary>
public static class TableConcat
{
    public static void Write(IReadOnlyList<string> sources, string dest, string key, int groupRows, TableFormat format)
    {
        if (format == TableFormat.Csv) { Csv(sources, dest, key); return; }
        DataField[]? fields = null;
        var parts = new List<Array[]>();   // per source row group: its columns
        var order = new List<(long Key, int Part, int Row)>();
        foreach (var path in sources)
        {
            using var fs = File.OpenRead(path);
            var reader = ParquetReader.CreateAsync(fs).GetAwaiter().GetResult();
            try
            {
                var f = reader.Schema.GetDataFields();
                if (f.Any(x => x.MaxRepetitionLevel > 0)) throw new PolyEngineException($"{path}: a table with list columns cannot be concatenated");
                if (fields is not null && !f.Select(x => (x.Name, x.ClrType)).SequenceEqual(fields.Select(x => (x.Name, x.ClrType))))
                    throw new PolyEngineException($"{path}: its columns differ from {sources[0]}'s; the shards are of different runs");
                fields ??= f;
                int k = Array.FindIndex(f, x => x.Name == key);
                if (k < 0) throw new PolyEngineException($"{path}: no column '{key}'");
                for (int g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    int n = checked((int)rg.RowCount);
                    var columns = f.Select(x => ParquetColumns.Read(rg, x, n)).ToArray();
                    for (int r = 0; r < n; r++) order.Add((Convert.ToInt64(columns[k].GetValue(r), CultureInfo.InvariantCulture), parts.Count, r));
                    parts.Add(columns);
                }
            }
            finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
        }
        if (fields is null) throw new PolyEngineException("no tables to concatenate");
        var sorted = order.OrderBy(x => x.Key).ThenBy(x => x.Part).ThenBy(x => x.Row).ToList();
        ColumnTable Empty() => new([.. fields.Select(ParquetColumns.NewColumn)]);
        IEnumerable<ColumnTable> Groups()
        {
            for (int start = 0; start < sorted.Count; start += groupRows)
            {
                var t = Empty();
                foreach (var (_, part, row) in sorted.Skip(start).Take(groupRows))
                    for (int c = 0; c < fields.Length; c++) ParquetColumns.Add(t.Columns[c], parts[part][c], row);
                yield return t;
            }
        }
        TableWriter.WriteColumns(dest, Empty(), Groups(), TableFormat.Parquet);
    }

    /// <summary>CSV: the header once, then every record in key order (records may hold quoted line breaks).</summary>
    static void Csv(IReadOnlyList<string> sources, string dest, string key)
    {
        string? header = null;
        var records = new List<(long Key, int Source, int Row, string Text)>();
        for (int s = 0; s < sources.Count; s++)
        {
            using var reader = new StreamReader(sources[s], Encoding.UTF8);
            int k = -1, row = 0;
            foreach (var (fields, text) in TableReader.RecordsWithText(reader))
            {
                if (row++ == 0)
                {
                    if (header is not null && text != header) throw new PolyEngineException($"{sources[s]}: its columns differ from {sources[0]}'s; the shards are of different runs");
                    header ??= text;
                    k = fields.IndexOf(key);
                    if (k < 0) throw new PolyEngineException($"{sources[s]}: no column '{key}'");
                    continue;
                }
                records.Add((long.Parse(fields[k], CultureInfo.InvariantCulture), s, row, text));
            }
        }
        if (header is null) throw new PolyEngineException("no tables to concatenate");
        Formats.AtomicFile.WriteText(dest, header + "\n" + string.Concat(records.OrderBy(x => x.Key).ThenBy(x => x.Source).ThenBy(x => x.Row).Select(x => x.Text + "\n")));
    }
}

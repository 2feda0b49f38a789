using Parquet;
using Parquet.Schema;

namespace PolyEngine.Output;

/// <summary>
/// A Parquet table also written as a hive-partitioned dataset, <c>{table}/{column}={value}/part-{k}.parquet</c> (the
/// partition column left out of the files, as hive layouts do), which DuckDB (<c>read_parquet('t/*/*.parquet',
/// hive_partitioning = true)</c>), Spark and polars read as one table. Rows are read a row group at a time; each run of
/// one value within a row group becomes a part, so memory holds one row group, and a value that goes on (or comes back)
/// gets its next part number.
/// Only tables of scalar columns are partitioned (list columns are left to the single file).
/// </summary>
public static class HivePartition
{
    /// <summary>Writes the partitions of <paramref name="parquet"/> by <paramref name="column"/> under
    /// <paramref name="dir"/>/{table}/ (replacing what was there); returns the files written, relative to
    /// <paramref name="dir"/>, or none when the table has list columns or no such column.</summary>
    public static IReadOnlyList<string> Write(string parquet, string dir, string column)
    {
        string table = Path.GetFileNameWithoutExtension(parquet), root = Path.Combine(dir, table);
        using var fs = File.OpenRead(parquet);
        var reader = ParquetReader.CreateAsync(fs).GetAwaiter().GetResult();
        try
        {
            var fields = reader.Schema.GetDataFields();
            if (fields.Any(f => f.MaxRepetitionLevel > 0 || (f.IsNullable && f.ClrType != typeof(string) && f.ClrType != typeof(ReadOnlyMemory<char>))) ||
                fields.All(f => f.Name != column))
                return [];
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
            var written = new List<string>();
            var parts = new Dictionary<string, int>();
            ColumnTable? current = null;
            string? value = null;
            void Flush()
            {
                if (current is null || current.Rows == 0) return;
                int k = parts.GetValueOrDefault(value!);
                parts[value!] = k + 1;
                string rel = Path.Combine(table, $"{column}={Uri.EscapeDataString(value!)}", $"part-{k}.parquet");
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(dir, rel))!);
                TableWriter.WriteColumns(Path.Combine(dir, rel), Empty(fields, column), [current], TableFormat.Parquet);
                written.Add(rel);
                current = null;
            }
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var rg = reader.OpenRowGroupReader(g);
                int n = checked((int)rg.RowCount);
                var columns = fields.Select(f => ParquetColumns.Read(rg, f, n)).ToArray();
                var keys = (string[])columns[Array.FindIndex(fields, f => f.Name == column)];
                for (int r = 0; r < n; r++)
                {
                    if (keys[r] != value) { Flush(); value = keys[r]; }
                    current ??= Empty(fields, column);
                    for (int c = 0, o = 0; c < fields.Length; c++)
                        if (fields[c].Name != column) ParquetColumns.Add(current.Columns[o++], columns[c], r);
                }
                Flush();   // a part per row group at most: memory holds one row group, and a value that goes on gets its next part
            }
            Flush();
            return written;
        }
        finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    static ColumnTable Empty(DataField[] fields, string column) => new([.. fields.Where(f => f.Name != column).Select(ParquetColumns.NewColumn)]);
}

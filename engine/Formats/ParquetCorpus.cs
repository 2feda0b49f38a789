using System.Numerics;
using Parquet;
using Parquet.Schema;

namespace PolyEngine.Formats;

/// <summary>
/// A Parquet corpus, as HuggingFace <c>datasets</c> (and pandas, polars, DuckDB) export one: one document per row, from a
/// string column <c>text</c>, or else from a list-of-integers column of token ids (<c>input_ids</c>, <c>tokens</c>,
/// <c>token_ids</c> or <c>ids</c>; or the only such column). Read one row group at a time; null or empty rows are skipped.
/// </summary>
static class ParquetCorpus
{
    static readonly string[] IdColumns = ["input_ids", "tokens", "token_ids", "ids"];

    /// <summary>The documents of <paramref name="file"/>: (tokens, document index in the file, start and end as fractions of the file).</summary>
    /// <param name="tokenizer">Asked for only when the file has a text column.</param>
    public static IEnumerable<(int[] Tokens, long Document, double Start, double End)> Read(string file, Func<ITextTokenizer> tokenizer)
    {
        using var stream = File.OpenRead(file);
        ParquetReader reader;
        try { reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult(); }
        catch (Exception e) when (Unreadable(e))
        {
            throw new PolyEngineException($"--corpus {file}: not a readable Parquet file ({e.Message.Split('\n')[0]})");
        }
        try
        {
            var (field, text) = Column(file, reader.Schema);
            var tok = text ? tokenizer() : null;
            long total = Math.Max(1, reader.Metadata?.NumRows ?? 1), row = 0, doc = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                List<string?>? texts = null;
                List<int[]>? ids = null;
                try
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    if (text) texts = ReadText(rg, field);
                    else ids = ReadIds(file, rg, field);
                }
                catch (Exception e) when (Unreadable(e))
                {
                    throw new PolyEngineException($"--corpus {file}: row group {g} cannot be read ({e.Message.Split('\n')[0]}); the file is damaged");
                }
                var rows = ids ?? texts!.Select(t => t is null or "" ? [] : tok!.Encode(t)).ToList();   // the tokenizer's errors are its own
                foreach (var tokens in rows)
                {
                    double start = row / (double)total;
                    row++;
                    if (tokens.Length > 0) yield return (tokens, doc++, start, Math.Min(1, row / (double)total));
                }
            }
        }
        finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    /// <summary>A column chunk's values with their definition and repetition levels (empty when the column has none).</summary>
    static (T[] Values, int[] Def, int[] Rep) Raw<T>(ParquetRowGroupReader rg, DataField field) where T : struct
    {
        int n = checked((int)rg.GetMetadata(field)!.MetaData!.NumValues);
        var values = new T[n];
        var def = field.MaxDefinitionLevel > 0 ? new int[n] : [];
        var rep = field.MaxRepetitionLevel > 0 ? new int[n] : [];
        rg.ReadRawAsync<T>(field, values, def.Length > 0 ? def : null, rep.Length > 0 ? rep : null).AsTask().GetAwaiter().GetResult();
        return (values, def, rep);
    }

    /// <summary>What a damaged or foreign file throws while being decoded (a bug elsewhere is not caught here).</summary>
    static bool Unreadable(Exception e) => e is IOException or InvalidDataException or NotSupportedException or Parquet.ParquetException
        or ArgumentException or IndexOutOfRangeException or OverflowException or InvalidOperationException;

    /// <summary>The column to read: <c>text</c> (string), else a token-id list column; a one-line error listing the columns otherwise.</summary>
    static (DataField Field, bool Text) Column(string file, ParquetSchema schema)
    {
        var fields = schema.GetDataFields();
        if (fields.FirstOrDefault(f => f.Path.FirstPart == "text" && f.MaxRepetitionLevel == 0) is { } textField)
            return textField.ClrType == typeof(string) || textField.ClrType == typeof(ReadOnlyMemory<char>) ? (textField, true)
                : throw new PolyEngineException($"--corpus {file}: column 'text' holds {textField.ClrType.Name}, not strings");
        var lists = fields.Where(f => f.MaxRepetitionLevel == 1 && IsInteger(f.ClrType)).ToList();
        var named = lists.FirstOrDefault(f => IdColumns.Contains(f.Path.FirstPart));
        if (named is not null) return (named, false);
        if (lists.Count == 1) return (lists[0], false);
        throw new PolyEngineException($"--corpus {file}: no 'text' column and no single list-of-integers column of token ids " +
            $"(columns: {string.Join(", ", fields.Select(f => f.Path.FirstPart).Distinct())}); name the text column 'text' or the ids column 'input_ids'");
    }

    static bool IsInteger(Type t) => t == typeof(int) || t == typeof(long) || t == typeof(uint) || t == typeof(ulong) || t == typeof(short)
        || t == typeof(ushort) || t == typeof(byte) || t == typeof(sbyte);

    static List<string?> ReadText(ParquetRowGroupReader rg, DataField field)
    {
        var values = new string[checked((int)rg.RowCount)];   // one per row; null rows read as null
        rg.ReadAsync(field, values, null).AsTask().GetAwaiter().GetResult();
        return [.. values];
    }

    static List<int[]> ReadIds(string file, ParquetRowGroupReader rg, DataField field)
    {
        var t = field.ClrType;
        return t == typeof(int) ? ReadIds<int>(file, rg, field) : t == typeof(long) ? ReadIds<long>(file, rg, field)
            : t == typeof(uint) ? ReadIds<uint>(file, rg, field) : t == typeof(ulong) ? ReadIds<ulong>(file, rg, field)
            : t == typeof(short) ? ReadIds<short>(file, rg, field) : t == typeof(ushort) ? ReadIds<ushort>(file, rg, field)
            : t == typeof(byte) ? ReadIds<byte>(file, rg, field) : ReadIds<sbyte>(file, rg, field);
    }

    /// <summary>Rows of a list column from its levels: repetition 0 starts a row; definition = max is a value, max − 1 on a
    /// nullable element of a LIST is a null element (an error), anything lower an empty or null list.</summary>
    static List<int[]> ReadIds<T>(string file, ParquetRowGroupReader rg, DataField field) where T : struct, IBinaryInteger<T>
    {
        var (values, def, rep) = Raw<T>(rg, field);
        var rows = new List<int[]>((int)rg.RowCount);
        var current = new List<int>();
        int maxDef = field.MaxDefinitionLevel, v = 0;
        for (int i = 0; i < rep.Length; i++)
        {
            if (rep[i] == 0 && i > 0) { rows.Add([.. current]); current.Clear(); }
            int d = def.Length == 0 ? maxDef : def[i];
            if (d == maxDef)
            {
                var value = values[v++];
                long id = long.CreateSaturating(value);
                if (id < 0 || id > int.MaxValue) throw new PolyEngineException($"--corpus {file}: column '{field.Path.FirstPart}' holds {value}, which is not a valid token id");
                current.Add((int)id);
            }
            // Only the element of a three-level LIST can be null; a legacy repeated field's level below max is an empty row.
            else if (field.IsNullable && !field.IsArray && d == maxDef - 1)
                throw new PolyEngineException($"--corpus {file}: column '{field.Path.FirstPart}' holds a null token id; drop or fill the nulls");
        }
        if (rep.Length > 0) rows.Add([.. current]);
        return rows;
    }
}

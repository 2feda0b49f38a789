using DuckDB.NET.Data;
using PolyEngine.Formats;
using PolyEngine.Tokenization;
using Xunit;

namespace PolyEngine.Tests.Formats;

/// <summary>
/// Corpora as researchers have them: numpy's and torch's int64 token arrays, 2-D [n, ctx] arrays (one document per row),
/// and Parquet exports with a text column or a list-of-token-ids column, written here by DuckDB (an independent
/// Parquet writer, as pyarrow is for HF datasets) with several row groups, nulls and empty rows.
/// </summary>
public class CorpusTests
{
    /// <summary>A .npy file: header dict padded to 64 bytes, then the little-endian data.</summary>
    internal static void WriteNpy(string path, string descr, long[] shape, byte[] data)
    {
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}";
        dict = dict.PadRight(64 * ((10 + dict.Length + 1 + 63) / 64) - 10 - 1) + "\n";
        var header = new List<byte> { 0x93 };
        header.AddRange("NUMPY"u8.ToArray());
        header.AddRange([1, 0, (byte)(dict.Length & 0xff), (byte)(dict.Length >> 8)]);
        header.AddRange(System.Text.Encoding.ASCII.GetBytes(dict));
        File.WriteAllBytes(path, [.. header, .. data]);
    }

    static void Sql(string sql)
    {
        using var db = new DuckDBConnection("DataSource=:memory:");
        db.Open();
        using var cmd = db.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    [Fact]
    public void Int64AndTwoDimensionalNpyFilesRead()
    {
        using var dir = new Fixtures.TempDir();
        long[] ids = [5, 0, 50256, 7, 9, 11];
        WriteNpy(dir.File("i8.npy"), "<i8", [6], ids.SelectMany(BitConverter.GetBytes).ToArray());
        Assert.Equal(ids.Select(i => (int)i), Corpus.ReadTokens(dir.File("i8.npy")));
        // [3, 2]: three documents of two tokens, windows never cross rows
        WriteNpy(dir.File("rows.npy"), "<i8", [3, 2], ids.SelectMany(BitConverter.GetBytes).ToArray());
        var corpus = Corpus.Open(dir.File("rows.npy"), null);
        Assert.Equal([[5, 0], [50256, 7], [9, 11]], corpus.Documents().ToList());
        Assert.Equal([(0L, 0L), (1, 0), (2, 0)], corpus.Windows(8, null).Select(w => (w.Document, w.Offset)));
        Assert.Equal(6L, corpus.KnownTokens);
        WriteNpy(dir.File("u2rows.npy"), "<u2", [2, 3], new ushort[] { 1, 2, 3, 4, 5, 6 }.SelectMany(BitConverter.GetBytes).ToArray());
        Assert.Equal([[1, 2, 3], [4, 5, 6]], Corpus.Open(dir.File("u2rows.npy"), null).Documents().ToList());
        // int32 from torch: negative ids are named as they are
        WriteNpy(dir.File("neg.npy"), "<i4", [2], new[] { 3, -1 }.SelectMany(BitConverter.GetBytes).ToArray());
        Assert.Contains("token 1 = -1 is not a valid token id", Assert.Throws<PolyEngineException>(() => Corpus.ReadTokens(dir.File("neg.npy"))).Message);
        // a header whose shape disagrees with the data
        WriteNpy(dir.File("short.npy"), "<i8", [7], ids.SelectMany(BitConverter.GetBytes).ToArray());
        Assert.Contains("truncated or corrupt", Assert.Throws<PolyEngineException>(() => Corpus.ReadTokens(dir.File("short.npy"))).Message);
        WriteNpy(dir.File("f.npy"), "<f4", [1], new byte[4]);
        Assert.Contains("dtype '<f4' is not supported", Assert.Throws<PolyEngineException>(() => Corpus.ReadTokens(dir.File("f.npy"))).Message);
        WriteNpy(dir.File("3d.npy"), "<i8", [1, 1, 1], new byte[8]);
        Assert.Contains("1-D (one document) or 2-D", Assert.Throws<PolyEngineException>(() => Corpus.ReadTokens(dir.File("3d.npy"))).Message);
    }

    [Fact]
    public void ParquetTextColumnsReadOneDocumentPerRow()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("c.parquet");
        Sql($"COPY (SELECT * FROM (VALUES (1, 'Hello world'), (2, NULL), (3, ''), (4, 'The dog'), (5, 'a, b')) t(id, text) ORDER BY id) " +
            $"TO '{path}' (FORMAT PARQUET, ROW_GROUP_SIZE 2)");
        var tok = ModelTokenizer.Gpt2();
        var docs = Corpus.Open(path, () => tok).Documents().ToList();
        Assert.Equal([tok.Encode("Hello world"), tok.Encode("The dog"), tok.Encode("a, b")], docs);
        var windows = Corpus.Open(path, () => tok).Windows(64, null).ToList();
        Assert.Equal([0L, 1, 2], windows.Select(w => w.Document));
        Assert.Equal(1.0, windows[^1].Progress, 6);
        Assert.True(windows[0].Progress < windows[1].Progress);
        Assert.Contains("needs the model's tokenizer", Assert.Throws<PolyEngineException>(() => Corpus.Open(path, null).Documents().ToList()).Message);
    }

    [Fact]
    public void ParquetTokenIdColumnsReadAsTheyAre()
    {
        using var dir = new Fixtures.TempDir();
        string i64 = dir.File("i64.parquet"), i32 = dir.File("i32.parquet"), only = dir.File("only.parquet");
        Sql($"COPY (SELECT * FROM (VALUES (1, [5, 6, 7]), (2, []), (3, NULL), (4, [50256]), (5, [1, 2])) t(n, input_ids) ORDER BY n) " +
            $"TO '{i64}' (FORMAT PARQUET, ROW_GROUP_SIZE 2)");
        Assert.Equal([[5, 6, 7], [50256], [1, 2]], Corpus.Open(i64, null).Documents().ToList());
        Sql($"COPY (SELECT 'x' AS title, [1, 2, 3]::INTEGER[] AS tokens UNION ALL SELECT 'y', [4]::INTEGER[]) TO '{i32}' (FORMAT PARQUET)");
        Assert.Equal([[1, 2, 3], [4]], Corpus.Open(i32, null).Documents().ToList());
        Sql($"COPY (SELECT [9, 8]::USMALLINT[] AS whatever) TO '{only}' (FORMAT PARQUET)");   // the only list-of-integers column
        Assert.Equal([[9, 8]], Corpus.Open(only, null).Documents().ToList());

        string nullId = dir.File("null.parquet"), none = dir.File("none.parquet"), neg = dir.File("neg.parquet");
        Sql($"COPY (SELECT [1, NULL, 3] AS input_ids) TO '{nullId}' (FORMAT PARQUET)");
        Assert.Contains("null token id", Assert.Throws<PolyEngineException>(() => Corpus.Open(nullId, null).Documents().ToList()).Message);
        Sql($"COPY (SELECT 1 AS a, 'b' AS b) TO '{none}' (FORMAT PARQUET)");
        var e = Assert.Throws<PolyEngineException>(() => Corpus.Open(none, null).Documents().ToList());
        Assert.Contains("columns: a, b", e.Message);
        Sql($"COPY (SELECT [3, -2] AS input_ids) TO '{neg}' (FORMAT PARQUET)");
        Assert.Contains("-2, which is not a valid token id", Assert.Throws<PolyEngineException>(() => Corpus.Open(neg, null).Documents().ToList()).Message);
        File.WriteAllText(dir.File("bad.parquet"), "not parquet");
        Assert.Contains("not a readable Parquet file", Assert.Throws<PolyEngineException>(() => Corpus.Open(dir.File("bad.parquet"), null).Documents().ToList()).Message);
    }

    /// <summary>Pretokenized rows that already start with BOS (as SAELens datasets are saved) keep it: with BOS on, a row of
    /// ctx tokens is one window of ctx tokens, not BOS BOS … plus a two-token tail.</summary>
    [Fact]
    public void RowsThatStartWithBosKeepIt()
    {
        using var dir = new Fixtures.TempDir();
        long[] rows = [99, 1, 2, 3, 99, 4, 5, 6, 7, 8, 9, 10];   // [3, 4]: rows 0 and 1 start with BOS 99, row 2 does not
        WriteNpy(dir.File("rows.npy"), "<i8", [3, 4], rows.SelectMany(BitConverter.GetBytes).ToArray());
        var windows = Corpus.Open(dir.File("rows.npy"), null).Windows(4, 99).ToList();
        Assert.Equal([[99, 1, 2, 3], [99, 4, 5, 6], [99, 7, 8, 9], [99, 10]], windows.Select(w => w.Tokens));
        Assert.Equal([(0L, 1L), (1, 1), (2, 0), (2, 3)], windows.Select(w => (w.Document, w.Offset)));   // offset of the first corpus token
        Assert.Equal([[99, 1, 2, 3], [99, 4, 5, 6], [7, 8, 9, 10]], Corpus.Open(dir.File("rows.npy"), null).Windows(4, null).Select(w => w.Tokens));   // BOS off: as stored
    }

    [Fact]
    public async Task LegacyRepeatedParquetFieldsReadEmptyRowsAsEmpty()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("legacy.parquet");
        var field = new Parquet.Schema.DataField("ids", typeof(int), isNullable: false, isArray: true);   // `repeated int32 ids`: a two-level list
        var schema = new Parquet.Schema.ParquetSchema(field);
        await using (var fs = File.Create(path))
        {
            await using var writer = await Parquet.ParquetWriter.CreateAsync(schema, fs);
            using var rg = writer.CreateRowGroup();
            // rows [5, 6], [], [7]: values, definition levels (1 = a value, 0 = an empty row), repetition levels
            await rg.WriteAllPartsAsync<int>(field, new ReadOnlyMemory<int>([5, 6, 7]), new ReadOnlyMemory<int>([1, 1, 0, 1]), new ReadOnlyMemory<int>([0, 1, 0, 0]), default);
            rg.CompleteValidate();
        }
        Assert.Equal([[5, 6], [7]], Corpus.Open(path, null).Documents().ToList());
    }

    [Fact]
    public void JsonlWithAByteOrderMarkReads()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("c.jsonl"), [0xEF, 0xBB, 0xBF, .. "{\"text\": \"a,b\"}\n"u8.ToArray()]);
        Assert.Equal([[64, 11, 65]], Corpus.Open(dir.File("c.jsonl"), () => ModelTokenizer.Gpt2()).Documents().ToList());
    }

    [Fact]
    public void JsonlWithInvalidUtf8NamesTheLine()
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllBytes(dir.File("c.jsonl"), [.. "{\"text\": \"ok\"}\n{\"text\": \"b"u8.ToArray(), 0xff, .. "\"}\n"u8.ToArray()]);
        var e = Assert.Throws<PolyEngineException>(() => Corpus.Open(dir.File("c.jsonl"), () => ModelTokenizer.Gpt2()).Documents().ToList());
        Assert.Contains("c.jsonl:2: not valid UTF-8", e.Message);
    }
}

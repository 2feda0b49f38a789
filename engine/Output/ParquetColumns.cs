using Parquet;
using Parquet.Schema;

namespace PolyEngine.Output;

/// <summary>Scalar Parquet columns read into typed arrays and appended to <see cref="TableColumn"/>s: what rewriting a
/// table's rows (partitioning, reordering) needs. Strings, 32/64-bit integers and floats, and booleans.</summary>
static class ParquetColumns
{
    public static TableColumn NewColumn(DataField f)
    {
        var t = f.ClrType;
        return t == typeof(string) || t == typeof(ReadOnlyMemory<char>) ? new TextColumn(f.Name) : t == typeof(int) ? new TableColumn<int>(f.Name)
            : t == typeof(long) ? new TableColumn<long>(f.Name) : t == typeof(float) ? new TableColumn<float>(f.Name) : t == typeof(double) ? new TableColumn<double>(f.Name)
            : t == typeof(bool) ? new TableColumn<bool>(f.Name) : throw new NotSupportedException($"column '{f.Name}' holds {t.Name}");
    }

    public static Array Read(ParquetRowGroupReader rg, DataField f, int n)
    {
        var t = f.ClrType;
        if (t == typeof(string) || t == typeof(ReadOnlyMemory<char>))
        {
            var s = new string[n];
            rg.ReadAsync(f, s, null).AsTask().GetAwaiter().GetResult();
            return s;
        }
        return t == typeof(int) ? Of<int>(rg, f, n) : t == typeof(long) ? Of<long>(rg, f, n) : t == typeof(float) ? Of<float>(rg, f, n)
            : t == typeof(double) ? Of<double>(rg, f, n) : t == typeof(bool) ? Of<bool>(rg, f, n) : throw new NotSupportedException($"column '{f.Name}' holds {t.Name}");
    }

    static T[] Of<T>(ParquetRowGroupReader rg, DataField f, int n) where T : struct
    {
        var v = new T[n];
        rg.ReadAsync(f, v.AsMemory(), null).AsTask().GetAwaiter().GetResult();
        return v;
    }

    public static void Add(TableColumn column, Array values, int r)
    {
        switch (column)
        {
            case TextColumn t: t.Add(((string[])values)[r]); break;
            case TableColumn<int> i: i.Add(((int[])values)[r]); break;
            case TableColumn<long> l: l.Add(((long[])values)[r]); break;
            case TableColumn<float> f: f.Add(((float[])values)[r]); break;
            case TableColumn<double> d: d.Add(((double[])values)[r]); break;
            case TableColumn<bool> b: b.Add(((bool[])values)[r]); break;
        }
    }
}

using Parquet;
using Parquet.Schema;

namespace PolyEngine.Output;

/// <summary>Scalar Parquet columns read into typed arrays (<see cref="Read"/>: strings, booleans, integers and floats, a
/// nullable column as T?[]), and appended to <see cref="TableColumn"/>s: what rewriting a table's rows (partitioning,
/// reordering: the writers' own types, never nullable) and reading a run's tables as text (the report) need.</summary>
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
        var t = Nullable.GetUnderlyingType(f.ClrType) ?? f.ClrType;
        if (t == typeof(string) || t == typeof(ReadOnlyMemory<char>))
        {
            var s = new string[n];
            rg.ReadAsync(f, s, null).AsTask().GetAwaiter().GetResult();
            return s;
        }
        return t == typeof(int) ? Of<int>(rg, f, n) : t == typeof(long) ? Of<long>(rg, f, n) : t == typeof(float) ? Of<float>(rg, f, n)
            : t == typeof(double) ? Of<double>(rg, f, n) : t == typeof(bool) ? Of<bool>(rg, f, n) : t == typeof(short) ? Of<short>(rg, f, n)
            : t == typeof(byte) ? Of<byte>(rg, f, n) : t == typeof(uint) ? Of<uint>(rg, f, n) : t == typeof(ulong) ? Of<ulong>(rg, f, n)
            : throw new NotSupportedException($"column '{f.Name}' holds {t.Name}");
    }

    static Array Of<T>(ParquetRowGroupReader rg, DataField f, int n) where T : struct
    {
        if (f.IsNullable)
        {
            var nullable = new T?[n];
            rg.ReadAsync(f, nullable.AsMemory(), null).AsTask().GetAwaiter().GetResult();
            return nullable;
        }
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

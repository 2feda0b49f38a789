namespace PolyEngine;

/// <summary>A dense float32 host tensor, row-major.</summary>
public sealed class Tensor
{
    public Tensor(float[] data, params long[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != data.LongLength) throw new ArgumentException($"shape [{string.Join(", ", shape)}] holds {count} values, data has {data.LongLength}");
        Data = data;
        Shape = shape;
    }

    public float[] Data { get; }
    public long[] Shape { get; }

    /// <summary>The element at <paramref name="index"/> (one index per dimension, e.g. <c>t[0, 5, 17]</c>), bounds-checked.</summary>
    public float this[params ReadOnlySpan<long> index]
    {
        get => Data[Offset(index)];
        set => Data[Offset(index)] = value;
    }

    /// <summary>The row-major offset of <paramref name="index"/>; a clear error for a wrong rank or an index out of range.</summary>
    public long Offset(params ReadOnlySpan<long> index)
    {
        if (index.Length != Shape.Length)
            throw new ArgumentException($"Tensor{ShapeText} takes {Shape.Length} indices, got {index.Length}", nameof(index));
        long offset = 0;
        for (int i = 0; i < index.Length; i++)
        {
            long k = index[i] < 0 ? index[i] + Shape[i] : index[i];   // negative counts from the end, as in numpy
            if ((ulong)k >= (ulong)Shape[i])
                throw new IndexOutOfRangeException($"index {index[i]} is out of range for dimension {i} of Tensor{ShapeText}");
            offset = offset * Shape[i] + k;
        }
        return offset;
    }
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
    public override string ToString() => $"Tensor{ShapeText}";
}

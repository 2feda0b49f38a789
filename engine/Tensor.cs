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
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
    public override string ToString() => $"Tensor{ShapeText}";
}

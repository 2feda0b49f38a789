using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

/// <summary>The in-place hook edit (<see cref="RowEdit"/>) on host rows, and its scalar reference.</summary>
public static class RowEdits
{
    /// <summary>x [batch, seq, width] edited in place; mul/add as <see cref="RowEdit"/> describes (empty: absent).</summary>
    public static void Apply(float[] x, int batch, int seq, int width, ReadOnlySpan<float> mul, ReadOnlySpan<float> add, bool perPosition,
        ReadOnlySpan<int> from)
    {
        for (int b = 0; b < batch; b++)
            for (int t = Math.Max(0, from[b]); t < seq; t++)
            {
                var row = x.AsSpan((b * seq + t) * width, width);
                int e = (perPosition ? b * seq + t : b) * width;
                if (!mul.IsEmpty) TensorPrimitives.Multiply(row, mul.Slice(e, width), row);
                if (!add.IsEmpty) TensorPrimitives.Add(row, add.Slice(e, width), row);
            }
    }

    /// <summary>Scalar reference of <see cref="Apply"/>: a new array, element by element.</summary>
    public static float[] Reference(float[] x, int batch, int seq, int width, float[]? mul, float[]? add, bool perPosition, int[] from)
    {
        var y = (float[])x.Clone();
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seq; t++)
                for (int c = 0; c < width; c++)
                {
                    if (t < from[b]) continue;
                    int i = (b * seq + t) * width + c, e = (perPosition ? b * seq + t : b) * width + c;
                    y[i] = y[i] * (mul?[e] ?? 1f) + (add?[e] ?? 0f);
                }
        return y;
    }
}

namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar references of the row family: the affine hook edit, gathers and column copies, element by element.</summary>
public static class RowsReference
{
    /// <summary>x [batch, seq, width] edited as <see cref="RowEdit"/> describes, into a new array.</summary>
    public static float[] Edit(float[] x, int batch, int seq, int width, float[]? mul, float[]? add, bool perPosition, int[] from)
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

    /// <summary>y[r, :] = table[ids[r], :].</summary>
    public static float[] Gather(int[] ids, float[] table, int d)
    {
        var y = new float[ids.Length * d];
        for (int r = 0; r < ids.Length; r++)
            for (int i = 0; i < d; i++) y[r * d + i] = table[ids[r] * d + i];
        return y;
    }

    /// <summary>dst [rows, dstWidth] with columns [dstOffset, dstOffset + width) replaced by columns [colOffset, colOffset +
    /// width) of src [rows, srcWidth], into a new array.</summary>
    public static float[] CopyColumns(float[] src, int rows, int srcWidth, int colOffset, int width, float[] dst, int dstWidth, int dstOffset)
    {
        var y = (float[])dst.Clone();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < width; c++) y[r * dstWidth + dstOffset + c] = src[r * srcWidth + colOffset + c];
        return y;
    }

    /// <summary>Columns [colOffset, colOffset + width) of src [rows, srcWidth].</summary>
    public static float[] CopyColumns(float[] src, int rows, int srcWidth, int colOffset, int width)
    {
        var y = new float[rows * width];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < width; c++) y[r * width + c] = src[r * srcWidth + colOffset + c];
        return y;
    }
}

using System.Numerics.Tensors;

namespace PolyEngine.Kernels.Cpu;

/// <summary>The in-place hook edit (<see cref="RowEdit"/>) on host rows. Scalar reference: Reference/RowsReference.</summary>
public static class RowEdits
{
    /// <summary>x [batch, seq, width] edited in place; mul/add as <see cref="RowEdit"/> describes (empty: absent).</summary>
    public static void Apply(Span<float> x, int batch, int seq, int width, ReadOnlySpan<float> mul, ReadOnlySpan<float> add, bool perPosition,
        ReadOnlySpan<int> from)
    {
        for (int b = 0; b < batch; b++)
            for (int t = Math.Max(0, from[b]); t < seq; t++)
            {
                var row = x.Slice((b * seq + t) * width, width);
                int e = (perPosition ? b * seq + t : b) * width;
                if (!mul.IsEmpty) TensorPrimitives.Multiply(row, mul.Slice(e, width), row);
                if (!add.IsEmpty) TensorPrimitives.Add(row, add.Slice(e, width), row);
            }
    }
}

/// <summary>The row family on the CPU: gathers, column copies, fan-out, adds and hook edits over host arrays.</summary>
sealed class CpuRows : IRowOps
{
    public void Gather(int[] ids, DeviceBuffer table, int d, DeviceBuffer y)
    {
        Span<float> t = CpuBackend.Span(table), ys = CpuBackend.Span(y);
        long rowsInTable = t.Length / d;
        for (int r = 0; r < ids.Length; r++)
        {
            if ((uint)ids[r] >= rowsInTable) throw new ArgumentOutOfRangeException(nameof(ids), $"row {ids[r]} outside a table of {rowsInTable} rows");
            t.Slice(ids[r] * d, d).CopyTo(ys.Slice(r * d, d));
        }
    }

    public void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst, int dstWidth = 0, int dstOffset = 0)
    {
        if (dstWidth == 0) dstWidth = width;
        RowsCheck.Columns(colOffset, width, srcWidth, dstOffset, dstWidth);
        Span<float> s = CpuBackend.Span(src), dd = CpuBackend.Span(dst);
        for (int r = 0; r < rows; r++) s.Slice(r * srcWidth + colOffset, width).CopyTo(dd.Slice(r * dstWidth + dstOffset, width));
    }

    public void Broadcast(DeviceBuffer src, long n, int copies, DeviceBuffer dst)
    {
        Span<float> s = CpuBackend.Span(src), dd = CpuBackend.Span(dst);
        if (n * copies > dd.Length || n > s.Length) throw new ArgumentException($"Broadcast: {copies} copies of {n} floats do not fit");
        for (int c = 0; c < copies; c++) s.Slice(0, (int)n).CopyTo(dd.Slice((int)(c * n), (int)n));
    }

    public void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n) =>
        TensorPrimitives.Add(CpuBackend.Span(a)[..(int)n], CpuBackend.Span(b)[..(int)n], CpuBackend.Span(y)[..(int)n]);

    public void Edit(DeviceBuffer x, int batch, int seq, int width, RowEdit edit)
    {
        var xs = CpuBackend.Span(x);
        long n = (long)batch * seq * width, per = (edit.PerPosition ? (long)batch * seq : batch) * width;
        var mul = edit.Mul is null ? default : CpuBackend.Span(edit.Mul);
        var add = edit.Add is null ? default : CpuBackend.Span(edit.Add);
        if (n > xs.Length || (edit.Mul is not null && mul.Length < per) || (edit.Add is not null && add.Length < per) || edit.From.Length < batch)
            throw new ArgumentException($"EditRows: buffers too small for {batch}×{seq}×{width} (mul/add need {per} floats, from {batch} entries)");
        RowEdits.Apply(xs, batch, seq, width, mul, add, edit.PerPosition, edit.From);
    }
}

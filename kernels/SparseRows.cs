namespace PolyEngine.Kernels;

/// <summary>The activation function of an SAE encoder, applied to pre-activations by <see cref="ISaeOps.Sparsify"/>.</summary>
public enum SparseActivation
{
    /// <summary>f = max(pre, 0).</summary>
    Relu,
    /// <summary>f = pre where pre &gt; θ_j (strictly, as SAELens) and pre &gt; 0, else 0.</summary>
    JumpRelu,
    /// <summary>f = max(pre, 0) for the k largest pre of a row (ties: the lower index), 0 elsewhere.</summary>
    TopK,
}

/// <summary>What <see cref="ISaeOps.Sparsify"/> applies: the activation, k for TopK, θ [width] for JumpReLU.</summary>
public sealed record SparseRule(SparseActivation Activation, int K = 0, DeviceBuffer? Threshold = null);

/// <summary>How <see cref="ISaeOps.NormalizeRows"/> scales a row (SAELens <c>normalize_activations</c>).</summary>
public enum RowNormalization
{
    None,
    /// <summary>SAELens <c>layer_norm</c>: x' = (x − mean)/(std + 1e-5) with the unbiased std (no gain, no bias).</summary>
    LayerNorm,
    /// <summary>SAELens <c>constant_norm_rescale</c>: x' = x·√d/‖x‖.</summary>
    ConstantNorm,
}

/// <summary>
/// Host rows of nonzero (index, value) pairs in CSR layout — what a sparse SAE encode hands back from the device:
/// row r holds <c>Index[RowStart[r]..RowStart[r+1])</c>, ascending, and their values (all nonzero).
/// Opens in scipy as <c>csr_matrix((Value, Index, RowStart), shape=(Rows, Width))</c>.
/// </summary>
public sealed class SparseRows
{
    public SparseRows(int rows, int width, int[] rowStart, int[] index, float[] value)
    {
        if (rowStart.Length != rows + 1 || index.Length < rowStart[rows] || value.Length < rowStart[rows])
            throw new ArgumentException($"CSR arrays do not describe {rows} rows: row_start has {rowStart.Length} entries, index {index.Length}, value {value.Length}");
        Rows = rows;
        Width = width;
        RowStart = rowStart;
        Index = index;
        Value = value;
    }

    public int Rows { get; }
    public int Width { get; }
    /// <summary>[rows + 1] offsets into <see cref="Index"/> and <see cref="Value"/>.</summary>
    public int[] RowStart { get; }
    public int[] Index { get; }
    public float[] Value { get; }

    /// <summary>Nonzeros in all rows.</summary>
    public int Count => RowStart[Rows];

    public ReadOnlySpan<int> Indices(int row) => Index.AsSpan(RowStart[row], RowStart[row + 1] - RowStart[row]);
    public ReadOnlySpan<float> Values(int row) => Value.AsSpan(RowStart[row], RowStart[row + 1] - RowStart[row]);

    /// <summary>The value at (row, column): 0 when not stored.</summary>
    public float At(int row, int column)
    {
        int i = Indices(row).BinarySearch(column);
        return i >= 0 ? Value[RowStart[row] + i] : 0f;
    }

    /// <summary>[rows, width] dense.</summary>
    public float[] ToDense()
    {
        var dense = new float[(long)Rows * Width];
        for (int r = 0; r < Rows; r++)
            for (int i = RowStart[r]; i < RowStart[r + 1]; i++) dense[(long)r * Width + Index[i]] = Value[i];
        return dense;
    }

    /// <summary>Concatenates per-row (indices, values) lists.</summary>
    public static SparseRows FromRows(int width, IReadOnlyList<(int[] Index, float[] Value)> rows)
    {
        var start = new int[rows.Count + 1];
        for (int r = 0; r < rows.Count; r++) start[r + 1] = checked(start[r] + rows[r].Index.Length);
        var index = new int[start[^1]];
        var value = new float[start[^1]];
        for (int r = 0; r < rows.Count; r++)
        {
            rows[r].Index.CopyTo(index, start[r]);
            rows[r].Value.CopyTo(value, start[r]);
        }
        return new SparseRows(rows.Count, width, start, index, value);
    }
}

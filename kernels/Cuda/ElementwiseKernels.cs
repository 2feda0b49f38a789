using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// Element-wise ILGPU kernels, one thread per output element (scalar references: Reference/RowsReference, ActivationReference).
//   Gather       — y[r, c] = table[ids[r], c]
//   Add          — y = a + b
//   CopyColumns  — dst[r, dstOffset + c] = src[r, offset + c]
//   Activate     — GELU tanh as x·sigmoid(2u), GELU erf with the Numerical Recipes erfc fit, ReLU
//   ActivateBackward — dy·act′(x), the same functions differentiated (GELU tanh through σ(±2u), free of cancellation)
// Rules from docs/CUDA.md §2: MathMode.Default, XMath (not Math/MathF), no FusedMultiplyAdd, no Math.Clamp, no System.Half.
public static class ElementwiseKernels
{
    [GpuKernel]
    public static void Gather(Index1D i, ArrayView<int> ids, ArrayView<float> table, int d, ArrayView<float> y)
    {
        int r = i / d, c = i % d;
        y[i] = table[(long)ids[r] * d + c];
    }

    [GpuKernel]
    public static void Add(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    [GpuKernel]
    public static void CopyColumns(Index1D i, ArrayView<float> src, int srcWidth, int colOffset, int width, ArrayView<float> dst, int dstWidth, int dstOffset)
    {
        int r = i / width, c = i % width;
        dst[(long)r * dstWidth + dstOffset + c] = src[(long)r * srcWidth + colOffset + c];
    }

    /// <summary><paramref name="kind"/> is <see cref="Activation"/> as an int.</summary>
    [GpuKernel]
    public static void Activate(Index1D i, ArrayView<float> x, ArrayView<float> y, int kind)
    {
        float v = x[i];
        if (kind == (int)Activation.GeluTanh)
            y[i] = v / (1f + XMath.Exp(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
        else if (kind == (int)Activation.GeluErf)
            y[i] = 0.5f * v * (1f + Erf(v * 0.70710678118654752f));
        else
            y[i] = XMath.Max(v, 0f);
    }

    /// <summary>dx[i] = dy[i]·act′(x[i]); <paramref name="kind"/> is <see cref="Activation"/> as an int. tanh as 1 − 2/(1 + e^{2u}).</summary>
    [GpuKernel]
    public static void ActivateBackward(Index1D i, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx, int kind)
    {
        float v = x[i], d;
        if (kind == (int)Activation.GeluTanh)
        {
            // 0.5·(1 + tanh u) = σ(2u) and 1 − tanh²u = 4·σ(2u)·σ(−2u): no cancellation where tanh u is near ±1.
            float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            float s = 1f / (1f + XMath.Exp(-2f * u)), sm = 1f / (1f + XMath.Exp(2f * u));
            d = s + 2f * v * s * sm * 0.7978845608028654f * (1f + 3f * 0.044715f * v * v);
        }
        else if (kind == (int)Activation.GeluErf)
            d = 0.5f * (1f + Erf(v * 0.70710678118654752f)) + v * XMath.Exp(-0.5f * v * v) * 0.3989422804014327f;
        else
            d = v > 0f ? 1f : 0f;
        dx[i] = dy[i] * d;
    }

    /// <summary>erf(x) from the erfc fit with fractional error below 1.2e-7 (the CPU path's Activations.Erf, in float).</summary>
    public static float Erf(float x)
    {
        float z = XMath.Abs(x);
        float t = 1f / (1f + 0.5f * z);
        float p = 0.17087277f;
        p = p * t - 0.82215223f;
        p = p * t + 1.48851587f;
        p = p * t - 1.13520398f;
        p = p * t + 0.27886807f;
        p = p * t - 0.18628806f;
        p = p * t + 0.09678418f;
        p = p * t + 0.37409196f;
        p = p * t + 1.00002368f;
        p = p * t - 1.26551223f;
        float ans = t * XMath.Exp(p - z * z);
        return x >= 0f ? 1f - ans : ans - 1f;
    }
}

/// <summary>The activation family on ILGPU: one thread per element.</summary>
sealed class IlgpuActivations(IlgpuBackend backend) : IActivationOps
{
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> _activate =
        backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(ElementwiseKernels.Activate);

    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _backward =
        backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(ElementwiseKernels.ActivateBackward);

    public void Forward(DeviceBuffer x, DeviceBuffer y, long n, Activation activation)
    {
        if (n > 0) _activate(checked((int)n), IlgpuBackend.Of(x, n, "x", "Activate").View, IlgpuBackend.Of(y, n, "y", "Activate").View, (int)activation);
    }

    public void Backward(DeviceBuffer x, DeviceBuffer dy, DeviceBuffer dx, long n, Activation activation)
    {
        if (n > 0)
            _backward(checked((int)n), IlgpuBackend.Of(x, n, "x", "ActivateBackward").View, IlgpuBackend.Of(dy, n, "dy", "ActivateBackward").View,
                IlgpuBackend.Of(dx, n, "dx", "ActivateBackward").View, (int)activation);
    }
}

/// <summary>The row family on ILGPU: gather, column copy and add kernels (above), fan-out by device copies, and the hook
/// edit (EditKernels.cs).</summary>
sealed class IlgpuRows : IRowOps, IDisposable
{
    readonly IlgpuBackend _b;
    readonly Action<Index1D, ArrayView<int>, ArrayView<float>, int, ArrayView<float>> _gather;
    readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _add;
    readonly Action<Index1D, ArrayView<float>, int, int, int, ArrayView<float>, int, int> _copyColumns;
    readonly Action<Index1D, ArrayView<float>, int, int, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<int>> _editRows;
    MemoryBuffer1D<int, Stride1D.Dense>? _ids, _editFrom;   // gather ids and edit start positions, grown on demand

    public IlgpuRows(IlgpuBackend backend)
    {
        _b = backend;
        var acc = backend.Acc;
        _gather = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, int, ArrayView<float>>(ElementwiseKernels.Gather);
        _add = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.Add);
        _copyColumns = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, int, ArrayView<float>, int, int>(ElementwiseKernels.CopyColumns);
        _editRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<int>>(
            EditKernels.EditRows);
    }

    public void Gather(int[] ids, DeviceBuffer table, int d, DeviceBuffer y)
    {
        long rowsInTable = table.Length / d;
        foreach (int id in ids)
            if ((uint)id >= rowsInTable) throw new ArgumentOutOfRangeException(nameof(ids), $"row {id} outside a table of {rowsInTable} rows");
        if (ids.Length == 0) return;
        var idBuf = _b.Grow(ref _ids, ids.Length);
        idBuf.View.SubView(0, ids.Length).CopyFromCPU(ids);
        _gather(ids.Length * d, idBuf.View, IlgpuBackend.Of(table).View, d, IlgpuBackend.Of(y, (long)ids.Length * d, "y", "Gather").View);
    }

    public void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst, int dstWidth = 0, int dstOffset = 0)
    {
        if (dstWidth == 0) dstWidth = width;
        RowsCheck.Columns(colOffset, width, srcWidth, dstOffset, dstWidth);
        if (rows * width > 0)
            _copyColumns(rows * width, IlgpuBackend.Of(src, (long)rows * srcWidth, "src", "CopyColumns").View, srcWidth, colOffset, width,
                IlgpuBackend.Of(dst, (long)rows * dstWidth, "dst", "CopyColumns").View, dstWidth, dstOffset);
    }

    public void Broadcast(DeviceBuffer src, long n, int copies, DeviceBuffer dst)
    {
        var s = IlgpuBackend.Of(src, n, "src", "Broadcast").View.SubView(0, n);
        var d = IlgpuBackend.Of(dst, n * copies, "dst", "Broadcast").View;
        for (int c = 0; c < copies && n > 0; c++) s.CopyTo(d.SubView(c * n, n));
    }

    public void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n)
    {
        if (n > 0) _add(checked((int)n), IlgpuBackend.Of(a, n, "a", "Add").View, IlgpuBackend.Of(b, n, "b", "Add").View, IlgpuBackend.Of(y, n, "y", "Add").View);
    }

    public void Edit(DeviceBuffer x, int batch, int seq, int width, RowEdit edit)
    {
        long n = (long)batch * seq * width, per = (edit.PerPosition ? (long)batch * seq : batch) * width;
        var xb = IlgpuBackend.Of(x, n, "x", "EditRows");
        var (mul, hasMul) = _b.Optional(edit.Mul, per, "mul", "EditRows");
        var (add, hasAdd) = _b.Optional(edit.Add, per, "add", "EditRows");
        if (edit.From.Length < batch) throw new ArgumentException($"EditRows: from has {edit.From.Length} entries, {batch} needed");
        if (n == 0) return;
        var from = _b.Grow(ref _editFrom, batch);
        from.View.SubView(0, batch).CopyFromCPU(edit.From.AsSpan(0, batch).ToArray());
        _editRows(checked((int)n), xb.View, seq, width, mul, hasMul, add, hasAdd, edit.PerPosition ? 1 : 0, from.View);
    }

    public void Dispose()
    {
        _ids?.Dispose();
        _editFrom?.Dispose();
    }
}

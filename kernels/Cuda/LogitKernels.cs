using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PolyEngine.Kernels.Cuda;

// Logits-side reductions (scalar reference: Reference/ReductionReference): what leaves the device instead of [rows, vocab].
//   LogSumExp — one thread per row: max, then Σ exp(x − max) in float, lse = max + log(sum).
//   The top-k per row is SaeKernels.TopK (a size-k heap per row, ties to the lower index); the host sorts each row's k.
public static class LogitKernels
{
    [GpuKernel]
    public static void LogSumExp(Index1D row, ArrayView<float> x, int width, ArrayView<float> lse)
    {
        long o = (long)(int)row * width;
        float max = float.NegativeInfinity;
        for (int i = 0; i < width; i++) max = XMath.Max(max, x[o + i]);
        float sum = 0f;
        for (int i = 0; i < width; i++) sum += XMath.Exp(x[o + i] - max);
        lse[row] = max + XMath.Log(sum);
    }
}

/// <summary>The reduction family on ILGPU: the top-k per row by the SAE family's heap kernel, the log-sum-exp above; only
/// [rows, k] ids and logits and [rows] sums leave the device.</summary>
sealed class IlgpuReductions : IReductionOps, IDisposable
{
    readonly IlgpuBackend _b;
    readonly IlgpuSae _sae;
    readonly Action<Index1D, ArrayView<float>, int, ArrayView<float>> _logSumExp;
    MemoryBuffer1D<float, Stride1D.Dense>? _lse;

    public IlgpuReductions(IlgpuBackend backend, IlgpuSae sae)
    {
        _b = backend;
        _sae = sae;
        _logSumExp = backend.Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>>(LogitKernels.LogSumExp);
    }

    public TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k)
    {
        var l = IlgpuBackend.Of(logits, (long)rows * vocab, "logits", "TopLogits").View;
        k = Math.Min(k, vocab);
        if (k < 1 || k > SaeKernels.MaxTopK) throw new ArgumentException($"TopLogits: k = {k} is outside 1..{SaeKernels.MaxTopK}, what the device kernel keeps");
        var (ids, top) = _sae.TopK(l, rows, vocab, k);
        var lse = _b.Grow(ref _lse, rows);
        _logSumExp(rows, l, vocab, lse.View);
        var sums = new float[rows];
        lse.View.SubView(0, rows).CopyToCPU(sums);
        for (int r = 0; r < rows; r++)   // the heap's order → descending logits, ties to the lower id
        {
            var order = Enumerable.Range(r * k, k).OrderByDescending(i => top[i]).ThenBy(i => ids[i]).ToArray();
            var (ri, rv) = (order.Select(i => ids[i]).ToArray(), order.Select(i => top[i]).ToArray());
            ri.CopyTo(ids, r * k);
            rv.CopyTo(top, r * k);
        }
        return new TopLogitRows(rows, k, ids, top, sums);
    }

    public void Dispose() => _lse?.Dispose();
}

using ILGPU;

namespace PolyEngine.Kernels.Cuda;

// In-place hook edits (scalar reference: Reference/RowsReference.Edit); launched by IlgpuRows (ElementwiseKernels.cs). Layout [batch, seq, width] as every hook but the pattern.
//   EditRows — one thread per element: x = x·mul + add from position from[b] on; mul/add one row per batch row, or one per
//              position (activation patching); an absent mul is 1, an absent add 0.
public static class EditKernels
{
    [GpuKernel]
    public static void EditRows(Index1D i, ArrayView<float> x, int seq, int width, ArrayView<float> mul, int hasMul, ArrayView<float> add,
        int hasAdd, int perPosition, ArrayView<int> from)
    {
        int c = i % width, bt = i / width;
        int t = bt % seq, b = bt / seq;
        if (t < from[b]) return;
        long e = (long)(perPosition != 0 ? bt : b) * width + c;
        float v = x[i];
        if (hasMul != 0) v *= mul[e];
        if (hasAdd != 0) v += add[e];
        x[i] = v;
    }
}

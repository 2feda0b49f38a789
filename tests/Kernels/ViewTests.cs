using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>
/// Buffer views on both backends: a slice addresses part of a buffer without a copy (writes through it are the buffer's),
/// every op takes a view where it takes a buffer and equals the same op on a copy, views nest, and out-of-range slices
/// are refused. Odd offsets and lengths, so no alignment is assumed.
/// </summary>
public abstract class ViewTests(IBackend backend) : IDisposable
{
    public void Dispose() => backend.Dispose();

    static float[] R(int n, ulong seed) => new Rng(seed).Normals([n], 1f);

    float[] Get(DeviceBuffer b) { var a = new float[b.Length]; backend.Download(b, a); return a; }

    [Fact]
    public void SlicesShareMemoryAndNest()
    {
        var data = R(37, 1);
        using var buf = backend.Upload(data);
        var view = buf.Slice(5, 21);
        Assert.Equal(21, view.Length);
        Assert.Equal(data.Skip(5).Take(21), Get(view));
        var inner = view.Slice(3, 7);   // elements 8..14 of the buffer
        Assert.Equal(data.Skip(8).Take(7), Get(inner));
        backend.Copy(backend.Upload(Enumerable.Repeat(9f, 7).ToArray()), inner);
        var after = Get(buf);
        Assert.Equal(Enumerable.Repeat(9f, 7), after.Skip(8).Take(7));
        Assert.Equal(data.Take(8), after.Take(8));
        Assert.Equal(data.Skip(15), after.Skip(15));
        Assert.Throws<ArgumentOutOfRangeException>(() => buf.Slice(30, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => view.Slice(-1, 2));
        view.Dispose();   // a view frees nothing
        Assert.Equal(after, Get(buf));
    }

    [Theory]
    [InlineData(3, 7, 11, 2)]
    [InlineData(1, 19, 5, 4)]
    public void OpsOnViewsEqualOpsOnCopies(int rows, int d, int n, int skipRows)
    {
        var x = R((rows + skipRows + 1) * d, 2);
        var w = R(d * n, 3);
        var bias = R(n, 4);
        using var all = backend.Upload(x);
        var view = all.Slice((long)skipRows * d, (long)rows * d);                 // rows skipRows.. of x
        var packed = backend.PackWeight(w, d, n, WeightLayout.InOut);
        using var yAll = backend.Allocate((long)(rows + 2) * n);
        var yView = yAll.Slice(n, (long)rows * n);                                // written from the second row on
        backend.Linear.Forward(view, packed, backend.Upload(bias), yView, rows);
        var expected = new float[rows * n];
        LinearReference.Forward(x.AsSpan(skipRows * d, rows * d), w, WeightLayout.InOut, bias, expected, rows, d, n);
        Compare.Close(expected, Get(yView), 1e-4, "linear on views");
        Assert.All(Get(yAll).Take(n), v => Assert.Equal(0f, v));                  // nothing written before the view
        // Fan-out: the view's rows repeated three times, then a layer norm on the middle copy only.
        using var fan = backend.Allocate(3L * rows * d);
        backend.Rows.Broadcast(view, (long)rows * d, 3, fan);
        var fanned = Get(fan);
        for (int c = 0; c < 3; c++) Assert.Equal(x.Skip(skipRows * d).Take(rows * d), fanned.Skip(c * rows * d).Take(rows * d));
        var (g, b) = (R(d, 5), R(d, 6));
        backend.Norm.LayerNorm(fan.Slice((long)rows * d, (long)rows * d), backend.Upload(g), backend.Upload(b), fan.Slice((long)rows * d, (long)rows * d), rows, d, 1e-5f);
        var normed = new float[rows * d];
        NormReference.LayerNorm(x.AsSpan(skipRows * d, rows * d), g, b, normed, rows, d, 1e-5f);
        var result = Get(fan);
        Compare.Close(normed, result.AsSpan(rows * d, rows * d), 1e-5, "layer norm in place on a view");
        Assert.Equal(fanned.Take(rows * d), result.Take(rows * d));
        Assert.Equal(fanned.Skip(2 * rows * d), result.Skip(2 * rows * d));
    }
}

public sealed class CpuViewTests() : ViewTests(new CpuBackend(2));

public sealed class EmulatedCudaViewTests() : ViewTests(IlgpuBackend.CreateEmulated());

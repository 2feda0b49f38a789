using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>Every ILGPU kernel compiles to PTX for sm_80 and sm_90 without a GPU, and ptxas accepts it when CI fetched ptxas.</summary>
public class PtxCheckTests
{
    [Fact]
    public void EveryKernelIsFoundAndCompilesToPtx()
    {
        var kernels = PtxCheck.Kernels().Select(PtxCheck.KernelName).ToList();
        Assert.Contains("GemmKernels.Naive", kernels);
        Assert.Contains("AttentionKernels.Causal", kernels);
        Assert.True(kernels.Count >= 8, string.Join(", ", kernels));
        var results = PtxCheck.Run(PtxCheck.DefaultArchs, ptxas: null).ToList();
        Assert.Equal(kernels.Count * 2, results.Count);
        foreach (var r in results)
        {
            Assert.True(r.Compiled, $"{r.Kernel} {r.Arch}: {r.Detail}");
            Assert.Contains(".target sm_", r.Ptx);                // ILGPU 1.5.3 writes .target sm_80 for sm_90 too; ptxas -arch=sm_90 assembles it
            Assert.Contains(".version 7.8", r.Ptx);
            Assert.DoesNotContain("FusedMultiplyAdd", r.Ptx);      // would be an unresolved extern (docs/CUDA.md §2)
            Assert.DoesNotContain("tanh.approx.ftz", r.Ptx);       // MathMode.Fast's illegal modifier
        }
    }

    [SkippableFact]
    public void PtxasAcceptsEveryKernel()
    {
        string? ptxas = PtxCheck.FindPtxas(null);
        Skip.If(ptxas is null, "ptxas not found: run .ci/fetch-ptxas.sh (CI does) to assemble the PTX");
        foreach (var r in PtxCheck.Run(PtxCheck.DefaultArchs, ptxas))
            Assert.True(r.Compiled && r.PtxasOk == true, $"{r.Kernel} {r.Arch}: {r.Detail}");
    }

    [Fact]
    public void EmulatedKernelsMatchTheCpuBackend()
    {
        var results = EmulatedCheck.Run();
        Assert.True(results.Count >= 10);
        foreach (var (name, ok, detail) in results) Assert.True(ok, $"{name}: {detail}");
    }

    [Fact]
    public void BadArchIsRejected()
    {
        Assert.Throws<PolyEngineKernelException>(() => PtxCheck.ParseArch("ampere"));
        Assert.Equal(9, PtxCheck.ParseArch("sm_90").Major);
    }
}

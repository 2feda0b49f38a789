using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Kernels;

/// <summary>
/// Tests that need a real CUDA device: they skip themselves, with the reason, on machines without one (CI, the dev VM),
/// and run in `bench/gpu/run.sh` on a machine that has one.
/// </summary>
public class CudaDeviceTests
{
    static IlgpuBackend RequireCuda()
    {
        Skip.IfNot(IlgpuBackend.CudaAvailable(), "no CUDA device on this machine (runs on a GPU machine via bench/gpu/run.sh)");
        return IlgpuBackend.CreateCuda();
    }

    [SkippableTheory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void RealDeviceMatchesEveryGoldenHook(string name)
    {
        using var gpu = RequireCuda();
        foreach (var variant in gpu.HasCuBlas ? new[] { GemmVariant.CuBlas, GemmVariant.Tiled } : [GemmVariant.Tiled])
            foreach (var attention in Enum.GetValues<AttentionVariant>())
            {
                gpu.Gemm = variant;
                gpu.AttentionKind = attention;
                using var model = Model.Load(Fixtures.Golden(name), gpu);
                Models.GoldenParityTests.AssertEveryGoldenTensor(model, name, $"cuda {variant} GEMMs, {attention} attention");
            }
    }

    /// <summary>A pass stopped and resumed on the device, fanned out to 3 rows with per-row edits, against the full pass of
    /// those rows on the device (GEMM tilings may differ between row counts on a GPU, so within float32 noise, not bitwise).</summary>
    [SkippableTheory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void RealDeviceResumesAsItRuns(string name)
    {
        using var gpu = RequireCuda();
        using var model = Model.Load(Fixtures.Golden(name), gpu);
        int[] ids = [5, 17, 300, 2, 41, 8, 77];
        var three = Enumerable.Range(0, 3).SelectMany(_ => ids).ToArray();
        foreach (var at in HookName.AllFor(model.Spec).Where(h => h.InResidualSpace))
        {
            var edit = new HookEdit(at) { Add = Enumerable.Range(0, 3 * model.Spec.DModel).Select(i => (i % 7 - 3) * 0.1f).ToArray() };
            var full = model.Run(three, 3, ids.Length, new RunOptions { Edits = [edit] });
            using var state = model.Run([ids], new RunOptions { StopAt = at }).State!;
            var resumed = model.Resume(state, new RunOptions { Edits = [edit] }, copies: 3);
            Compare.Close(full.Logits!.Data, resumed.Logits!.Data, 1e-5, $"cuda resumed at {at}", 1e-5);
        }
    }

    [SkippableFact]
    public void RealDeviceMatchesTheCpuBackendAtGpt2SmallShape()
    {
        using var gpu = RequireCuda();
        using var dir = new Fixtures.TempDir();
        ToyModels.Write(ToyModels.Preset(ModelFamily.Gpt2, "gpt2-small"), 1, dir.Path);
        var rng = new Rng(5);
        var ids = Enumerable.Range(0, 2 * 64).Select(_ => (int)(rng.NextU64() % 50257)).ToArray();
        var hooks = HookName.Select(ModelSpec.FromConfigFile(dir.File("config.json")), "blocks.*.hook_resid_post");
        float[] cpuLogits;
        Dictionary<HookName, float[]> cpuHooks;
        using (var cpu = Model.Load(dir.Path, new CpuBackend()))
        {
            var r = cpu.Run(ids, 2, 64, new RunOptions { Hooks = hooks });
            cpuLogits = r.Logits!.Data;
            cpuHooks = hooks.ToDictionary(h => h, h => r.Cache[h].Data);
        }
        foreach (var attention in Enum.GetValues<AttentionVariant>())
        {
            gpu.AttentionKind = attention;
            using var model = Model.Load(dir.Path, gpu);
            var g = model.Run(ids, 2, 64, new RunOptions { Hooks = hooks });
            Compare.Close(cpuLogits, g.Logits!.Data, 1e-3, $"gpt2-small logits cuda ({attention} attention) vs cpu");
            foreach (var h in hooks) Compare.Close(cpuHooks[h], g.Cache[h].Data, 1e-3, $"gpt2-small {h} cuda ({attention} attention) vs cpu");
        }
    }
}

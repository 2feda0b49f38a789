using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Hooks;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;
using PolyEngine.Models;
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
        {
            gpu.Gemm = variant;
            string folder = Fixtures.Golden(name);
            using var model = Model.Load(folder, gpu);
            using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
            var ids = golden.ReadInt64("input_ids").Select(i => (int)i).ToArray();
            var shape = golden.Info("input_ids").Shape;
            var r = model.Run(ids, (int)shape[0], (int)shape[1], new RunOptions { Hooks = HookName.AllFor(model.Spec).ToArray() });
            Compare.Close(golden.ReadFloat32("logits"), r.Logits!.Data, 1e-4, $"{name} cuda {variant} logits");
            foreach (var t in golden.Tensors)
                if (HookName.TryParse(t.Name, out var hook))
                    Compare.Close(golden.ReadFloat32(t.Name), r.Cache[hook].Data, 1e-4, $"{name} cuda {variant} {t.Name}");
        }
    }

    [SkippableFact]
    public void RealDeviceMatchesTheCpuBackendAtGpt2SmallShape()
    {
        using var gpu = RequireCuda();
        using var dir = new Fixtures.TempDir();
        ToyModels.Write(ToyModels.Preset(ModelFamily.Gpt2, "gpt2-small"), 1, dir.Path);
        var rng = new ToyModels.Rng(5);
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
        using var model = Model.Load(dir.Path, gpu);
        var g = model.Run(ids, 2, 64, new RunOptions { Hooks = hooks });
        Compare.Close(cpuLogits, g.Logits!.Data, 1e-3, "gpt2-small logits cuda vs cpu");
        foreach (var h in hooks) Compare.Close(cpuHooks[h], g.Cache[h].Data, 1e-3, $"gpt2-small {h} cuda vs cpu");
    }
}

using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;

namespace PolyEngine;

/// <summary>Device selection for <c>--device auto|cpu|cuda|cuda-emulated</c>.</summary>
public static class Devices
{
    public static readonly string[] Names = ["auto", "cpu", "cuda", "cuda-emulated"];

    /// <summary>Creates the backend for <paramref name="device"/>; <paramref name="note"/> says what was chosen and why.
    /// <paramref name="attention"/> chooses how a CUDA backend runs attention (auto, gemm or fused; the CPU has one way).</summary>
    public static IBackend Create(string device, int threads, out string note, string attention = "auto")
    {
        if (threads < 0 || threads > 4096) throw new PolyEngineException($"--threads {threads} is not a thread count; give 0 (all cores) or a positive number");
        AttentionVariant? kind = attention switch
        {
            "auto" => null,
            "gemm" => AttentionVariant.Gemm,
            "fused" => AttentionVariant.Fused,
            _ => throw new PolyEngineException($"--attention '{attention}' is unknown; choose auto, gemm or fused"),
        };
        IlgpuBackend Configured(IlgpuBackend gpu)
        {
            if (kind is { } k) gpu.AttentionKind = k;
            return gpu;
        }
        switch (device)
        {
            case "cpu":
                var cpu = new CpuBackend(threads);
                note = cpu.DeviceName;
                return cpu;
            case "auto":
                if (IlgpuBackend.CudaAvailable())
                {
                    var gpu = Configured(Cuda());
                    note = $"{gpu.DeviceName} (auto)";
                    return gpu;
                }
                var auto = new CpuBackend(threads);
                note = $"{auto.DeviceName} (auto: no CUDA device found)";
                return auto;
            case "cuda":
                var cuda = Configured(Cuda());
                note = cuda.DeviceName;
                return cuda;
            case "cuda-emulated":
                var emulated = Configured(IlgpuBackend.CreateEmulated());
                note = $"{emulated.DeviceName} — for checking the CUDA kernels without a GPU; slow by design, use tiny models";
                return emulated;
            default:
                throw new PolyEngineException($"--device '{device}' is unknown; choose one of {string.Join(", ", Names)}");
        }
    }

    static IlgpuBackend Cuda()
    {
        try { return IlgpuBackend.CreateCuda(); }
        catch (PolyEngineKernelException e) { throw new PolyEngineException($"--device cuda: {e.Message}"); }
    }
}

using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Cuda;

namespace PolyEngine;

/// <summary>Device selection for <c>--device auto|cpu|cuda|cuda-emulated</c>.</summary>
public static class Devices
{
    public static readonly string[] Names = ["auto", "cpu", "cuda", "cuda-emulated"];

    /// <summary>Creates the backend for <paramref name="device"/>; <paramref name="note"/> says what was chosen and why.</summary>
    public static IBackend Create(string device, int threads, out string note)
    {
        if (threads < 0 || threads > 4096) throw new PolyEngineException($"--threads {threads} is not a thread count; give 0 (all cores) or a positive number");
        switch (device)
        {
            case "cpu":
                var cpu = new CpuBackend(threads);
                note = cpu.DeviceName;
                return cpu;
            case "auto":
                if (IlgpuBackend.CudaAvailable())
                {
                    var gpu = Cuda();
                    note = $"{gpu.DeviceName} (auto)";
                    return gpu;
                }
                var auto = new CpuBackend(threads);
                note = $"{auto.DeviceName} (auto: no CUDA device found)";
                return auto;
            case "cuda":
                var cuda = Cuda();
                note = cuda.DeviceName;
                return cuda;
            case "cuda-emulated":
                var emulated = IlgpuBackend.CreateEmulated();
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

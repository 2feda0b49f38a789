using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;

namespace PolyEngine;

/// <summary>Device selection for <c>--device auto|cpu|cuda</c>.</summary>
public static class Devices
{
    public static readonly string[] Names = ["auto", "cpu", "cuda"];

    /// <summary>Creates the backend for <paramref name="device"/>; <paramref name="note"/> says what was chosen and why.</summary>
    public static IBackend Create(string device, int threads, out string note)
    {
        switch (device)
        {
            case "cpu":
                var cpu = new CpuBackend(threads);
                note = cpu.DeviceName;
                return cpu;
            case "auto":
                var auto = new CpuBackend(threads);
                note = $"{auto.DeviceName} (auto: this build has no CUDA backend yet)";
                return auto;
            case "cuda":
                throw new PolyEngineException("--device cuda: this build has no CUDA backend yet; use --device cpu (or auto)");
            default:
                throw new PolyEngineException($"--device '{device}' is unknown; choose one of {string.Join(", ", Names)}");
        }
    }
}

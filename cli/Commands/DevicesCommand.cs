using System.CommandLine;
using PolyEngine.Kernels.Cuda;

namespace PolyEngine.Cli.Commands;

static class DevicesCommand
{
    public static Command Create(Io io)
    {
        var cmd = new Command("devices", Common.WithExamples("List the compute devices PolyEngine can use: the CPU, and CUDA devices with their memory and compute capability.",
            "polyengine devices"));
        cmd.SetAction(_ =>
        {
            using (var cpu = new Kernels.Cpu.CpuBackend()) io.Out.WriteLine($"cpu            {cpu.DeviceName}");
            var gpus = IlgpuBackend.DescribeCudaDevices(out string? why);
            foreach (var g in gpus) io.Out.WriteLine($"cuda           {g}");
            if (gpus.Count == 0) io.Out.WriteLine($"cuda           none ({why})");
            io.Out.WriteLine("cuda-emulated  ILGPU CPU accelerator, warp 32 (kernel checks without a GPU)");
            return 0;
        });
        return cmd;
    }
}

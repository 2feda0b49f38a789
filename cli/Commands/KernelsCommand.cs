using System.CommandLine;
using PolyEngine.Kernels.Cuda;

namespace PolyEngine.Cli.Commands;

static class KernelsCommand
{
    public static Command Create(Io io)
    {
        var kernels = new Command("kernels", "The CUDA kernels, checked without a GPU.");
        var arch = new Option<string>("--arch") { Description = "Comma-separated target architectures", DefaultValueFactory = _ => "sm_80,sm_90" };
        var ptxas = new Option<string>("--ptxas") { Description = "ptxas binary (default: on PATH, else .ptxas/ptxas as .ci/fetch-ptxas.sh leaves it)" };
        var keep = new Option<string>("--keep") { Description = "Folder to write each kernel's PTX to" };
        var check = new Command("check", Common.WithExamples(
            "Compile every ILGPU kernel to PTX for each architecture, assemble it with ptxas when found, and run every kernel on " +
            "ILGPU's CPU accelerator (warp 32) against the CPU backend. One line per kernel × arch; non-zero exit on any failure.",
            "polyengine kernels check",
            "polyengine kernels check --arch sm_80,sm_86,sm_90 --ptxas /usr/local/cuda/bin/ptxas --keep ptx/")) { arch, ptxas, keep };
        check.SetAction(r =>
        {
            string? ptxasPath;
            try { ptxasPath = PtxCheck.FindPtxas(r.GetValue(ptxas)); }
            catch (PolyEngineKernelException e) { throw new PolyEngineException(e.Message); }
            if (r.GetValue(keep) is string k) Directory.CreateDirectory(k);
            io.Out.WriteLine(ptxasPath is null
                ? "ptxas: not found (give --ptxas, put it on PATH, or run .ci/fetch-ptxas.sh): PTX is compiled but not assembled"
                : $"ptxas: {ptxasPath}");
            var archs = r.GetValue(arch)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            int failed = 0, total = 0;
            try
            {
                foreach (var res in PtxCheck.Run(archs, ptxasPath, r.GetValue(keep)))
                {
                    total++;
                    bool ok = res.Compiled && res.PtxasOk != false;
                    if (!ok) failed++;
                    io.Out.WriteLine($"{(ok ? "ok  " : "FAIL")} {res.Kernel,-34} {res.Arch,-6} {res.Detail}");
                }
            }
            catch (PolyEngineKernelException e) { throw new PolyEngineException(e.Message); }
            var emulated = EmulatedCheck.Run();
            foreach (var (name, ok, detail) in emulated)
            {
                total++;
                if (!ok) failed++;
                io.Out.WriteLine($"{(ok ? "ok  " : "FAIL")} {name,-34} {"cpu-acc",-6} {detail}");
            }
            io.Out.WriteLine($"{total - failed} passed, {failed} failed");
            return failed == 0 ? 0 : 1;
        });
        kernels.Subcommands.Add(check);
        return kernels;
    }
}

using System.Diagnostics;
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace PolyEngine.Kernels.Cuda;

/// <summary>One kernel × architecture result of <see cref="PtxCheck.Run"/>.</summary>
public sealed record PtxResult(string Kernel, string Arch, bool Compiled, bool? PtxasOk, string Detail, string? Ptx);

/// <summary>
/// Compiles every <see cref="GpuKernelAttribute"/> kernel to PTX without a GPU (ILGPU's PTXBackend, ISA 7.8, MathMode.Default)
/// and, when a ptxas binary is given, assembles each PTX for its architecture — ptxas catches what ILGPU's own compile
/// reports as success (illegal modifiers, unresolved externs; docs/CUDA.md §2). A fresh context per kernel: one failed
/// compile poisons an ILGPU backend for every later compile.
/// </summary>
public static class PtxCheck
{
    public static readonly string[] DefaultArchs = ["sm_80", "sm_90"];

    public static IReadOnlyList<MethodInfo> Kernels() =>
        typeof(PtxCheck).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
            .Where(m => m.GetCustomAttribute<GpuKernelAttribute>() is not null)
            .OrderBy(m => m.DeclaringType!.Name, StringComparer.Ordinal).ThenBy(m => m.Name, StringComparer.Ordinal)
            .ToList();

    public static string KernelName(MethodInfo m) => $"{m.DeclaringType!.Name}.{m.Name}";

    /// <summary>"sm_90" → ILGPU's <c>CudaArchitecture.SM_90</c> (its own instances: ILGPU's tables key on them).</summary>
    public static CudaArchitecture ParseArch(string arch)
    {
        string name = arch.ToUpperInvariant();
        object? value = typeof(CudaArchitecture).GetProperty(name, BindingFlags.Public | BindingFlags.Static)?.GetValue(null)
            ?? typeof(CudaArchitecture).GetField(name, BindingFlags.Public | BindingFlags.Static)?.GetValue(null);
        if (!arch.StartsWith("sm_", StringComparison.Ordinal) || value is not CudaArchitecture a)
            throw new PolyEngineKernelException($"--arch '{arch}' is not an architecture ILGPU knows, like sm_80 or sm_90");
        return a;
    }

    public static IEnumerable<PtxResult> Run(IEnumerable<string> archs, string? ptxas, string? keepDir = null)
    {
        foreach (var arch in archs)
        {
            var cudaArch = ParseArch(arch);
            foreach (var kernel in Kernels())
            {
                string name = KernelName(kernel);
                string? ptx = null, error = null;
                try { ptx = Compile(kernel, cudaArch); }
                catch (Exception e) { error = $"ILGPU compile failed: {e.GetType().Name}: {e.Message.Split('\n')[0]}"; }
                if (ptx is null)
                {
                    yield return new PtxResult(name, arch, false, null, error!, null);
                    continue;
                }
                if (keepDir is not null) File.WriteAllText(Path.Combine(keepDir, $"{name}.{arch}.ptx"), ptx);
                if (ptxas is null)
                {
                    yield return new PtxResult(name, arch, true, null, $"{ptx.Length} chars of PTX (ptxas not run)", ptx);
                    continue;
                }
                var (ok, output) = Assemble(ptxas, ptx, arch);
                yield return new PtxResult(name, arch, true, ok, ok ? Summarize(output) : output.Trim().Split('\n')[0], ptx);
            }
        }
    }

    public static string Compile(MethodInfo kernel, CudaArchitecture arch)
    {
        using var context = Context.Create(b => b.CPU().EnableAlgorithms().Math(MathMode.Default).Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, CudaInstructionSet.ISA_78, nvvmAPI: null);
        var entry = kernel.GetCustomAttribute<GpuKernelAttribute>()!.Explicit
            ? EntryPointDescription.FromExplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromImplicitlyGroupedKernel(kernel);
        return ((PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty)).PTXAssembly;
    }

    static (bool Ok, string Output) Assemble(string ptxas, string ptx, string arch)
    {
        string file = Path.Combine(Path.GetTempPath(), $"polyengine-{Guid.NewGuid():N}.ptx");
        File.WriteAllText(file, ptx);
        try
        {
            var psi = new ProcessStartInfo(ptxas, $"-arch={arch} -v \"{file}\" -o /dev/null")
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            using var p = Process.Start(psi) ?? throw new PolyEngineKernelException($"could not start {ptxas}");
            string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode == 0, output);
        }
        finally { File.Delete(file); }
    }

    static string Summarize(string ptxasOutput)
    {
        var used = ptxasOutput.Split('\n').FirstOrDefault(l => l.Contains("Used", StringComparison.Ordinal));
        return used is null ? "ptxas ok" : "ptxas ok: " + used.Trim().Replace("ptxas info    : ", "");
    }

    /// <summary>ptxas from <paramref name="explicitPath"/>, else PATH, else the CI cache (.ptxas/ptxas under the current or a parent folder).</summary>
    public static string? FindPtxas(string? explicitPath)
    {
        if (explicitPath is not null)
            return File.Exists(explicitPath) ? Path.GetFullPath(explicitPath)
                : throw new PolyEngineKernelException($"--ptxas {explicitPath}: file not found");
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "ptxas");
            if (File.Exists(candidate)) return candidate;
        }
        for (var d = new DirectoryInfo(Environment.CurrentDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, ".ptxas", "ptxas");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}

namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// Marks an ILGPU kernel entry point. `polyengine kernels check` and the tests find every marked method by reflection,
/// compile it to PTX for each target architecture, run ptxas on it when ptxas is available, and run it on ILGPU's CPU
/// accelerator against the CPU backend's reference. <see cref="Explicit"/>: an explicitly grouped kernel (no index
/// parameter; launched with a grid × group configuration, may use shared memory and barriers).
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class GpuKernelAttribute : Attribute
{
    public bool Explicit { get; init; }
}

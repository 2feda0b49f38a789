namespace PolyEngine.Kernels.Cuda;

/// <summary>
/// Marks an ILGPU kernel entry point (implicitly grouped, first parameter an index). `polyengine kernels check` and the
/// tests find every marked method by reflection, compile it to PTX for each target architecture, run ptxas on it when
/// ptxas is available, and run it on ILGPU's CPU accelerator against the CPU backend's reference.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class GpuKernelAttribute : Attribute;

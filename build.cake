// PolyEngine build: Clean -> Build (warnings as errors, from Directory.Build.props) -> Test -> Bench (on request).
//   dotnet tool install -g Cake.Tool
//   dotnet cake                       # Build + Test
//   dotnet cake --target=Bench        # + BenchmarkDotNet op benchmarks and the PyTorch comparison
var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

Task("Clean").Does(() =>
{
    CleanDirectories("./**/bin/" + configuration);
    CleanDirectories("./**/obj");
});

Task("Build").IsDependentOn("Clean").Does(() =>
{
    DotNetBuild("./PolyEngine.sln", new DotNetBuildSettings { Configuration = configuration });
});

Task("Test").IsDependentOn("Build").Does(() =>
{
    DotNetTest("./PolyEngine.sln", new DotNetTestSettings { Configuration = configuration, NoBuild = true });
});

Task("Bench").IsDependentOn("Build").Does(() =>
{
    DotNetRun("./bench/PolyEngine.Bench.csproj", new ProcessArgumentBuilder().Append("--filter").Append("*"),
        new DotNetRunSettings { Configuration = configuration, NoBuild = true });
    StartProcess("bash", new ProcessSettings { Arguments = "bench/baselines/forward_vs_torch.sh gpt2-small 2 8 128 5" });
});

RunTarget(target);

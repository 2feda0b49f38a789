using System.CommandLine;
using PolyEngine.Cli.Commands;

namespace PolyEngine.Cli;

/// <summary>The <c>polyengine</c> command line. Every verb is a thin shell over the PolyEngine library.</summary>
public static class Program
{
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Entry point used by tests: output goes to the given writers.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("PolyEngine: GPT-2 / Pythia forward passes with TransformerLens hooks, on a fast CPU backend.\n" +
            "Start with `polyengine demo`; every verb has --help with examples.") { HelpName = "polyengine" };
        var io = new Io(stdout, stderr);
        root.Subcommands.Add(RunCommand.Create(io));
        root.Subcommands.Add(InspectCommand.Create(io));
        root.Subcommands.Add(ToyCommand.Create(io));
        root.Subcommands.Add(DemoCommand.Create(io));
        root.Subcommands.Add(BenchCommand.Create(io));
        root.Subcommands.Add(FeaturesCommand.Create(io));
        root.Subcommands.Add(CoactivateCommand.Create(io));
        root.Subcommands.Add(InterferenceCommand.Create(io));
        root.Subcommands.Add(ToyDataCommands.Corpus(io));
        root.Subcommands.Add(ToyDataCommands.Sae(io));
        root.Subcommands.Add(ToyDataCommands.Explanations(io));
        root.Subcommands.Add(DevicesCommand.Create(io));
        root.Subcommands.Add(KernelsCommand.Create(io));
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (PolyEngineException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Kernels.Cuda.PolyEngineKernelException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 3;
        }
        catch (OutOfMemoryException e)
        {
            stderr.WriteLine($"error: out of memory ({e.Message}); use a smaller --batch or --seq");
            return 3;
        }
    }
}

/// <summary>Where a command writes.</summary>
public sealed record Io(TextWriter Out, TextWriter Err);

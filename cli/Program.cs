using System.CommandLine;
using System.CommandLine.Parsing;
using PolyEngine.Cli.Commands;

namespace PolyEngine.Cli;

/// <summary>The <c>polyengine</c> command line. Every verb is a thin shell over the PolyEngine library. Every failure ends
/// as one line on stderr starting with <c>error:</c> and a non-zero exit: 2 for bad input or options, 3 for the device
/// or memory, 70 for a bug (with the stack trace when POLYENGINE_DEBUG=1).</summary>
public static class Program
{
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Entry point used by tests: output goes to the given writers.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = Root(new Io(stdout, stderr));
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        var parsed = root.Parse(args.Length == 0 ? ["--help"] : args);
        return Invoke(parsed, config, stderr);
    }

    /// <summary>What the command line would make of <paramref name="args"/>, without running it: its parse errors (none
    /// when it is a valid command). For checking scripts that call polyengine.</summary>
    public static IReadOnlyList<string> ParseErrors(string[] args) => [.. Root(new Io(TextWriter.Null, TextWriter.Null)).Parse(args).Errors.Select(e => e.Message)];

    static RootCommand Root(Io io)
    {
        var root = new RootCommand("PolyEngine: GPT-2 / Pythia forward passes with TransformerLens hooks, on a fast CPU backend.\n" +
            "Start with `polyengine demo`; every verb has --help with examples.") { HelpName = "polyengine" };
        root.Subcommands.Add(RunCommand.Create(io));
        root.Subcommands.Add(InspectCommand.Create(io));
        root.Subcommands.Add(ToyCommand.Create(io));
        root.Subcommands.Add(DemoCommand.Create(io));
        root.Subcommands.Add(BenchCommand.Create(io));
        root.Subcommands.Add(FeaturesCommand.Create(io));
        root.Subcommands.Add(CoactivateCommand.Create(io));
        root.Subcommands.Add(InterferenceCommand.Create(io));
        root.Subcommands.Add(SteerCommand.Create(io));
        root.Subcommands.Add(GradientCommand.Create(io));
        root.Subcommands.Add(GradientVectorsCommand.Create(io));
        root.Subcommands.Add(InjectCommand.Create(io));
        root.Subcommands.Add(ExperimentCommand.Create(io));
        root.Subcommands.Add(ReportCommand.Create(io));
        root.Subcommands.Add(ServeCommand.Create(io));
        root.Subcommands.Add(MergeCommand.Create(io));
        root.Subcommands.Add(ToyDataCommands.Corpus(io));
        root.Subcommands.Add(ToyDataCommands.Sae(io));
        root.Subcommands.Add(ToyDataCommands.Explanations(io));
        root.Subcommands.Add(DevicesCommand.Create(io));
        root.Subcommands.Add(KernelsCommand.Create(io));
        return root;
    }

    static int Invoke(ParseResult parsed, InvocationConfiguration config, TextWriter stderr)
    {
        if (parsed.Errors.Count > 0)
        {
            // One line: what is wrong, and where the help is (System.CommandLine would print the whole help instead).
            var errors = parsed.Errors.Select(e => e.Message.TrimEnd('.')).Distinct();
            stderr.WriteLine($"error: {string.Join("; ", errors)}; see `{CommandPath(parsed.CommandResult)} --help`");
            return 2;
        }
        try
        {
            try { return parsed.Invoke(config); }
            catch (AggregateException e) when (e.InnerExceptions.Count == 1)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();   // a parallel loop's one failure, as itself
                throw;
            }
        }
        catch (PolyEngineException e)
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            return 2;
        }
        catch (Kernels.Cuda.PolyEngineKernelException e)
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            return 3;
        }
        catch (OutOfMemoryException e)
        {
            stderr.WriteLine($"error: out of memory ({OneLine(e.Message)}); use a smaller --batch or --seq, or fewer SAEs at once");
            return 3;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A file that vanished, a full disk, a permission: the library names the path where it can, the OS says the rest.
            stderr.WriteLine($"error: {OneLine(e.Message)}; check the path, its permissions and the free space");
            return 2;
        }
        catch (Exception e)
        {
            if (Environment.GetEnvironmentVariable("POLYENGINE_DEBUG") == "1") stderr.WriteLine(e);
            else stderr.WriteLine($"error: unexpected {e.GetType().Name}: {OneLine(e.Message)} — a bug in polyengine; rerun with POLYENGINE_DEBUG=1 for the stack trace and report it");
            return 70;
        }
    }

    /// <summary>"polyengine bench forward" for the command a parse stopped in.</summary>
    static string CommandPath(CommandResult result)
    {
        var names = new List<string>();
        for (SymbolResult? r = result; r is not null; r = r.Parent)
            if (r is CommandResult c) names.Add(c.Command is RootCommand ? "polyengine" : c.Command.Name);
        names.Reverse();
        return string.Join(" ", names);
    }

    static string OneLine(string message) => string.Join(" ", message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
}

/// <summary>Where a command writes.</summary>
public sealed record Io(TextWriter Out, TextWriter Err);

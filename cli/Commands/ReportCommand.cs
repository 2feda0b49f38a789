using System.CommandLine;
using PolyEngine.Output.Report;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine report</c>: run folders to one self-contained HTML page, figures and summary.json.</summary>
static class ReportCommand
{
    public static Command Create(Io io)
    {
        var runs = new Argument<string[]>("runs") { Description = "Run folders (the --out of experiment and inject runs; other kinds are listed as not reported yet)", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): index.html, summary.json and figures/ (PNG and SVG)", Required = true };
        var cmd = new Command("report", Common.WithExamples(
            "One self-contained HTML page from run folders: per experiment the levels figure (conditional-positive and unconditional means with 95 % CIs), " +
            "the level and regression tables; per neuron run the masking/amplifying box plots per bucket; per injection run the success rates with the paper's stars; every run's facts. Every number shown is in summary.json.",
            "polyengine report fig3/ fig4/ inject/ --out report/"))
        { runs, output };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            string? parent = Path.GetDirectoryName(Path.GetFullPath(outDir));
            if (parent is null || !Directory.Exists(parent)) throw new PolyEngineException($"--out {outDir}: folder '{parent}' does not exist; create it first");
            var page = RunReport.Write(r.GetValue(runs)!, outDir);
            io.Out.WriteLine($"wrote {page} (and summary.json, figures/)");
            return 0;
        });
        return cmd;
    }
}

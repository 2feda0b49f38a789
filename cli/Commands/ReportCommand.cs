using System.CommandLine;
using PolyEngine.Output.Report;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine report</c>: run folders to one self-contained HTML page, figures and summary.json.</summary>
static class ReportCommand
{
    public static Command Create(Io io)
    {
        var runs = new Argument<string[]>("runs") { Description = "Run folders: the --out of interference, coactivate, features, steer, experiment and inject runs", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): index.html, summary.json and figures/ (PNG and SVG)", Required = true };
        var cmd = new Command("report", Common.WithExamples(
            "One self-contained HTML page (no scripts, nothing fetched) from run folders: per interference run the cumulative distribution of pair cosines " +
            "with the five bins, the fractions below each edge and the explanation-similarity distribution; per co-activation run the top pairs and the Jaccard " +
            "distribution; per features run the firing-frequency density; per steer run the mean best change per vector; per experiment the levels figure " +
            "(conditional-positive and unconditional means with 95 % CIs), the regression coefficients with 90/95/99 % intervals and both tables; per neuron " +
            "run the masking/amplifying box plots per bucket; per injection run the success rates with the paper's stars; every run's facts. Figures are also " +
            "written as PNG and SVG, and every number shown is in summary.json. A folder it cannot show is noted on the page and as a warning.",
            "polyengine report interf/ coact/ fig3/ fig4/ inject/ --out report/"))
        { runs, output };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var report = RunReport.Write(r.GetValue(runs)!, outDir);
            foreach (var note in report.Notes) io.Err.WriteLine($"warning: {note}");
            io.Out.WriteLine($"wrote {report.Page} (and summary.json, figures/)");
            return 0;
        });
        return cmd;
    }
}

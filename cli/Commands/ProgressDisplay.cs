using System.Globalization;
using PolyEngine.Scans;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PolyEngine.Cli.Commands;

/// <summary>
/// Progress of a long verb on stderr (Spectre.Console): a bar, what is done out of what, this run's speed and the time
/// left — only when stderr is a terminal that understands ANSI. Otherwise (a file, a pipe, a test's writer) it draws
/// nothing at all, so logs and captured output stay clean. The speed and ETA count only this run's own work, so a
/// resumed run does not claim the earlier run's tokens as its speed. Lines the verb prints while the bar is up go
/// through <see cref="Job.Say"/>, which draws them above the bar when stdout shares the terminal.
/// </summary>
sealed class ProgressDisplay(Io io)
{
    /// <summary>True when progress is drawn: stderr is the process's own, not redirected, and ANSI-capable.</summary>
    bool Live => ReferenceEquals(io.Err, Console.Error) && !Console.IsErrorRedirected && StderrConsole.Value.Profile.Capabilities.Ansi;

    static readonly Lazy<IAnsiConsole> StderrConsole = new(() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
        Ansi = AnsiSupport.Detect,
        ColorSystem = ColorSystemSupport.Detect,
        Interactive = InteractionSupport.Yes,   // Spectre's own test wants stdin and stdout to be terminals too; only stderr matters here
    }));

    /// <summary>A running job: move its bar, print a line.</summary>
    public sealed class Job(Action<Status> report, Action<string> say)
    {
        public void Report(Status status) => report(status);
        public void Say(string line) => say(line);
    }

    /// <summary>Runs <paramref name="work"/> with a <see cref="Job"/> to report to.</summary>
    public T Run<T>(string title, Func<Job, T> work)
    {
        if (!Live) return work(new Job(_ => { }, io.Out.WriteLine));
        var console = StderrConsole.Value;
        bool sharedTerminal = ReferenceEquals(io.Out, Console.Out) && !Console.IsOutputRedirected;
        T result = default!;
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new StatusColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title), maxValue: 1000);
                var status = new StatusBox();
                task.Tag = status;
                result = work(new Job(s =>
                {
                    status.Set(s);
                    task.Value = Math.Clamp(s.Fraction, 0, 1) * 1000;
                }, line =>
                {
                    if (sharedTerminal) console.WriteLine(line);   // above the bar, not through it
                    else io.Out.WriteLine(line);
                }));
            });
        return result;
    }

    /// <summary>A corpus scan's callback (<see cref="ScanProgress"/>) as a status line.</summary>
    public static Status Of(ScanProgress p) => p.Skipping
        ? new(p.Fraction, $"resuming: reading past {p.Tokens:N0} tokens an earlier run scanned", null)
        : new(p.Fraction, $"{p.Tokens:N0} tokens, {p.TokensPerSecond:N0} tokens/s", p.SecondsLeft);

    /// <summary>Where a job stands: the fraction done, what that is in the job's own units, and the seconds left (null: unknown yet).</summary>
    public readonly record struct Status(double Fraction, string Done, double? SecondsLeft);

    /// <summary>"ETA 30:05:09" (hours past 24 kept), or "ETA --:--:--" before there is a pace.</summary>
    internal static string Eta(double? secondsLeft)
    {
        if (secondsLeft is not double left) return "ETA --:--:--";
        long s = (long)Math.Min(Math.Max(left, 0), 99 * 3600 + 59 * 60 + 59);
        return string.Create(CultureInfo.InvariantCulture, $"ETA {s / 3600:00}:{s / 60 % 60:00}:{s % 60:00}");
    }

    sealed class StatusBox
    {
        Status _status;
        public void Set(Status s) { lock (this) _status = s; }
        public Status Get() { lock (this) return _status; }
    }

    sealed class StatusColumn : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            task.Tag is StatusBox box ? new Text($"{box.Get().Done}, {Eta(box.Get().SecondsLeft)}", new Style(Color.Grey)) : Text.Empty;
    }
}

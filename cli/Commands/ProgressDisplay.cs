using System.Globalization;
using PolyEngine.Scans;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PolyEngine.Cli.Commands;

/// <summary>
/// Progress of a long verb on stderr (Spectre.Console): a bar, what is done out of what, this run's speed and the time
/// left — only when stderr is a terminal that understands ANSI. Otherwise (a file, a pipe, a test's writer) it prints
/// nothing at all, so logs and captured output stay clean. The speed and ETA count only this run's own work, so a
/// resumed run does not claim the earlier run's tokens as its speed.
/// </summary>
sealed class ProgressDisplay
{
    readonly Io _io;

    public ProgressDisplay(Io io) => _io = io;

    /// <summary>True when progress is drawn: stderr is the process's own, not redirected, and ANSI-capable.</summary>
    bool Live => ReferenceEquals(_io.Err, Console.Error) && !Console.IsErrorRedirected && Console.Error is not null && StderrConsole.Value.Profile.Capabilities.Ansi;

    static readonly Lazy<IAnsiConsole> StderrConsole = new(() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
        Ansi = AnsiSupport.Detect,
        ColorSystem = ColorSystemSupport.Detect,
        Interactive = InteractionSupport.Yes,   // Spectre's own test wants stdin and stdout to be terminals too; only stderr matters here
    }));

    /// <summary>Runs <paramref name="work"/>, handing it a callback that moves the bar to a <see cref="Status"/>.</summary>
    public T Run<T>(string title, Func<Action<Status>, T> work)
    {
        if (!Live) return work(_ => { });
        T result = default!;
        StderrConsole.Value.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new StatusColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title), maxValue: 1000);
                var status = new StatusBox();
                task.Tag = status;
                result = work(s =>
                {
                    status.Set(s);
                    task.Value = Math.Clamp(s.Fraction, 0, 1) * 1000;
                });
            });
        return result;
    }

    /// <summary>A corpus scan's callback (<see cref="ScanProgress"/>) as a status line.</summary>
    public static Status Of(ScanProgress p) =>
        new(p.Fraction, $"{p.Tokens:N0} tokens, {p.TokensPerSecond:N0} tokens/s", p.SecondsLeft);

    /// <summary>Where a job stands: the fraction done, what that is in the job's own units, and the seconds left (null: unknown yet).</summary>
    public readonly record struct Status(double Fraction, string Done, double? SecondsLeft);

    sealed class StatusBox
    {
        Status _status;
        public void Set(Status s) { lock (this) _status = s; }
        public Status Get() { lock (this) return _status; }
    }

    sealed class StatusColumn : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            if (task.Tag is not StatusBox box) return Text.Empty;
            var s = box.Get();
            string eta = s.SecondsLeft is double left
                ? "ETA " + TimeSpan.FromSeconds(Math.Min(left, 359_999)).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture)
                : "ETA --:--:--";
            return new Text($"{s.Done}, {eta}", new Style(Color.Grey));
        }
    }
}

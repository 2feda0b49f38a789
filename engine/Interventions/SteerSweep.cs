using System.Diagnostics;
using PolyEngine.Kernels;

namespace PolyEngine.Interventions;

/// <summary>One row of a sweep: a prompt under one edit (or its baseline: item −1, amount 0 for vectors and 1 for neurons),
/// the metrics in the plan's order, and optionally the top-k next tokens.</summary>
public sealed record SteerRow(int Prompt, int Item, float Amount, double[] Metrics, int[]? TopIds = null, float[]? TopProbabilities = null)
{
    public bool IsBaseline => Item < 0;
}

/// <summary>
/// The batch planner: runs a <see cref="SteerPlan"/> in passes bounded by its rows budget. Prompts go in groups (only as
/// many as a pass needs for its GEMMs to run at speed; right-padded to the group's longest, exact under causal attention);
/// each group runs its clean pass once up to the hook
/// (<see cref="RunOptions.StopAt"/>), then continues from there: once unedited (the baselines, whose last-position logits
/// stay on the backend as the KL reference) and then fanned out to one row per edit and prompt (<see cref="Model.Resume"/>),
/// each row with its own edit, the LM head at each row's last real position only, and the metrics reduced on the backend
/// (<see cref="IReductionOps.RowMetrics"/>, and <see cref="IReductionOps.RankStats"/> for the rank metrics). No [rows, d_vocab] tensor
/// leaves the device.
/// With a first edited position (<see cref="SteerPlan.From"/>) the edited passes are windowed: they run only the positions
/// from the group's earliest edited one on, over the clean K/V the baseline pass leaves (<see cref="KvPrefix"/>).
/// </summary>
public static class SteerSweep
{
    /// <summary>Token positions a pass should hold for the GEMMs to run at speed; prompts are grouped only up to this.</summary>
    const int MinPassRows = 1024;

    /// <summary>Progress: interventions done (baselines not counted) and the sweep's total.</summary>
    public delegate void Progress(long done, long total);

    /// <summary>Runs the plan's prompts from <paramref name="firstPrompt"/> on and hands each finished prompt group's rows to
    /// <paramref name="sink"/> (per prompt: the baseline row, then the edits in <see cref="SteerPlan.EditRows"/> order).</summary>
    public static void Run(Model model, SteerPlan plan, Action<IReadOnlyList<SteerRow>> sink, Progress? progress = null, int firstPrompt = 0,
        CancellationToken cancel = default)
    {
        var units = plan.Check(model.Spec);
        var similarity = new TokenSimilarity(model.W_E, plan.CenterEmbeddings);
        var edits = plan.EditRows();
        var b = model.Backend;
        int vocab = model.Spec.DVocab, width = plan.Hook.WidthFor(model.Spec);
        bool ranks = plan.Metrics.Any(m => m.NeedsRanks());
        long total = plan.Interventions, done = (long)firstPrompt * edits.Count;
        int longest = plan.Prompts.Max(p => p.Ids.Length);
        // Prompts per group: enough that a pass holds ~MinPassRows token positions (a GEMM's rows; fewer prompts pad less),
        // no more than fit the budget with every edit of each in one pass, and at least one.
        long perPrompt = (long)longest * Math.Max(1, edits.Count);
        int groupSize = (int)Math.Clamp(Math.Min((MinPassRows + perPrompt - 1) / perPrompt, plan.RowsBudget / perPrompt), 1, 64);
        for (int p0 = firstPrompt; p0 < plan.Prompts.Count; p0 += groupSize)
        {
            cancel.ThrowIfCancellationRequested();
            var group = plan.Prompts.Skip(p0).Take(groupSize).ToArray();
            int n = group.Length, seq = group.Max(p => p.Ids.Length);
            var order = group.Select(p => ranks ? similarity.Order(p.Targets[0]) : null).ToArray();   // the rank metrics' similarity orders
            using var weightBuffer = b.Upload(Weights(similarity, group, vocab));
            using var reference = b.Allocate((long)n * vocab);
            using var state = model.Run(group.Select(p => p.Ids).ToArray(), new RunOptions { StopAt = plan.Hook, KeepKv = false, Logits = LogitsMode.None }).State!;
            // Edited from the group's first edited position q0 on: the edited passes run positions [q0, seq) only, over the
            // clean K/V of the positions before it, which the baseline pass below leaves behind.
            var firstEdited = Enumerable.Range(p0, n).Select(plan.FirstEdited).ToArray();
            int q0 = firstEdited.Min();
            using var kv = q0 > 0 ? new CleanKv(model, plan.Hook, n * seq) : null;
            var rows = new List<SteerRow>[n];
            for (int i = 0; i < n; i++) rows[i] = [];

            // The baselines: the clean pass continued unedited; its logits are the KL reference of the group's rows.
            model.Resume(state, new RunOptions
            {
                Logits = LogitsMode.None,
                DeviceTaps = kv?.Taps ?? [],
                LastLogits = logits =>
                {
                    b.Copy(logits, reference);
                    var metrics = Measure(b, logits, n, vocab, Enumerable.Range(0, n).ToArray(), weightBuffer, reference, plan, order);
                    for (int i = 0; i < n; i++) rows[i].Add(metrics(i, i, -1, plan.NeuronLocus ? 1f : 0f));
                },
            });

            // The edits, fanned out copies-major: copy c holds edit e0 + c for every prompt of the group. A windowed pass holds
            // seq − q0 positions per row, and the keys of all seq (two d_model-wide rows each, counted as a quarter position).
            int window = seq - q0;
            int copiesPerPass = (int)Math.Clamp(Math.Min(plan.RowsBudget / ((long)n * window), q0 > 0 ? 4L * plan.RowsBudget / ((long)n * seq) : long.MaxValue),
                1, int.MaxValue);
            var prefix = kv?.Prefix(q0);
            for (int e0 = 0; e0 < edits.Count; e0 += copiesPerPass)
            {
                cancel.ThrowIfCancellationRequested();
                int copies = Math.Min(copiesPerPass, edits.Count - e0);
                var edit = RowEdit(plan, units, edits, e0, copies, n, width) with
                {
                    From = plan.From is null ? null : Enumerable.Range(0, copies * n).Select(r => firstEdited[r % n] - q0).ToArray(),
                };
                var groupOf = Enumerable.Range(0, copies * n).Select(r => r % n).ToArray();
                model.Resume(state, new RunOptions
                {
                    Logits = LogitsMode.None,
                    Edits = [edit],
                    LastLogits = logits =>
                    {
                        var metrics = Measure(b, logits, copies * n, vocab, groupOf, weightBuffer, reference, plan, order);
                        for (int c = 0; c < copies; c++)
                            for (int i = 0; i < n; i++)
                            {
                                var (item, amount) = edits[e0 + c];
                                rows[i].Add(metrics(c * n + i, i, item, amount));
                            }
                    },
                }, copies, prefix);
                done += (long)copies * n;
                progress?.Invoke(done, total);
            }
            sink(rows.Select((r, i) => r.Select(x => x with { Prompt = p0 + i })).SelectMany(x => x).ToList());
        }
    }

    /// <summary>The clean K and V of the layers a pass resumed at <c>hook</c> attends in, copied from the baseline pass by
    /// device taps into buffers [batch, seq, d_model] (<see cref="KvPrefix"/>).</summary>
    sealed class CleanKv : IDisposable
    {
        readonly DeviceBuffer?[] _k, _v;

        public CleanKv(Model model, HookName hook, int positions)
        {
            var spec = model.Spec;
            int first = KvPrefix.FirstLayer(hook);
            var key = spec.RotaryDim > 0 ? HookPoint.AttnRotK : HookPoint.AttnK;
            _k = new DeviceBuffer?[spec.NLayers];
            _v = new DeviceBuffer?[spec.NLayers];
            var taps = new List<DeviceTap>();
            for (int l = first; l < spec.NLayers; l++)
            {
                var (k, v) = (_k[l] = model.Backend.Allocate((long)positions * spec.DModel), _v[l] = model.Backend.Allocate((long)positions * spec.DModel));
                taps.Add(new DeviceTap(new HookName(key, l), x => model.Backend.Copy(x, k)));
                taps.Add(new DeviceTap(new HookName(HookPoint.AttnV, l), x => model.Backend.Copy(x, v)));
            }
            Taps = taps;
        }

        public IReadOnlyList<DeviceTap> Taps { get; }

        public KvPrefix Prefix(int positions) => new(positions, _k, _v);

        public void Dispose()
        {
            foreach (var buf in _k.Concat(_v)) buf?.Dispose();
        }
    }

    /// <summary>weights [n, 2, vocab]: per prompt the max cosine to its targets and the target indicator.</summary>
    static float[] Weights(TokenSimilarity similarity, IReadOnlyList<SteerPrompt> group, int vocab)
    {
        var weights = new float[(long)group.Count * 2 * vocab];
        for (int i = 0; i < group.Count; i++)
        {
            similarity.MaxCosine(group[i].Targets).CopyTo(weights, (long)i * 2 * vocab);
            foreach (int t in group[i].Targets.Distinct()) weights[((long)i * 2 + 1) * vocab + t] = 1f;
        }
        return weights;
    }

    /// <summary>The metrics of prompts as they are, with no edit: each prompt's row as a sweep's baseline row (item −1), in
    /// groups right-padded and read at each prompt's last real token — what the prompt locus measures, where the text
    /// itself is the intervention. KL is against the prompt itself (0).</summary>
    public static IReadOnlyList<SteerRow> Baselines(Model model, IReadOnlyList<SteerPrompt> prompts, IReadOnlyList<SteerMetric> metrics, bool centerEmbeddings = false,
        int groupSize = 32)
    {
        var plan = new SteerPlan { Hook = new HookName(HookPoint.Embed), Prompts = prompts, Metrics = metrics, CenterEmbeddings = centerEmbeddings, Vectors = [[1f]] };
        var similarity = new TokenSimilarity(model.W_E, centerEmbeddings);
        var b = model.Backend;
        int vocab = model.Spec.DVocab;
        bool ranks = metrics.Any(m => m.NeedsRanks());
        var rows = new List<SteerRow>();
        for (int p0 = 0; p0 < prompts.Count; p0 += groupSize)
        {
            var group = prompts.Skip(p0).Take(groupSize).ToArray();
            int n = group.Length;
            var order = group.Select(p => ranks ? similarity.Order(p.Targets[0]) : null).ToArray();
            using var weightBuffer = b.Upload(Weights(similarity, group, vocab));
            using var reference = b.Allocate((long)n * vocab);
            model.Run(group.Select(p => p.Ids).ToArray(), new RunOptions
            {
                Logits = LogitsMode.None,
                LastLogits = logits =>
                {
                    b.Copy(logits, reference);
                    var measure = Measure(b, logits, n, vocab, Enumerable.Range(0, n).ToArray(), weightBuffer, reference, plan, order);
                    for (int i = 0; i < n; i++) rows.Add(measure(i, i, -1, 0f) with { Prompt = p0 + i });
                },
            });
        }
        return rows;
    }

    /// <summary>Runs the whole plan and keeps every row (the library's one-call form; the CLI streams instead).</summary>
    public static SteerResult Collect(Model model, SteerPlan plan, Progress? progress = null)
    {
        var rows = new List<SteerRow>();
        var sw = Stopwatch.StartNew();
        Run(model, plan, rows.AddRange, progress);
        return new SteerResult(plan, rows, sw.Elapsed.TotalSeconds);
    }

    /// <summary>The edit of a pass: per batch row (copy c, prompt i) the edit e0 + c — x += scale·v̂ (the float32 product
    /// formed first), or coordinate i of x times the factor.</summary>
    static HookEdit RowEdit(SteerPlan plan, float[][] units, IReadOnlyList<(int Item, float Amount)> edits, int e0, int copies, int n, int width)
    {
        var values = new float[(long)copies * n * width];
        if (plan.NeuronLocus) Array.Fill(values, 1f);
        for (int c = 0; c < copies; c++)
        {
            var (item, amount) = edits[e0 + c];
            for (int i = 0; i < n; i++)
            {
                var row = values.AsSpan((c * n + i) * width, width);
                if (plan.NeuronLocus) row[plan.Neurons[item]] = amount;
                else for (int k = 0; k < width; k++) row[k] = amount * units[item][k];
            }
        }
        return plan.NeuronLocus ? new HookEdit(plan.Hook) { Mul = values } : new HookEdit(plan.Hook) { Add = values };
    }

    /// <summary>The metrics of logits [rows, vocab] on the backend, as a row factory (row, prompt in group, item, amount).</summary>
    static Func<int, int, int, float, SteerRow> Measure(IBackend b, DeviceBuffer logits, int rows, int vocab, int[] groupOf, DeviceBuffer weights,
        DeviceBuffer reference, SteerPlan plan, int[]?[] order)
    {
        var reduced = b.Reductions.RowMetrics(logits, rows, vocab, groupOf, weights, 2, reference);
        var top = plan.TopK > 0 ? b.Reductions.TopLogits(logits, rows, vocab, plan.TopK) : null;
        var rankStats = plan.Metrics.Any(m => m.NeedsRanks()) ? b.Reductions.RankStats(logits, rows, vocab, groupOf, order.Select(o => o!).ToArray()) : null;
        return (r, prompt, item, amount) =>
        {
            (double, double, double, double)? ranks = rankStats is null ? null : SteerMetrics.Ranks(rankStats, r);
            var values = plan.Metrics.Select(m => m switch
            {
                SteerMetric.WeightedCosine => reduced.Expectation(r, 0),
                SteerMetric.Overlap => reduced.Expectation(r, 1),
                SteerMetric.Kl => reduced.Kl![r],
                SteerMetric.Spearman => ranks!.Value.Item1,
                SteerMetric.Kendall => ranks!.Value.Item2,
                SteerMetric.SpearmanRank => ranks!.Value.Item3,
                SteerMetric.KendallRank => ranks!.Value.Item4,
                _ => throw new ArgumentOutOfRangeException(nameof(m)),
            }).ToArray();
            return new SteerRow(prompt, item, amount, values,
                top?.Ids.AsSpan(r * top.K, top.K).ToArray(),
                top is null ? null : Enumerable.Range(0, top.K).Select(j => top.At(r, j).Probability).ToArray());
        };
    }
}

using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Scans;

namespace PolyEngine.Interventions;

/// <summary>
/// A sweep that survives being killed: the rows of the finished prompt groups are saved to a <see cref="ScanCheckpoint"/>
/// (metrics bit-exact), and a rerun under the same run key continues after them and ends with the same rows as an
/// uninterrupted run (the groups fall on the same boundaries).
/// </summary>
public static class SteerRun
{
    /// <param name="resumed">Called with the number of prompts an earlier run finished, when resuming.</param>
    public static SteerResult Run(Model model, SteerPlan plan, ScanCheckpoint? checkpoint = null, SteerSweep.Progress? progress = null,
        Action<int>? resumed = null, CancellationToken cancel = default)
    {
        var rows = new List<SteerRow>();
        int first = 0;
        double secondsBefore = 0;
        if (checkpoint?.Open() is var (prompts, file))
            using (file)
            {
                rows.AddRange(Restore(file, plan));
                first = (int)prompts;
                secondsBefore = ScanCheckpoint.SecondsIn(file);
                resumed?.Invoke(first);
            }
        var clock = Stopwatch.StartNew();
        SteerSweep.Run(model, plan, group =>
        {
            rows.AddRange(group);
            int done = group[^1].Prompt + 1;
            checkpoint?.MaybeSave(done, w =>
            {
                Save(w, rows, plan);
                ScanCheckpoint.AddSeconds(w, secondsBefore + clock.Elapsed.TotalSeconds);
            });
        }, progress, first, cancel);
        return new SteerResult(plan, rows, secondsBefore + clock.Elapsed.TotalSeconds);
    }

    static void Save(SafeTensorsWriter w, List<SteerRow> rows, SteerPlan plan)
    {
        int n = rows.Count, m = plan.Metrics.Count, k = plan.TopK;
        w.Add("prompt", rows.Select(r => r.Prompt).ToArray(), n);
        w.Add("item", rows.Select(r => r.Item).ToArray(), n);
        w.Add("amount", rows.Select(r => r.Amount).ToArray(), n);
        w.Add("metrics", rows.SelectMany(r => r.Metrics.Select(BitConverter.DoubleToInt64Bits)).ToArray(), n, m);   // the doubles' bits
        if (k > 0)
        {
            w.Add("top_ids", rows.SelectMany(r => r.TopIds!).ToArray(), n, k);
            w.Add("top_probabilities", rows.SelectMany(r => r.TopProbabilities!).ToArray(), n, k);
        }
    }

    static IEnumerable<SteerRow> Restore(SafeTensorsFile f, SteerPlan plan)
    {
        int m = plan.Metrics.Count, k = plan.TopK;
        var prompt = f.ReadInt64("prompt");
        var item = f.ReadInt64("item");
        var amount = f.ReadFloat32("amount");
        var metrics = f.ReadInt64("metrics");
        var ids = k > 0 ? f.ReadInt64("top_ids") : null;
        var probs = k > 0 ? f.ReadFloat32("top_probabilities") : null;
        for (int r = 0; r < prompt.Length; r++)
            yield return new SteerRow((int)prompt[r], (int)item[r], amount[r],
                metrics.AsSpan(r * m, m).ToArray().Select(BitConverter.Int64BitsToDouble).ToArray(),
                ids?.AsSpan(r * k, k).ToArray().Select(x => (int)x).ToArray(), probs?.AsSpan(r * k, k).ToArray());
    }
}

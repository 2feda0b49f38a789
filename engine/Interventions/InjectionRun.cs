using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Scans;

namespace PolyEngine.Interventions;

/// <summary>The trials of an injection run and the seconds it took (resumed runs included).</summary>
public sealed record InjectionResult(InjectionPlan Plan, IReadOnlyList<InjectionTrial> Trials, double Seconds)
{
    public IReadOnlyList<InjectionSummary> Summary() => PromptInjection.Summarize(Trials);
}

/// <summary>
/// An injection that survives being killed: the finished (type, sentence) units' counts and masses are saved to a
/// <see cref="ScanCheckpoint"/> (masses bit-exact); a rerun under the same run key rebuilds their trials (each trial's
/// tokens come from its own seed, so its ids are recomputed, not stored) and continues after them.
/// </summary>
public static class InjectionRun
{
    /// <param name="progress">Called with (units done, units in all) after each unit.</param>
    /// <param name="resumed">Called with the number of units an earlier run finished, when resuming.</param>
    public static InjectionResult Run(ITrialModel model, InjectionPlan plan, ScanCheckpoint? checkpoint = null, Action<int, int>? progress = null,
        Action<int>? resumed = null, CancellationToken cancel = default)
    {
        plan.Validate();
        var units = plan.Units();
        var trials = new List<InjectionTrial>();
        int first = 0;
        double secondsBefore = 0;
        if (checkpoint?.Open() is var (done, file))
            using (file)
            {
                first = (int)done;
                trials.AddRange(Restore(model, plan, file, units.Take(first).ToList()));
                secondsBefore = ScanCheckpoint.SecondsIn(file);
                resumed?.Invoke(first);
            }
        var clock = Stopwatch.StartNew();
        PromptInjection.Run(model, plan, (unitsDone, unit) =>
        {
            trials.AddRange(unit);
            checkpoint?.MaybeSave(unitsDone, w =>
            {
                w.Add("count_base", trials.Select(t => t.CountBase).ToArray(), trials.Count);
                w.Add("count_injected", trials.Select(t => t.CountInjected).ToArray(), trials.Count);
                w.Add("mass_base", trials.Select(t => BitConverter.DoubleToInt64Bits(t.MassBase)).ToArray(), trials.Count);
                w.Add("mass_injected", trials.Select(t => BitConverter.DoubleToInt64Bits(t.MassInjected)).ToArray(), trials.Count);
                ScanCheckpoint.AddSeconds(w, secondsBefore + clock.Elapsed.TotalSeconds);
            });
            progress?.Invoke(unitsDone, units.Count);
        }, first, cancel);
        return new InjectionResult(plan, trials, secondsBefore + clock.Elapsed.TotalSeconds);
    }

    /// <summary>The trials of the first units, in run order, from the checkpoint's numbers and the plan's seeds.</summary>
    static IEnumerable<InjectionTrial> Restore(ITrialModel model, InjectionPlan plan, SafeTensorsFile f, List<(string Type, int Sentence)> units)
    {
        var (cb, ci, mb, mi) = (f.ReadInt64("count_base"), f.ReadInt64("count_injected"), f.ReadInt64("mass_base"), f.ReadInt64("mass_injected"));
        int k = 0;
        foreach (var (type, s) in units)
        {
            string sentence = plan.Sentences[type][s];
            var baseIds = model.Encode(sentence, plan.PrependBos) ?? [];
            foreach (var c in Enum.GetValues<InjectionCategory>())
                for (int t = 0; t < plan.Trials; t++, k++)
                    yield return new InjectionTrial(type, c, s, t, model.Encode(PromptInjection.Prompt(PromptInjection.Sample(plan, type, s, c, t), sentence), plan.PrependBos) ?? [],
                        baseIds, (int)cb[k], (int)ci[k], BitConverter.Int64BitsToDouble(mb[k]), BitConverter.Int64BitsToDouble(mi[k]));
        }
        if (k != cb.Length) throw new PolyEngineException($"the checkpoint holds {cb.Length} trials, but its {units.Count} units make {k}; delete it or pass --overwrite");
    }
}

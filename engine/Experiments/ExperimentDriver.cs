using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using PolyEngine.Scans;

namespace PolyEngine.Experiments;

/// <summary>One unit's outcome (a target, or a sampled neuron and feature): its cases, and what it counted (units run,
/// inputs skipped and why).</summary>
public sealed record Outcome<TCase>(IReadOnlyList<TCase> Cases, IReadOnlyDictionary<string, int> Counts);

/// <summary>One target's outcome in the steering and prompt experiments.</summary>
public sealed record TargetOutcome(IReadOnlyList<FeatureCase> Cases, IReadOnlyDictionary<string, int> Counts);

/// <summary>An experiment's cases and counts, and the seconds it took (resumed runs included).</summary>
public sealed record ExperimentResult<TCase>(List<TCase> Cases, Dictionary<string, int> Counts, double Seconds);

/// <summary>The steering and prompt experiments' result.</summary>
public sealed record ExperimentResult(List<FeatureCase> Cases, Dictionary<string, int> Counts, double Seconds);

/// <summary>
/// Runs an experiment target by target — the case list of the sample's targets in order, or one shard of it (target
/// i of n when i ≡ shard mod n) — and survives being killed: after each target the cases and counts so far go to a
/// <see cref="ScanCheckpoint"/>, and a rerun under the same run key continues after the last saved target.
/// </summary>
public static class ExperimentDriver
{
    static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, IncludeFields = false };

    /// <summary>The sample's (SAE, target) list in run order, or one shard of it.</summary>
    public static List<(SaeSample Sae, SampleTarget Target)> Work(IReadOnlyList<SaeSample> samples, Shard? shard = null) =>
        [.. (shard ?? Shard.All).Of(samples.SelectMany(s => s.Targets.Select(t => (s, t))))];

    public static ExperimentResult Run(IReadOnlyList<(SaeSample Sae, SampleTarget Target)> work, Func<SaeSample, SampleTarget, TargetOutcome> one,
        ScanCheckpoint? checkpoint = null, Action<int, int>? progress = null, Action<int>? resumed = null, CancellationToken cancel = default)
    {
        var r = Run(work, w => { var o = one(w.Sae, w.Target); return new Outcome<FeatureCase>(o.Cases, o.Counts); }, checkpoint, progress, resumed, cancel);
        return new ExperimentResult(r.Cases, r.Counts, r.Seconds);
    }

    /// <summary>The units of <paramref name="work"/> in order through <paramref name="one"/>, checkpointed after each and
    /// resumed after the last saved one; the cases are kept as JSON in a tensor of the checkpoint.</summary>
    public static ExperimentResult<TCase> Run<TWork, TCase>(IReadOnlyList<TWork> work, Func<TWork, Outcome<TCase>> one,
        ScanCheckpoint? checkpoint = null, Action<int, int>? progress = null, Action<int>? resumed = null, CancellationToken cancel = default)
    {
        var cases = new List<TCase>();
        var counts = new Dictionary<string, int>();
        int first = 0;
        double secondsBefore = 0;
        if (checkpoint?.Open() is var (done, file))
            using (file)
            {
                first = (int)done;
                cases.AddRange(JsonSerializer.Deserialize<List<TCase>>(file.Bytes("cases"), Json)!);
                foreach (var (k, v) in JsonSerializer.Deserialize<Dictionary<string, int>>(file.Metadata["counts"], Json)!) counts[k] = v;
                secondsBefore = ScanCheckpoint.SecondsIn(file);
                resumed?.Invoke(first);
            }
        var clock = Stopwatch.StartNew();
        for (int i = first; i < work.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Invoke(i, work.Count);
            var outcome = one(work[i]);
            cases.AddRange(outcome.Cases);
            foreach (var (k, v) in outcome.Counts) counts[k] = counts.GetValueOrDefault(k) + v;
            checkpoint?.MaybeSave(i + 1, w =>
            {
                var json = JsonSerializer.SerializeToUtf8Bytes(cases, Json);   // a tensor, not metadata: the header is capped at 100 MiB
                w.AddRaw("cases", Formats.SafeTensorDType.U8, [json.Length], json, json.Length);
                w.AddMetadata("counts", JsonSerializer.Serialize(counts, Json));
                ScanCheckpoint.AddSeconds(w, secondsBefore + clock.Elapsed.TotalSeconds);
            });
        }
        progress?.Invoke(work.Count, work.Count);
        return new ExperimentResult<TCase>(cases, counts, secondsBefore + clock.Elapsed.TotalSeconds);
    }
}

using System.Globalization;
using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Scans;

/// <summary>Everything an interference run takes besides its SAEs.</summary>
public sealed record InterferenceJobOptions
{
    public InterferenceOptions Scan { get; init; } = new();
    /// <summary>Fail on a malformed explanation line instead of skipping it.</summary>
    public bool Strict { get; init; }
    /// <summary>A model (folder or cached hub id) whose LM head gives the logit-lens proxy; null: no logit proxy.</summary>
    public string? Model { get; init; }
    /// <summary>A <c>polyengine coactivate</c> output folder for the co-activation proxy; null: none.</summary>
    public string? Coactivation { get; init; }
    public InterferenceSampleOptions? Sample { get; init; }
    /// <summary>How often the open SAE's state is saved (at most; slow saves stretch it).</summary>
    public TimeSpan CheckpointEvery { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>What the job tells its caller as it goes.</summary>
public interface IInterferenceLog
{
    void Info(string line);
    /// <summary>Tiles done of the current SAE, and pairs per second so far.</summary>
    void Progress(string sae, long tilesDone, long tiles, double pairsPerSecond);
}

/// <summary>
/// An interference run over several SAEs, one after another in bounded memory, resumable: each SAE's scan state is
/// checkpointed in <c>checkpoint.{k}.safetensors</c> in the output folder as it goes (every <see cref="InterferenceJobOptions.CheckpointEvery"/>, 30 s by default, adapting to
/// the save's cost), and replaced by the SAE's <see cref="InterferenceResult"/> when it is done. A rerun with the same
/// run key skips finished SAEs and continues the open one from its last tile, to identical results.
/// </summary>
public static class InterferenceJob
{
    /// <summary>The run's key (see <see cref="Scans.RunKey"/>): each SAE's cfg and weights, explanation and feature-list
    /// files, the model's config and weights (logit-lens proxy) and the co-activation triangle, by content; and the options.
    /// A checkpoint is resumed only by a run with the same key.</summary>
    public static RunKey RunKey(IReadOnlyList<InterferenceSource> sources, InterferenceJobOptions o)
    {
        var inputs = new JsonObject();
        for (int i = 0; i < sources.Count; i++)
        {
            Scans.RunKey.AddFolder(inputs, $"sae[{i}]", sources[i].Folder, "cfg.json", "*.safetensors");
            Scans.RunKey.AddFile(inputs, $"explanations[{i}]", sources[i].Explanations);
            Scans.RunKey.AddFile(inputs, $"active[{i}]", sources[i].Active);
        }
        if (o.Model is { } model) Scans.RunKey.AddFolder(inputs, "model", HfHub.ResolveModelFolder(model), "config.json", "*.safetensors", "*.safetensors.index.json");
        if (o.Coactivation is { } c) Scans.RunKey.AddFile(inputs, "coactivation", Path.Combine(c, "coactivation.safetensors"));
        var options = new JsonObject
        {
            ["scan"] = "interference",
            ["taus"] = new JsonArray(o.Scan.Taus.Select(t => (JsonNode)t).ToArray()), ["partners"] = o.Scan.PartnersPerBin, ["top"] = o.Scan.TopN,
            ["tile"] = o.Scan.Tile, ["strict"] = o.Strict, ["logit_proxy"] = o.Model is not null, ["coactivation_proxy"] = o.Coactivation is not null,
            ["sample"] = o.Sample is null ? null : $"{o.Sample.Targets}:{o.Sample.PartnersPerBin}:{o.Sample.Seed}",
        };
        if (o.Scan.Shard.Count > 1) options["shard"] = o.Scan.Shard.ToString();
        return new RunKey(inputs, options);
    }

    public static string CheckpointPath(string outDir, int sae) => Path.Combine(outDir, $"checkpoint.{sae}.safetensors");

    /// <summary>A shard's output for SAE k: its raw scan state (<see cref="InterferenceState.Save"/>), which
    /// <c>polyengine merge</c> adds to the other shards'.</summary>
    public static string StatePath(string outDir, int sae) => Path.Combine(outDir, $"state.{sae}.safetensors");

    /// <summary>The logit-lens proxy's model: its spec and the Gram matrix of its LM head (null without --model).</summary>
    public static (ModelSpec? Spec, float[]? Gram) OpenLens(IBackend backend, string? model, IInterferenceLog log)
    {
        if (model is null) return (null, null);
        string folder = HfHub.ResolveModelFolder(model);
        var spec = ModelSpec.FromConfigFile(Path.Combine(folder, "config.json"));
        float[] head;
        using (var files = WeightFiles.Open(folder)) head = ModelParams.LoadHead(files, spec);
        log.Info($"model: {folder} (logit-lens proxy: cos(W_U·d̂_a, W_U·d̂_b) over d_vocab {spec.DVocab:N0})");
        return (spec, LogitLens.Gram(backend, head, spec.DVocab, spec.DModel));
    }

    /// <summary>A finished scan state made into the SAE's result: each reported pair annotated, the sample drawn.</summary>
    public static InterferenceResult Finish(IBackend backend, float[]? gram, InterferenceInputs inp, InterferenceState state, InterferenceJobOptions o, double seconds)
    {
        var lens = gram is null ? null : new LogitLens(backend, gram, inp.Unit, inp.D);
        using var coactivation = o.Coactivation is null ? null : new CoactivationLookup(o.Coactivation, inp.Name, inp.Config.DSae);
        return InterferenceResult.From(inp, state, o.Scan, lens, coactivation, o.Sample, seconds);
    }

    /// <summary>Scans every SAE not already finished in <paramref name="outDir"/>; returns the result file of each, in order.</summary>
    public static IReadOnlyList<string> Run(IBackend backend, IReadOnlyList<InterferenceSource> sources, InterferenceJobOptions o,
        string outDir, string runKey, IInterferenceLog log)
    {
        var names = SaeNames.Of(sources.Select(s => s.Folder));
        bool sharded = o.Scan.Shard.Count > 1;
        // A shard needs the model's spec only, to check the SAEs; the merge computes the logit-lens proxy.
        (ModelSpec? spec, float[]? gram) = sharded
            ? (o.Model is null ? null : ModelSpec.FromConfigFile(Path.Combine(HfHub.ResolveModelFolder(o.Model), "config.json")), (float[]?)null)
            : OpenLens(backend, o.Model, log);
        var results = new List<string>();
        for (int k = 0; k < sources.Count; k++)
        {
            var ck = new ScanCheckpoint { Path = CheckpointPath(outDir, k), RunKey = runKey, Every = o.CheckpointEvery };
            results.Add(sharded ? StatePath(outDir, k) : ck.Path);
            if (sharded && File.Exists(StatePath(outDir, k)))
            {
                using var st = SafeTensorsFile.Open(StatePath(outDir, k));
                if (st.Metadata.GetValueOrDefault("run_key") == runKey) { log.Info($"{names[k]}: finished by an earlier run"); continue; }
            }
            InterferenceState? resume = null;
            SafeTensorsFile? saved = null;
            if (ck.Open() is var (_, file))
            {
                if (file.Metadata.GetValueOrDefault("phase") == "done")
                {
                    file.Dispose();
                    log.Info($"{names[k]}: finished by an earlier run");
                    continue;
                }
                saved = file;
            }
            try
            {
                var inp = InterferenceInputs.Load(sources[k], names[k], o.Strict);
                Describe(log, inp);
                if (spec is not null)
                {
                    inp.Config.CheckAgainst(spec);
                    if (!inp.Config.Hook.InResidualSpace || inp.D != spec.DModel)
                        throw new PolyEngineException($"{inp.Config.Folder}: the logit-lens proxy needs an SAE of the residual stream (d_in = d_model), but this one reads '{inp.Config.Hook}'; drop --model or this SAE");
                }
                double earlier = 0;   // scan seconds of the runs this one continues
                if (saved is not null)
                {
                    resume = new InterferenceState(inp.N, o.Scan.Taus.Length, inp.Embed is not null, o.Scan.PartnersPerBin, o.Scan.TopN);
                    resume.Restore(saved, "");
                    earlier = double.Parse(saved.Metadata.GetValueOrDefault("seconds", "0"), CultureInfo.InvariantCulture);
                    log.Info($"{names[k]}: resuming at tile {resume.TilesDone:N0}");
                }
                saved?.Dispose();
                saved = null;
                var sw = System.Diagnostics.Stopwatch.StartNew();
                long startTiles = resume?.TilesDone ?? 0;
                string Seconds() => (earlier + sw.Elapsed.TotalSeconds).ToString("R", CultureInfo.InvariantCulture);
                var state = InterferenceScan.Run(backend, inp.Unit, inp.D, inp.Embed, inp.EmbedDim, o.Scan, resume, (st, done, total) =>
                {
                    ck.MaybeSave(done, w => { w.AddMetadata("phase", "scan").AddMetadata("seconds", Seconds()); st.Save(w, ""); });
                    double pairs = (double)st.Pairs * (done - startTiles) / total;
                    log.Progress(names[k], done, total, pairs / Math.Max(sw.Elapsed.TotalSeconds, 1e-9));
                });
                double seconds = earlier + sw.Elapsed.TotalSeconds;
                if (sharded)
                {
                    // A shard's result is its raw state: the tables need every shard's, so merge makes them.
                    var w = new SafeTensorsWriter().AddMetadata("run_key", runKey).AddMetadata("shard", o.Scan.Shard.ToString())
                        .AddMetadata("seconds", seconds.ToString("R", CultureInfo.InvariantCulture)).AddMetadata("sae", names[k]);
                    state.Save(w, "");
                    w.Save(StatePath(outDir, k));
                    ck.Delete();
                    log.Info($"  {names[k]}: shard {o.Scan.Shard} scanned in {seconds:F1} s ({state.TilesDone:N0} tiles into the triangle)");
                    continue;
                }
                var result = Finish(backend, gram, inp, state, o, seconds);
                ck.Save(state.TilesDone, w => { w.AddMetadata("phase", "done"); result.Save(w); });
                Summarise(log, result);
            }
            finally
            {
                saved?.Dispose();
            }
        }
        return results;
    }

    static void Describe(IInterferenceLog log, InterferenceInputs inp)
    {
        var c = inp.Config;
        string left = string.Join(", ", new[]
        {
            inp.NotActive > 0 ? $"{inp.NotActive:N0} outside --active" : null,
            inp.WithoutExplanation > 0 ? $"{inp.WithoutExplanation:N0} without an explanation embedding" : null,
            inp.DeadRows > 0 ? $"{inp.DeadRows:N0} with a zero decoder row" : null,
        }.Where(x => x is not null));
        log.Info($"sae: {c.Folder} ({c.Format}, d_sae {c.DSae:N0}, d_in {c.DIn}) at {c.Hook}: {inp.N:N0} features, {(long)inp.N * (inp.N - 1) / 2:N0} pairs" +
                 (left.Length > 0 ? $" ({left} left out)" : ""));
        if (inp.Explanations is { } ex)
            log.Info($"  explanations: {ex.Path}: {ex.Embedded:N0} embeddings of width {ex.Dim} in {ex.Lines:N0} lines" +
                     (ex.Skipped > 0 ? $"; {ex.Skipped:N0} malformed lines skipped (lines {string.Join(", ", ex.SkippedLines)}{(ex.Skipped > ex.SkippedLines.Count ? ", ..." : "")}; --strict fails on them)" : ""));
        else
            log.Info("  no --explanations: interference only (histograms and bins); no semantic mask, no qualified targets");
    }

    static void Summarise(IInterferenceLog log, InterferenceResult r)
    {
        double pairs = r.Pairs;
        log.Info($"  {r.Name}: {r.Pairs:N0} pairs in {r.Seconds:F1} s ({pairs / Math.Max(r.Seconds, 1e-9):N0} pairs/s); " +
                 string.Join(", ", Enumerable.Range(0, InterferenceBins.Count).Select(b => $"{InterferenceBins.Keys[b]} {100 * r.Bins[b] / pairs:F2} %")) +
                 $", negative {100 * (pairs - r.Bins.Sum()) / pairs:F2} %");
        var below = r.BelowHi;
        log.Info("  cumulative: " + string.Join(", ", Enumerable.Range(0, InterferenceBins.Count - 1)
            .Select(b => $"{100 * below[b] / pairs:F1} % < {InterferenceBins.Hi[b]:0.0}")));
        if (r.Semantic)
            log.Info("  qualified targets: " + string.Join(", ", r.Taus.Select((t, i) => $"τ {t}: {r.Qualified[i]:N0}")));
    }
}

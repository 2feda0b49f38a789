using System.CommandLine;
using System.Globalization;
using PolyEngine.Output;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

static class InterferenceCommand
{
    public static Command Create(Io io)
    {
        var sae = new Option<string>("--sae") { Description = "SAE folders, comma-separated (SAELens or sparsify); each is scanned on its own", Required = true };
        var explanations = new Option<string?>("--explanations")
        {
            Description = "Neuronpedia explanation exports (JSONL or .jsonl.gz with index, description, embedding), one per SAE in --sae order, " +
                          "comma-separated. Without them: interference only (no semantic mask, no qualified targets)",
        };
        var tau = new Option<string>("--tau") { Description = "Semantic-unrelatedness thresholds: a pair is unrelated when its explanation cosine is below τ", DefaultValueFactory = _ => "0.4,0.3,0.2,0.15" };
        var active = new Option<string?>("--active") { Description = "Feature lists (text or .json array of indices), one per SAE: scan only these features (the paper uses only active ones)" };
        var strict = new Option<bool>("--strict") { Description = "Fail on a malformed explanation line (default: skip it and report its line number)" };
        var partners = new Option<int>("--partners") { Description = "Partners kept per (τ, target, bin) in qualified.parquet, strongest interference first", DefaultValueFactory = _ => 10 };
        var top = new Option<int>("--top") { Description = "Also write each feature's top N partners by cosine (partners.parquet); 0 = off", DefaultValueFactory = _ => 0 };
        var model = Common.Model(required: false);
        model.Description = "Model (folder or cached hub id) whose LM head gives the logit-lens proxy cos(W_U·d̂_a, W_U·d̂_b) beside each reported pair";
        var coact = new Option<string?>("--coactivation") { Description = "Output folder of `polyengine coactivate` over these SAEs: each reported pair gets its co-activation Jaccard" };
        var sample = new Option<int>("--sample") { Description = "Draw this many targets per SAE and τ from the qualified set into sample.json (docs/METHOD.md §2.6); 0 = off", DefaultValueFactory = _ => 0 };
        var samplePartners = new Option<int>("--sample-partners") { Description = "Partners drawn per bin for each sampled target", DefaultValueFactory = _ => 3 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sampling", DefaultValueFactory = _ => 0 };
        var tile = new Option<int>("--tile") { Description = "Features per GEMM tile side (memory: a few tile² floats)", DefaultValueFactory = _ => 2048 };
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var shard = new Option<string>("--shard")
        {
            Description = "Scan shard i of n of each SAE's triangle (tile rows dealt so the pair counts balance): i/n, slurm or k8s/n. A shard writes its raw " +
                          "states (state.K.safetensors); polyengine merge makes the tables, exactly the single run's",
            DefaultValueFactory = _ => "0/1",
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Output folder (created). Resumable: rerun with the same --out to continue a killed run; a folder holding another run is refused without --overwrite",
            Required = true,
        };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var checkpointEvery = Common.CheckpointEvery();
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("interference", Common.WithExamples(
            "The exhaustive interference scan (docs/METHOD.md §2.4): for every pair of features of each SAE, the cosine of their unit decoder " +
            "directions, computed in GEMM tiles (never F² values at once) and binned — the exact histogram, the five bins " +
            "[0,0.1) [0.1,0.2) [0.2,0.3) [0.3,0.4) [0.4,1.0] — and, with explanation embeddings, the semantically unrelated pairs per τ, the " +
            "qualified targets (an unrelated partner in every bin) with their partners, and the paper's seeded sample.",
            "polyengine interference --sae saes/blocks.4.hook_resid_post --out interf/",
            "polyengine interference --sae saes/4-res-sm --explanations res4.jsonl.gz --active res4-active.txt --sample 10 --seed 50 --out interf/",
            "polyengine interference --sae saes/L4,saes/L5 --explanations L4.jsonl,L5.jsonl --tau 0.2 --top 10 --model EleutherAI/pythia-70m-deduped --out interf/"))
        { sae, explanations, tau, active, strict, partners, top, model, coact, sample, samplePartners, seed, tile, format, shard, output, overwrite, checkpointEvery, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            var folders = List(r.GetValue(sae));
            if (folders.Length == 0) throw new PolyEngineException("--sae names no SAE folder");
            var ex = Aligned("--explanations", r.GetValue(explanations), folders.Length);
            var act = Aligned("--active", r.GetValue(active), folders.Length);
            var sources = folders.Select((f, i) => new InterferenceSource(f, ex?[i], act?[i])).ToList();
            foreach (var s in sources)
                if (!Directory.Exists(s.Folder)) throw new PolyEngineException($"--sae {s.Folder}: folder not found");
            if (r.GetValue(partners) < 1) throw new PolyEngineException($"--partners must be at least 1, got {r.GetValue(partners)}");
            if (r.GetValue(top) < 0) throw new PolyEngineException($"--top must be 0 or positive, got {r.GetValue(top)}");
            if (r.GetValue(tile) < 16) throw new PolyEngineException($"--tile must be at least 16, got {r.GetValue(tile)}");
            if (r.GetValue(sample) < 0 || r.GetValue(samplePartners) < 1) throw new PolyEngineException("--sample must be 0 or positive and --sample-partners at least 1");
            if (r.GetValue(sample) > 0 && ex is null) throw new PolyEngineException("--sample draws from the qualified targets, which need --explanations");
            var options = new InterferenceJobOptions
            {
                Scan = new InterferenceOptions
                {
                    Taus = ParseTaus(r.GetValue(tau)!), PartnersPerBin = r.GetValue(partners), TopN = r.GetValue(top), Tile = r.GetValue(tile), Threads = r.GetValue(threads),
                    Shard = Shard.Parse(r.GetValue(shard)!),
                },
                Strict = r.GetValue(strict), Model = r.GetValue(model), Coactivation = r.GetValue(coact),
                Sample = r.GetValue(sample) > 0 ? new InterferenceSampleOptions(r.GetValue(sample), r.GetValue(samplePartners), r.GetValue(seed)) : null,
                CheckpointEvery = Common.Interval(r.GetValue(checkpointEvery)),
            };
            if (options.Coactivation is { } c && !File.Exists(Path.Combine(c, "coactivation.safetensors")))
                throw new PolyEngineException($"--coactivation {c}: no coactivation.safetensors there; give the --out folder of a `polyengine coactivate` run");
            using var folder = Common.OpenScanOutput(io, outDir);
            var key = InterferenceJob.RunKey(sources, options);
            bool sharded = options.Scan.Shard.Count > 1;
            Common.PrepareScanOutput(io, folder, outDir, key, r.GetValue(overwrite), $"format={fmt}",
                sharded ? InterferenceWriter.PlannedShardFiles(sources.Count) : InterferenceWriter.PlannedFiles(fmt));
            if (folder.AlreadyComplete) return 0;
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            io.Out.WriteLine($"device: {note}");
            if (sharded) io.Out.WriteLine($"shard {options.Scan.Shard}: every {options.Scan.Shard.Count}th tile row of each triangle (dealt in a snake)");
            var files = new ProgressDisplay(io).Run("interference", job => InterferenceJob.Run(backend, sources, options, outDir, key.Value, new Log(job)));
            var written = sharded ? InterferenceWriter.WriteShard(outDir, files, options, fmt, note, sources)
                : InterferenceWriter.Write(outDir, files, options, fmt, note, sources);
            folder.Complete(written);
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>Lines to stdout; each SAE's tiles as progress, its ETA at this run's own pace (a resumed SAE starts part-way).</summary>
    sealed class Log(ProgressDisplay.Job job) : IInterferenceLog
    {
        string? _sae;
        long _tilesAtStart;
        readonly System.Diagnostics.Stopwatch _clock = new();

        public void Info(string line) => job.Say(line);

        public void Progress(string sae, long tilesDone, long tiles, double pairsPerSecond)
        {
            if (sae != _sae) { _sae = sae; _tilesAtStart = tilesDone; _clock.Restart(); }
            double seconds = _clock.Elapsed.TotalSeconds;
            double? left = tilesDone > _tilesAtStart && seconds > 0 ? (tiles - tilesDone) * seconds / (tilesDone - _tilesAtStart) : null;
            job.Report(new(tiles == 0 ? 1 : tilesDone / (double)tiles, $"{sae}: tile {tilesDone:N0}/{tiles:N0}, {pairsPerSecond:N0} pairs/s", left));
        }
    }

    static string[] List(string? value) => value?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];

    /// <summary>A comma list with one entry per SAE, or null when the option is absent.</summary>
    static string[]? Aligned(string option, string? value, int saes)
    {
        if (value is null) return null;
        var items = List(value);
        if (items.Length != saes)
            throw new PolyEngineException($"{option} lists {items.Length} file(s) but --sae lists {saes} SAE(s); give one per SAE, in the same order");
        return items;
    }

    internal static float[] ParseTaus(string value)
    {
        var taus = new List<float>();
        foreach (var item in List(value))
        {
            if (!float.TryParse(item, NumberStyles.Float, CultureInfo.InvariantCulture, out float t) || !(t > 0 && t < 1))
                throw new PolyEngineException($"--tau '{item}' is not a threshold in (0, 1); give cosines such as 0.4,0.3,0.2,0.15");
            if (taus.Contains(t)) throw new PolyEngineException($"--tau lists {item} twice");
            taus.Add(t);
        }
        if (taus.Count == 0) throw new PolyEngineException("--tau names no threshold; give cosines such as 0.4,0.3,0.2,0.15");
        return [.. taus];
    }
}

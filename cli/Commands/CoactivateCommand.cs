using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Output;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

static class CoactivateCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var o = new ScanOptions();
        var window = new Option<string>("--window") { Description = "Unit of co-occurrence: token, N (consecutive tokens) or document", DefaultValueFactory = _ => "token" };
        var top = new Option<string>("--top") { Description = "Partners per feature in the pair table, or 'all' for every co-occurring pair", DefaultValueFactory = _ => "10" };
        var cmd = new Command("coactivate", Common.WithExamples(
            "Exact co-occurrence counts for every pair of features of each SAE over a corpus (sparse pair enumeration into " +
            "triangle-packed uint32 counters, never a dense BᵀB), with marginals, Jaccard, PMI and lift.",
            "polyengine coactivate --model gpt2 --sae saes/blocks.8.hook_resid_pre --corpus data.jsonl --out coact/",
            "polyengine coactivate --model ./toy --sae ./toy-sae --corpus tokens.bin --window document --top all --format csv --out coact/",
            "polyengine coactivate --model gpt2 --sae saes/blocks.8.hook_resid_pre --corpus data/ --shard slurm --out shards/$SLURM_ARRAY_TASK_ID/"))
        { model, window, top };
        o.AddTo(cmd);
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(o.Output)!;
            int? topN = r.GetValue(top) is "all" ? null
                : int.TryParse(r.GetValue(top), out int t) && t > 0 ? t : throw new PolyEngineException($"--top '{r.GetValue(top)}' is not a positive number or 'all'");
            var fmt = TableWriter.ParseFormat(r.GetValue(o.Format)!);
            var options = o.Apply(new CoactivationOptions { Window = CoactivationWindow.Parse(r.GetValue(window)!) }, r);
            var every = Common.Interval(r.GetValue(o.CheckpointEvery));
            var part = o.ParseShard(r);
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(o.Device)!, r.GetValue(o.Threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            var saes = Common.LoadSaes(io, m, r.GetValue(o.Sae)!);
            try
            {
                long bytes = saes.Sum(s => CoactivationCounter.BytesFor(s.Config.DSae));
                io.Out.WriteLine($"counters: uint32 per pair (a count is at most the number of units; more than 2^32 − 1 units is refused), " +
                                 $"{bytes / (1024.0 * 1024):N1} MiB for {saes.Count} SAE(s) of {MemoryInfo.Gib(MemoryInfo.AvailableBytes())} GiB available");
                MemoryInfo.Check(bytes, "the pair counters", "scan fewer SAEs at once, or on a machine with more memory");
                long selection = saes.Max(s => CoactivationWriter.SelectionBytes(topN, s.Config.DSae));
                MemoryInfo.Check(bytes + selection, $"the pair counters and --top {topN}'s partner heaps",
                    "give a smaller --top, or --top all (every co-occurring pair, streamed without heaps)");
                var c = Corpus.Open(r.GetValue(o.Corpus)!, () => m.Tokenizer).Sharded(part);
                if (part.Count > 1) io.Out.WriteLine($"shard {part}: the corpus's documents k with k mod {part.Count} = {part.Index}");
                var (bos, why) = SaeStream.ResolveBos(m, saes, options.PrependBos);
                io.Out.WriteLine(Common.DescribeBos(m, bos is not null, why));
                var (context, contextSource) = SaeStream.ContextSize(m, saes, options.ContextSize);
                io.Out.WriteLine($"context: {context} tokens per window ({contextSource})");
                options = options with { PrependBos = bos is not null };
                var key = ScanOptions.KeyOptions("coactivate", options, bos is not null);
                key["window"] = options.Window.ToString();
                if (part.Count > 1) key["shard"] = part.ToString();
                Common.PrepareScanOutput(io, folder, outDir, RunKey.ForCorpusScan(m, saes, c.Files, key), r.GetValue(o.Overwrite),
                    $"format={fmt} top={r.GetValue(top)}", CoactivationWriter.PlannedFiles(fmt));
                if (folder.AlreadyComplete) return 0;
                var result = new ProgressDisplay(io).Run("coactivate", job =>
                    CoactivationScan.Run(m, saes, c, options, p => job.Report(ProgressDisplay.Of(p)), folder.Checkpoint(every),
                        w => job.Say($"resuming: {w:N0} context windows were counted by an earlier run")));
                var written = CoactivationWriter.Write(outDir, result, m, r.GetValue(o.Corpus)!, c.Files, options, topN, fmt, note, part);
                folder.Complete(written);
                if (part.Count > 1 && result.Documents == 0)
                    io.Err.WriteLine($"warning: shard {part} got no documents: the corpus has fewer documents than shards (a token file is one document); use fewer shards");
                io.Out.WriteLine($"{result.Tokens:N0} tokens in {result.Windows:N0} windows ({result.Documents:N0} documents), {result.Seconds:F1} s, " +
                                 $"{result.Tokens / Math.Max(result.Seconds, 1e-9):N0} tokens/s");
                foreach (var (s, counter) in result.Counters)
                {
                    var best = CoactivationWriter.Rows(SaeNames.Of([s])[0], counter, 1).OrderByDescending(p => p.CountAB).Take(3);
                    io.Out.WriteLine($"  {SaeNames.Of([s])[0]}: {counter.Units:N0} units; most co-occurring pairs: " +
                        string.Join(", ", best.Select(p => $"({p.FeatureA}, {p.FeatureB}) ×{p.CountAB} jaccard {p.Jaccard:F2}")));
                }
                io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            }
            finally
            {
                foreach (var s in saes) s.Dispose();
            }
            return 0;
        });
        return cmd;
    }
}

using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Output;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

static class FeaturesCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var o = new ScanOptions();
        var topK = new Option<int>("--top-k") { Description = "Top activating context windows kept per feature", DefaultValueFactory = _ => 10 };
        var cmd = new Command("features", Common.WithExamples(
            "Per feature of each SAE over a corpus: firing count and frequency, mean and max activation, and the top-k activating " +
            "context windows (token ids, per-token activations, position of the max) — the data Neuronpedia exports.",
            "polyengine features --model gpt2 --sae saes/blocks.8.hook_resid_pre --corpus data.jsonl --out feats/",
            "polyengine features --model ./toy --sae ./sae0,./sae1 --corpus tokens.bin --top-k 20 --format csv --out feats/",
            "polyengine features --model gpt2 --sae saes/blocks.8.hook_resid_pre --corpus data/ --shard 3/8 --out shards/3/"))
        { model, topK };
        o.AddTo(cmd);
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(o.Output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(o.Format)!);
            var options = o.Apply(new FeatureScanOptions { TopK = r.GetValue(topK) }, r);
            var every = Common.Interval(r.GetValue(o.CheckpointEvery));
            var part = o.ParseShard(r);
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(o.Device)!, r.GetValue(o.Threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            var saes = Common.LoadSaes(io, m, r.GetValue(o.Sae)!);
            try
            {
                var c = Corpus.Open(r.GetValue(o.Corpus)!, () => m.Tokenizer).Sharded(part);
                if (part.Count > 1) io.Out.WriteLine($"shard {part}: the corpus's documents k with k mod {part.Count} = {part.Index}");
                var (bos, why) = SaeStream.ResolveBos(m, saes, options.PrependBos);
                io.Out.WriteLine(Common.DescribeBos(m, bos is not null, why));
                var (context, contextSource) = SaeStream.ContextSize(m, saes, options.ContextSize);
                io.Out.WriteLine($"context: {context} tokens per window ({contextSource})");
                options = options with { PrependBos = bos is not null };
                var key = ScanOptions.KeyOptions("features", options, bos is not null);
                key["top_k"] = options.TopK;
                key["contexts_format"] = 2;   // contexts carry their document and offset
                if (part.Count > 1) key["shard"] = part.ToString();
                Common.PrepareScanOutput(io, folder, outDir, RunKey.ForCorpusScan(m, saes, c.Files, key), r.GetValue(o.Overwrite),
                    $"format={fmt}", [.. FeatureWriter.PlannedFiles(fmt), .. part.Count > 1 ? [FeatureWriter.ShardStats] : Array.Empty<string>()]);
                if (folder.AlreadyComplete) return 0;
                var documentWindows = part.Count > 1 ? new SortedDictionary<long, int>() : null;
                var (stats, tokens, windows, seconds) = new ProgressDisplay(io).Run("features", job =>
                    FeatureScan.Run(m, saes, c, options, p => job.Report(ProgressDisplay.Of(p)), folder.Checkpoint(every),
                        w => job.Say($"resuming: {w:N0} context windows were scanned by an earlier run"), documentWindows));
                var written = FeatureWriter.Write(outDir, stats, tokens, windows, seconds, m, r.GetValue(o.Corpus)!, c.Files, fmt, note, new JsonObject
                {
                    ["top_k"] = options.TopK, ["threshold"] = options.Threshold, ["context_size"] = options.ContextSize,
                    ["batch"] = options.Batch, ["max_tokens"] = options.MaxTokens, ["format"] = fmt.ToString().ToLowerInvariant(), ["prepend_bos"] = bos is not null,
                }, part);
                if (documentWindows is not null)
                {
                    FeatureScan.SaveShard(Path.Combine(outDir, FeatureWriter.ShardStats), stats, documentWindows);
                    written = [.. written, FeatureWriter.ShardStats];
                }
                folder.Complete(written);
                io.Out.WriteLine($"{tokens:N0} tokens in {windows:N0} windows, {seconds:F1} s, {tokens / Math.Max(seconds, 1e-9):N0} tokens/s");
                var names = SaeNames.Of(saes);
                for (int i = 0; i < stats.Count; i++)
                {
                    var st = stats[i];
                    int dead = st.FireCounts.Count(x => x == 0);
                    double l0 = st.FireCounts.Sum() / (double)Math.Max(1, st.Tokens);
                    io.Out.WriteLine($"  {names[i]}: L0 {l0:F1} features per token, {dead} of {st.FireCounts.Length} never fired");
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

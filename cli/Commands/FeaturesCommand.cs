using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Output;
using PolyEngine.Sae;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

static class FeaturesCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var sae = new Option<string>("--sae") { Description = "SAE folders, comma-separated (hooks of one model share each forward pass)", Required = true };
        var corpus = new Option<string>("--corpus") { Description = "Corpus file or folder: .txt, .jsonl (text field), .npy, .bin, .u32", Required = true };
        var topK = new Option<int>("--top-k") { Description = "Top activating context windows kept per feature", DefaultValueFactory = _ => 10 };
        var threshold = new Option<float>("--threshold") { Description = "A feature fires when its activation is above this", DefaultValueFactory = _ => 0f };
        var context = new Option<int?>("--context-size") { Description = "Tokens per context window (default: the SAE's context_size)" };
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var maxTokens = new Option<long?>("--max-tokens") { Description = "Stop after this many tokens" };
        var batch = new Option<int>("--batch") { Description = "Context windows per forward pass", DefaultValueFactory = _ => 8 };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created). Resumable: rerun with the same --out to continue a killed run; a folder holding another run is refused without --overwrite", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("features", Common.WithExamples(
            "Per feature of each SAE over a corpus: firing count and frequency, mean and max activation, and the top-k activating " +
            "context windows (token ids, per-token activations, position of the max) — the data Neuronpedia exports.",
            "polyengine features --model gpt2 --sae saes/blocks.8.hook_resid_pre --corpus data.jsonl --out feats/",
            "polyengine features --model ./toy --sae ./sae0,./sae1 --corpus tokens.bin --top-k 20 --format csv --out feats/"))
        { model, sae, corpus, topK, threshold, context, format, maxTokens, batch, output, overwrite, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            var saes = r.GetValue(sae)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(f => SparseAutoencoder.Load(f, m.Backend)).ToList();
            try
            {
                foreach (var s in saes) io.Out.WriteLine($"sae: {s.Config.Folder} ({s.Config.Architecture}, d_sae {s.Config.DSae}) at {s.Config.Hook}; {SaeHooks.Processing(s)}");
                var c = Corpus.Open(r.GetValue(corpus)!, m.Tokenizer);
                var checkpoint = Common.PrepareScanOutput(outDir, ScanManifest.RunKey(m, saes, c.Files, new JsonObject
                {
                    ["scan"] = "features", ["top_k"] = r.GetValue(topK), ["threshold"] = r.GetValue(threshold), ["context_size"] = r.GetValue(context),
                    ["max_tokens"] = r.GetValue(maxTokens),
                }), r.GetValue(overwrite));
                DateTime last = DateTime.MinValue;
                var (stats, tokens, windows, seconds) = FeatureScan.Run(m, saes, c, r.GetValue(topK), r.GetValue(threshold), r.GetValue(context),
                    r.GetValue(batch), r.GetValue(maxTokens), (t, s) =>
                    {
                        if ((DateTime.UtcNow - last).TotalSeconds < 1) return;
                        last = DateTime.UtcNow;
                        io.Err.Write($"\r{t:N0} tokens, {t / Math.Max(s, 1e-9):N0} tokens/s   ");
                    }, checkpoint, w => io.Out.WriteLine($"resuming: {w:N0} context windows were scanned by an earlier run"));
                io.Err.WriteLine();
                FeatureWriter.Write(outDir, stats, tokens, windows, seconds, m, r.GetValue(corpus)!, c.Files, fmt, note, new JsonObject
                {
                    ["top_k"] = r.GetValue(topK), ["threshold"] = r.GetValue(threshold), ["context_size"] = r.GetValue(context),
                    ["batch"] = r.GetValue(batch), ["max_tokens"] = r.GetValue(maxTokens), ["format"] = fmt.ToString().ToLowerInvariant(),
                });
                checkpoint.Delete();
                io.Out.WriteLine($"{tokens:N0} tokens in {windows:N0} windows, {seconds:F1} s, {tokens / Math.Max(seconds, 1e-9):N0} tokens/s");
                var names = ScanManifest.SaeNames(saes);
                for (int i = 0; i < stats.Count; i++)
                {
                    var st = stats[i];
                    int dead = st.FireCounts.Count(x => x == 0);
                    double l0 = st.FireCounts.Sum() / (double)Math.Max(1, st.Tokens);
                    io.Out.WriteLine($"  {names[i]}: L0 {l0:F1} features per token, {dead} of {st.FireCounts.Length} never fired");
                }
                io.Out.WriteLine($"wrote {outDir}: features{TableWriter.Extension(fmt)}, contexts{TableWriter.Extension(fmt)}, manifest.json");
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

using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Cli.Commands;

/// <summary>
/// <c>polyengine demo</c>, the README's main command: the paper in miniature on toy models with the real file formats.
/// It builds the toys (first use), runs both model families with hooks, then the whole pipeline as the verbs a researcher
/// would type — features, co-activation, interference with toy explanations and the seeded sample, the feature-locus and
/// token-locus experiments, token-type injection — and the report over all of them; each step is printed as its command
/// line, so the same can be rerun by hand.
/// </summary>
static class DemoCommand
{
    public static Command Create(Io io)
    {
        var cache = new Option<string>("--cache") { Description = "Folder for the generated toy models and data (default: ~/.cache/polyengine/toys)" };
        var output = new Option<string>("--out", "-o") { Description = "Folder for the runs and the report (default: ~/.cache/polyengine/demo); the report is <out>/report/index.html" };
        var cmd = new Command("demo", Common.WithExamples(
            "The built-in default job, the paper in miniature (about a minute on two cores): build toy GPT-2 and Pythia models, a toy SAE, corpus and " +
            "explanations (first use); run the models with hooks; then the pipeline as its commands — features, co-activation, interference with the " +
            "seeded sample, the feature-locus and token-locus experiments, token-type injection — and one HTML report over all of them. The toys have " +
            "random weights: the numbers show the machinery, not the paper's findings.",
            "polyengine demo",
            "polyengine demo --out demo/")) { cache, output };
        cmd.SetAction(r => Run(io, r.GetValue(cache) ?? CacheFolder("toys"), r.GetValue(output) ?? CacheFolder("demo")));
        return cmd;
    }

    static string CacheFolder(string name) => Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "polyengine", name);

    static int Run(Io io, string cacheDir, string outDir)
    {
        var total = System.Diagnostics.Stopwatch.StartNew();
        io.Out.WriteLine("PolyEngine demo: toy models with the real file formats (random weights: the machinery, not the paper's findings).");
        string inputs = Path.Combine(outDir, "inputs");
        try { Directory.CreateDirectory(inputs); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolyEngineException($"--out {outDir}: cannot create the folder ({e.Message.Split('\n')[0]}); give a folder you can write to");
        }
        Common.CheckWritable(Path.Combine(inputs, "types.json"), "--out");
        string gpt2Dir = Path.Combine(cacheDir, "gpt2-tiny-seed0"), saeDir = Path.Combine(cacheDir, "gpt2-tiny-sae-mlp-out");
        string corpus = Path.Combine(cacheDir, "toy-corpus.jsonl"), explanations = Path.Combine(cacheDir, "gpt2-tiny-sae-mlp-out-explanations.jsonl");
        Forward(io, cacheDir);
        var hook = HookName.Parse("blocks.1.hook_mlp_out");   // an MLP-output SAE: the token locus runs on attention and MLP outputs only
        if (!File.Exists(Path.Combine(saeDir, "sae_weights.safetensors"))) ToySae.Write(saeDir, hook, 64, 256, SaeArchitecture.TopK, 0, k: 8, contextSize: 64);
        if (!File.Exists(corpus)) ToyCorpus.Write(corpus, 40, 6, 0);
        if (!File.Exists(explanations)) ToyExplanations.Write(explanations, 256, seed: 0);
        string tokenSentences = Path.Combine(inputs, "token-sentences.json"), types = Path.Combine(inputs, "types.json"), typeSentences = Path.Combine(inputs, "type-sentences.json");
        ToyCorpus.WriteTokenSentences(tokenSentences, 3, seed: 0);
        ToyCorpus.WriteTypes(types, typeSentences, 4, seed: 0);
        io.Out.WriteLine();
        io.Out.WriteLine($"The pipeline on a toy TopK SAE (d_sae 256, k 8) at {hook}; every run goes under {Path.GetFullPath(outDir)}:");

        string Run(string name) => Path.Combine(outDir, name);
        string[] steering = ["--model", gpt2Dir, "--sample", Path.Combine(Run("interference"), "sample.json"), "--records", Path.Combine(Run("features"), "contexts.parquet"),
            "--sentences", tokenSentences, "--scales", "-8,-4,-2,2,4,8", "--metrics", "weighted_cosine,overlap", "--top-tokens", "3", "--sentences-per-token", "2"];
        (string What, string[] Args)[] steps =
        [
            ("feature statistics and top contexts", ["features", "--model", gpt2Dir, "--sae", saeDir, "--corpus", corpus, "--overwrite", "--out", Run("features")]),
            ("exact co-activation counts", ["coactivate", "--model", gpt2Dir, "--sae", saeDir, "--corpus", corpus, "--overwrite", "--out", Run("coactivation")]),
            ("decoder interference, unrelated pairs, the seeded sample", ["interference", "--sae", saeDir, "--explanations", explanations, "--sample", "3", "--overwrite", "--out", Run("interference")]),
            ("feature locus (Fig. 3)", ["experiment", "feature", .. steering, "--overwrite", "--out", Run("experiment-feature")]),
            ("token locus (Fig. 4)", ["experiment", "token", .. steering, "--overwrite", "--out", Run("experiment-token")]),
            // A random toy decoder rarely reaches the paper's 0.2 / 0.5 cut-offs: lower ones give every type a high and a medium set.
            ("token-type injection (Table 1)", ["inject", "--model", gpt2Dir, "--type-map", types, "--sentences", typeSentences, "--sae", saeDir, "--explanations", explanations,
                "--records", Path.Combine(Run("features"), "contexts.parquet"), "--types", "object,verb,tail", "--set-interference", "0.1", "--set-high", "0.28", "--trials", "8", "--tokens", "5", "--overwrite", "--out", Run("inject")]),
            ("the report", ["report", Run("features"), Run("coactivation"), Run("interference"), Run("experiment-feature"), Run("experiment-token"), Run("inject"), "--out", Run("report")]),
        ];
        foreach (var (what, args) in steps)
        {
            io.Out.WriteLine();
            io.Out.WriteLine($"{what}:");
            io.Out.WriteLine("  $ polyengine " + string.Join(" ", args.Select(Quote)));
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int code = Program.Run(args, stdout, stderr);
            foreach (var line in stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(Shown)) io.Out.WriteLine("  " + line.TrimEnd());
            if (code != 0)
            {
                io.Err.Write(stderr.ToString());
                return code;
            }
            io.Out.WriteLine($"  ({sw.Elapsed.TotalSeconds:F1} s)");
        }
        io.Out.WriteLine();
        io.Out.WriteLine($"Done in {total.Elapsed.TotalSeconds:F0} s. Open the report: {Path.GetFullPath(Path.Combine(outDir, "report", "index.html"))}");
        io.Out.WriteLine("  (every number on it is in summary.json beside it; the runs' tables open in pandas, polars or DuckDB)");
        io.Out.WriteLine();
        io.Out.WriteLine("On real weights (nothing is downloaded; use a folder or the HuggingFace cache):");
        io.Out.WriteLine("  huggingface-cli download gpt2 config.json model.safetensors");
        io.Out.WriteLine("  polyengine run --model gpt2 --prompt \"The dog\" --hooks \"blocks.*.hook_resid_post\" --out acts.safetensors");
        io.Out.WriteLine("  polyengine bench forward --model gpt2 --batch 8 --seq 128");
        return 0;
    }

    /// <summary>A step's output lines worth showing in the demo (its results, not the device and model lines every verb prints).</summary>
    static bool Shown(string line) => !line.StartsWith("device:") && !line.StartsWith("model:") && !line.StartsWith("context:") && !line.StartsWith("BOS");

    static string Quote(string arg) => arg.Length > 0 && arg.All(c => char.IsLetterOrDigit(c) || "-_./,:=~+".Contains(c)) ? arg : $"'{arg.Replace("'", "'\\''")}'";

    /// <summary>Both toy families with hooks: shapes, norms, the top next tokens.</summary>
    static void Forward(Io io, string cacheDir)
    {
        using var backend = Devices.Create("auto", 0, out string note);
        io.Out.WriteLine($"device: {note}");
        foreach (var (family, name) in new[] { (ModelFamily.Gpt2, "gpt2-tiny"), (ModelFamily.GptNeoX, "neox-tiny") })
        {
            string dir = Path.Combine(cacheDir, name + "-seed0");
            if (!File.Exists(Path.Combine(dir, "model.safetensors")))
            {
                ToyModels.Write(ToyModels.Preset(family, "tiny"), 0, dir);
                io.Out.WriteLine($"built toy model {dir}");
            }
            using var model = Model.Load(dir, backend);
            const string prompt = "The quick brown fox jumps over the lazy dog";
            var ids = model.Encode(prompt);
            var hooks = HookName.Select(model.Spec, "blocks.*.hook_resid_post,blocks.0.attn.hook_pattern");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var result = model.Run([ids], new RunOptions { Hooks = hooks, TopLogits = 3 });
            double ms = sw.Elapsed.TotalMilliseconds;
            io.Out.WriteLine();
            io.Out.WriteLine($"{name}: {model.Spec.Architecture}, {model.Spec.NLayers} layers, d_model {model.Spec.DModel}, tokenizer {model.Tokenizer.Description}");
            io.Out.WriteLine($"  prompt \"{prompt}\" -> {ids.Length} tokens, BOS first [{string.Join(",", ids.Take(8))}{(ids.Length > 8 ? ",..." : "")}]");
            io.Out.WriteLine($"  forward pass {ms:F1} ms; logits {result.Logits!.ShapeText}");
            foreach (var h in hooks)
            {
                var t = result.Cache[h];
                double norm = Math.Sqrt(t.Data.Sum(v => (double)v * v) / (t.Shape[0] * t.Shape[1]));
                io.Out.WriteLine($"  {h,-34} {t.ShapeText,-16} mean L2 norm per position {norm:F3}");
            }
            io.Out.WriteLine($"  top next tokens: " + string.Join(", ", Enumerable.Range(0, 3).Select(j => result.Top!.At(0, j))
                .Select(t => $"{System.Text.Json.JsonSerializer.Serialize(model.Tokenizer.Decode([t.Id]), Common.Json)} p={t.Probability:F4}")));
        }
    }
}

using System.CommandLine;
using PolyEngine.Forward;
using PolyEngine.Hooks;
using PolyEngine.Models;

namespace PolyEngine.Cli.Commands;

static class DemoCommand
{
    public static Command Create(Io io)
    {
        var cache = new Option<string>("--cache") { Description = "Folder for the generated toy models (default: ~/.cache/polyengine/toys)" };
        var cmd = new Command("demo", Common.WithExamples(
            "The built-in default job: build toy GPT-2 and Pythia models (first use), run them with hooks, show what came out.",
            "polyengine demo")) { cache };
        cmd.SetAction(r => Run(io, r.GetValue(cache) ?? DefaultCache()));
        return cmd;
    }

    static string DefaultCache() => Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "polyengine", "toys");

    static int Run(Io io, string cacheDir)
    {
        io.Out.WriteLine("PolyEngine demo: toy models with the real file formats, run on the CPU backend.");
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
            var result = model.Run([ids], new RunOptions { Hooks = hooks });
            double ms = sw.Elapsed.TotalMilliseconds;
            io.Out.WriteLine();
            io.Out.WriteLine($"{name}: {model.Spec.Architecture}, {model.Spec.NLayers} layers, d_model {model.Spec.DModel}, tokenizer {model.Tokenizer.Description}");
            io.Out.WriteLine($"  prompt \"{prompt}\" -> {ids.Length} tokens [{string.Join(",", ids.Take(8))}{(ids.Length > 8 ? ",..." : "")}]");
            io.Out.WriteLine($"  forward pass {ms:F1} ms; logits {result.Logits!.ShapeText}");
            foreach (var h in hooks)
            {
                var t = result.Cache[h];
                double norm = Math.Sqrt(t.Data.Sum(v => (double)v * v) / (t.Shape[0] * t.Shape[1]));
                io.Out.WriteLine($"  {h,-34} {t.ShapeText,-16} mean L2 norm per position {norm:F3}");
            }
            var last = result.Logits.Data.AsSpan((ids.Length - 1) * model.Spec.DVocab, model.Spec.DVocab);
            var top = TopTokens.Of(last, 3);
            io.Out.WriteLine($"  top next tokens (random weights, so no meaning): " +
                string.Join(", ", top.Select(t => $"{System.Text.Json.JsonSerializer.Serialize(model.Tokenizer.Decode([t.Id]), Common.Json)} p={t.Probability:F4}")));
        }
        io.Out.WriteLine();
        io.Out.WriteLine("On real weights (nothing is downloaded; use a folder or the HuggingFace cache):");
        io.Out.WriteLine("  huggingface-cli download gpt2 config.json model.safetensors");
        io.Out.WriteLine("  polyengine run --model gpt2 --prompt \"The dog\" --hooks \"blocks.*.hook_resid_post\" --out acts.safetensors");
        io.Out.WriteLine("  polyengine bench forward --model gpt2 --batch 8 --seq 128");
        return 0;
    }
}

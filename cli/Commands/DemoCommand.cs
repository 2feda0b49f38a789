using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Cli.Commands;

static class DemoCommand
{
    public static Command Create(Io io)
    {
        var cache = new Option<string>("--cache") { Description = "Folder for the generated toy models (default: ~/.cache/polyengine/toys)" };
        var cmd = new Command("demo", Common.WithExamples(
            "The built-in default job: build toy GPT-2 and Pythia models, a toy SAE, a toy corpus and toy explanations (first use), run " +
            "the models with hooks, count SAE feature co-activations over the corpus, scan the SAE's decoder interference, steer with a sampled target's direction, its " +
            "partners and a random one, show what came out.",
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
            io.Out.WriteLine($"  top next tokens (random weights, so no meaning): " + string.Join(", ", Enumerable.Range(0, 3).Select(j => result.Top!.At(0, j))
                .Select(t => $"{System.Text.Json.JsonSerializer.Serialize(model.Tokenizer.Decode([t.Id]), Common.Json)} p={t.Probability:F4}")));
        }
        // SAE + corpus → exact feature co-activation counts.
        string gpt2Dir = Path.Combine(cacheDir, "gpt2-tiny-seed0"), saeDir = Path.Combine(cacheDir, "gpt2-tiny-sae-topk"), corpusPath = Path.Combine(cacheDir, "toy-corpus.jsonl");
        var hook = HookName.Parse("blocks.1.hook_resid_post");
        if (!File.Exists(Path.Combine(saeDir, "sae_weights.safetensors"))) ToySae.Write(saeDir, hook, 64, 256, SaeArchitecture.TopK, 0, k: 8, contextSize: 64);
        if (!File.Exists(corpusPath)) Toys.ToyCorpus.Write(corpusPath, 40, 6, 0);
        using (var model = Model.Load(gpt2Dir, backend))
        using (var sae = SparseAutoencoder.Load(saeDir, backend))
        {
            var result = Scans.CoactivationScan.Run(model, [sae], Formats.Corpus.Open(corpusPath, () => model.Tokenizer), new Scans.CoactivationOptions());
            var counter = result.Counters[0].Counter;
            io.Out.WriteLine();
            io.Out.WriteLine($"co-activation: toy TopK SAE (d_sae 256, k 8) at {hook} over {result.Tokens:N0} tokens of a toy corpus, {result.Seconds:F1} s");
            foreach (var p in Output.CoactivationWriter.Rows("demo", counter, 1).OrderByDescending(p => p.CountAB).ThenBy(p => p.FeatureA).Take(3))
                io.Out.WriteLine($"  features {p.FeatureA,3} & {p.FeatureB,3}: together in {p.CountAB} tokens (alone {p.CountA} and {p.CountB}), jaccard {p.Jaccard:F2}, lift {p.Lift:F2}");
            var (stats, tokens, _, _) = Scans.FeatureScan.Run(model, [sae], Formats.Corpus.Open(corpusPath, () => model.Tokenizer), new Scans.FeatureScanOptions { TopK = 1 });
            var st = stats[0];
            int busiest = Enumerable.Range(0, st.FireCounts.Length).MaxBy(j => st.FireCounts[j]);
            var ctx = st.TopContexts(busiest)[0];
            io.Out.WriteLine($"features: {st.FireCounts.Count(c => c == 0)} of 256 never fired; the busiest, {busiest}, fired on {100.0 * st.FireCounts[busiest] / tokens:F0} % " +
                             $"of tokens, most strongly ({ctx.Activation:F2}) at \"{model.Tokenizer.Decode([ctx.Tokens[ctx.Position]])}\" in " +
                             $"\"…{model.Tokenizer.Decode(ctx.Tokens.Take(ctx.Position + 1).Skip(Math.Max(0, ctx.Position - 7))).Trim()}\"");
            io.Out.WriteLine($"  the same with files: polyengine coactivate (or features) --model {gpt2Dir} --sae {saeDir} --corpus {corpusPath} --out coact/");
        }
        // The same SAE's decoder geometry: the paper's interference bins and qualified targets, against toy explanations.
        string explanationsPath = Path.Combine(cacheDir, "gpt2-tiny-sae-topk-explanations.jsonl");
        if (!File.Exists(explanationsPath)) Toys.ToyExplanations.Write(explanationsPath, 256, seed: 0);
        System.Text.Json.Nodes.JsonNode? target;
        {
            var inp = Scans.InterferenceInputs.Load(new Scans.InterferenceSource(saeDir, explanationsPath), "demo", strict: false);
            var options = new Scans.InterferenceOptions();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var st = Scans.InterferenceScan.Run(backend, inp.Unit, inp.D, inp.Embed, inp.EmbedDim, options);
            var r = Scans.InterferenceResult.From(inp, st, options, null, null, new Scans.InterferenceSampleOptions(1, 1, 0));
            io.Out.WriteLine();
            io.Out.WriteLine($"interference: decoder cosines of all {r.Pairs:N0} pairs of the {r.Features} features with a toy explanation, {sw.Elapsed.TotalMilliseconds:F0} ms");
            io.Out.WriteLine("  " + string.Join(", ", Enumerable.Range(0, Scans.InterferenceBins.Count)
                .Select(b => $"{Scans.InterferenceBins.Keys[b]}: {100.0 * r.Bins[b] / r.Pairs:F1} %")) + $", negative: {100.0 * (r.Pairs - r.Bins.Sum()) / r.Pairs:F1} %");
            io.Out.WriteLine("  qualified targets (an unrelated partner in every bin): " + string.Join(", ", r.Taus.Select((t, i) => $"τ {t}: {r.Qualified[i]}")));
            target = System.Text.Json.Nodes.JsonNode.Parse(r.SampleJson!)!["taus"]![2]!["targets"]!.AsArray().FirstOrDefault();
            if (target is not null)
                io.Out.WriteLine($"  a sampled target under τ 0.2: feature {target["feature"]} (\"{target["explanation"]}\"), partners " +
                    string.Join(", ", Scans.InterferenceBins.Keys.Select(k => target["bins"]![k]!["partners"]!.AsArray().FirstOrDefault() is { } p
                        ? $"{p["feature"]} (cos {(double)p["cosine"]!:F2})" : "-")));
            io.Out.WriteLine($"  the same with files: polyengine interference --sae {saeDir} --explanations {explanationsPath} --sample 10 --out interf/");
        }
        if (target is not null) Steer(io, backend, gpt2Dir, saeDir, target, Path.Combine(cacheDir, "steer-prompts.jsonl"));
        io.Out.WriteLine();
        io.Out.WriteLine("On real weights (nothing is downloaded; use a folder or the HuggingFace cache):");
        io.Out.WriteLine("  huggingface-cli download gpt2 config.json model.safetensors");
        io.Out.WriteLine("  polyengine run --model gpt2 --prompt \"The dog\" --hooks \"blocks.*.hook_resid_post\" --out acts.safetensors");
        io.Out.WriteLine("  polyengine bench forward --model gpt2 --batch 8 --seq 128");
        return 0;
    }

    /// <summary>The paper's feature locus on the toy model: the sampled target's own decoder direction, its first partner in
    /// each interference bin and a random direction, each added over the paper's 32 scales at the SAE's hook on a few
    /// prompts; per level, the best change in weighted cosine and overlap towards the target's tokens (the three tokens its
    /// direction promotes most through the unembedding), averaged over the prompts.</summary>
    static void Steer(Io io, Kernels.IBackend backend, string modelDir, string saeDir, System.Text.Json.Nodes.JsonNode target, string promptsPath)
    {
        using var model = Model.Load(modelDir, backend);
        var config = SaeConfig.Load(saeDir);
        var decoder = SparseAutoencoder.ReadDecoder(config);   // [d_sae, d_in]
        float[] Row(int f) => decoder.AsSpan(f * config.DIn, config.DIn).ToArray();
        int self = (int)target["feature"]!;
        var features = new List<int> { self };
        var levels = new List<(string Level, float[] Vector)> { ($"self (feature {self})", Row(self)) };
        foreach (var bin in Scans.InterferenceBins.Keys)
            if (target["bins"]![bin]!["partners"]!.AsArray().FirstOrDefault() is { } p)
            {
                features.Add((int)p["feature"]!);
                levels.Add(($"partner {features[^1]} in bin {bin}", Row(features[^1])));
            }
        levels.Add(("random direction", new Rng(0).Normals([1, config.DIn], 1f)));   // steer --random 1 --seed 0
        // The target's tokens: the logit lens of its unit decoder direction.
        var unit = Row(self);
        System.Numerics.Tensors.TensorPrimitives.Divide(unit, System.Numerics.Tensors.TensorPrimitives.Norm(unit), unit);
        var wU = model.W_U.Data;   // [d_model, d_vocab]
        var lens = new float[model.Spec.DVocab];
        for (int i = 0; i < unit.Length; i++)
            for (int t = 0; t < lens.Length; t++) lens[t] += unit[i] * wU[(long)i * lens.Length + t];
        var targets = Enumerable.Range(0, lens.Length).OrderByDescending(t => lens[t]).Take(3).ToArray();
        string[] texts = ["The quick brown fox", "Once upon a time there was", "In the beginning", "She said that the"];
        var plan = new Interventions.SteerPlan
        {
            Hook = config.Hook,
            Prompts = texts.Select(x => new Interventions.SteerPrompt(model.Encode(x, prependBos: false), targets)).ToArray(),
            Vectors = levels.Select(l => l.Vector).ToArray(),
        };
        Interventions.PromptFile.Write(promptsPath, plan.Prompts);
        var sweep = Interventions.SteerSweep.Collect(model, plan);
        var best = sweep.Best();
        io.Out.WriteLine();
        io.Out.WriteLine($"steering: {levels.Count} directions × {plan.Scales.Count} scales added at {config.Hook} on {texts.Length} prompts " +
                         $"({sweep.Plan.Interventions:N0} interventions, {sweep.InterventionsPerSecond:N0}/s); target tokens " +
                         string.Join(" ", targets.Select(t => System.Text.Json.JsonSerializer.Serialize(model.Tokenizer.Decode([t]), Common.Json))) +
                         " (random toy weights: the paper's ordering need not show)");
        for (int i = 0; i < levels.Count; i++)
        {
            var wc = best.Where(b => b.Item == i && b.Metric == Interventions.SteerMetric.WeightedCosine).ToArray();
            var ov = best.Where(b => b.Item == i && b.Metric == Interventions.SteerMetric.Overlap).ToArray();
            io.Out.WriteLine($"  {levels[i].Level,-30} best Δ weighted cosine {wc.Average(b => b.Delta):+0.0000;-0.0000} " +
                             $"({100 * wc.Average(b => b.RelativeDelta):+0.0;-0.0} %), best Δ overlap {ov.Average(b => b.Delta):+0.0000;-0.0000}");
        }
        io.Out.WriteLine($"  the same with files: polyengine steer --model {modelDir} --sae {saeDir} --features {string.Join(",", features)} --random 1 " +
                         $"--prompts {promptsPath} --out steer/");
    }
}

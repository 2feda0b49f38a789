using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

static class SteerCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var hook = new Option<string?>("--hook") { Description = "Where the edits go: a TransformerLens hook name (default with --sae: the SAE's hook)" };
        var vectors = new Option<string?>("--vectors") { Description = "Steering vectors [n, width]: .npy (float32/64) or .safetensors (its one tensor, or FILE:NAME); each is made unit-norm" };
        var sae = new Option<string?>("--sae") { Description = "SAE folder whose unit decoder rows of --features are the vectors (the feature locus)" };
        var features = new Option<string?>("--features") { Description = "SAE features for --sae: indices and ranges, e.g. 12,40-43" };
        var neurons = new Option<string?>("--neurons") { Description = "The neuron locus: coordinates of the hook to scale by each --factors, e.g. 5,17" };
        var random = new Option<int>("--random") { Description = "Add this many seeded Gaussian unit vectors (the paper's random level)", DefaultValueFactory = _ => 0 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of --random", DefaultValueFactory = _ => 0 };
        var prompts = new Option<string>("--prompts")
        {
            Description = "JSONL, one prompt a line: {\"ids\": [...]} or {\"text\": \"...\"}, with \"targets\": [token ids] or \"target_strings\": [\"...\"] " +
                          "(each string's first token); other fields are ignored",
            Required = true,
        };
        var scales = new Option<string>("--scales") { Description = "Scales of the vectors: 'paper' (±{0.5, 1, 1.5, 2, 3, …, 17, 20}, 32 values) or a list", DefaultValueFactory = _ => "paper" };
        var factors = new Option<string>("--factors") { Description = "Factors of the neurons: 'neuron-paper' ({0, 0.1, 0.2, 0.5, …, 18, 20}, 19 values) or a list", DefaultValueFactory = _ => "neuron-paper" };
        var metrics = new Option<string>("--metrics")
        {
            Description = "Metrics per row: weighted_cosine, overlap, kl (reduced on the device), spearman, kendall, spearman_rank, kendall_rank " +
                          "(a sort of the vocabulary per row, also on the device; they cost more)",
            DefaultValueFactory = _ => "weighted_cosine,overlap,kl",
        };
        var center = new Option<bool>("--center-embeddings") { Description = "Cosines on TransformerLens's mean-centred W_E (the authors' TL runs) instead of HF's" };
        var from = Common.SteerFrom();
        var top = new Option<int>("--top") { Description = "Also record each row's k most likely next tokens and their probabilities", DefaultValueFactory = _ => 0 };
        var bos = Common.Bos("off: the paper's prompts have no BOS; on puts the model's BOS first in every prompt");
        var budget = Common.RowsBudget();
        var shard = new Option<string>("--shard")
        {
            Description = "Sweep shard i of n of the prompts (prompt k in shard k mod n; the tables keep the prompts' numbers in the whole file): " +
                          "i/n, slurm or k8s/n; polyengine merge combines the shards",
            DefaultValueFactory = _ => "0/1",
        };
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Output folder (created): rows, best, vectors tables and manifest.json. Resumable: rerun with the same --out to continue",
            Required = true,
        };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var checkpointEvery = Common.CheckpointEvery();
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("steer", Common.WithExamples(
            "The steering sweep: every prompt × every vector × every scale (or neuron × factor) at one hook, one clean pass per prompt group " +
            "up to the hook and the edited rows fanned out from there; the metrics at each row's last position on the device; the best " +
            "scale per prompt and vector.",
            "polyengine steer --model gpt2 --hook blocks.6.hook_resid_post --vectors dirs.npy --prompts prompts.jsonl --out sweep/",
            "polyengine steer --model gpt2 --sae saes/blocks.8.hook_resid_pre --features 12,40-43 --random 1 --prompts p.jsonl --out sweep/",
            "polyengine steer --model EleutherAI/pythia-70m-deduped --hook blocks.3.hook_mlp_out --neurons 5,17 --prompts p.jsonl --format csv --out neurons/",
            "polyengine steer --model gpt2 --hook blocks.6.hook_resid_post --random 8 --from -1 --prompts p.jsonl --out last-token/"))
        { model, hook, vectors, sae, features, neurons, random, seed, prompts, scales, factors, from, metrics, center, top, bos, budget, shard, format, output, overwrite, checkpointEvery, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            bool useNeurons = r.GetValue(neurons) is not null;
            int sources = new[] { r.GetValue(vectors) is not null, r.GetValue(sae) is not null, useNeurons }.Count(x => x);
            if (sources > 1 || (useNeurons && r.GetValue(random) > 0))
                throw new PolyEngineException("give one locus: --vectors, --sae with --features (either may add --random), or --neurons");
            if (sources == 0 && r.GetValue(random) == 0)
                throw new PolyEngineException("nothing to steer with: give --vectors FILE, --sae DIR --features LIST, --neurons LIST or --random N");
            if ((r.GetValue(sae) is null) != (r.GetValue(features) is null)) throw new PolyEngineException("--sae and --features go together");
            if (r.GetValue(random) < 0) throw new PolyEngineException($"--random must be 0 or positive, got {r.GetValue(random)}");
            bool bosOn = Tokenization.Bos.Parse(r.GetValue(bos)) ?? false;
            var steerMetrics = SteerMetrics.Parse(r.GetValue(metrics));
            var scaleGrid = SteerGrids.Parse(r.GetValue(scales), "--scales", "paper", SteerGrids.PaperScales);
            var factorGrid = SteerGrids.Parse(r.GetValue(factors), "--factors", "neuron-paper", SteerGrids.NeuronPaperFactors);
            var every = Common.Interval(r.GetValue(checkpointEvery));
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");

            // The vectors (or neurons) and where they come from.
            var vectorList = new List<float[]>();
            var vectorSources = new List<SteerVectorSource>();
            HookName? saeHook = null;
            var keyInputs = new JsonObject();
            RunKey.AddModel(keyInputs, m);
            if (r.GetValue(vectors) is string vectorFile)
            {
                var loaded = Formats.VectorFile.Load(vectorFile);
                vectorList.AddRange(loaded);
                vectorSources.AddRange(loaded.Select((v, i) => new SteerVectorSource("file", i, System.Numerics.Tensors.TensorPrimitives.Norm(v))));
                RunKey.AddFile(keyInputs, "vectors", Formats.VectorFile.Split(vectorFile).File);
                io.Out.WriteLine($"vectors: {loaded.Length} from {vectorFile}");
            }
            if (r.GetValue(sae) is string saeFolder)
            {
                var config = SaeConfig.Load(saeFolder);
                config.CheckAgainst(m.Spec);
                saeHook = config.Hook;
                var ids = SteerGrids.ParseIndices(r.GetValue(features), "--features", config.DSae, "feature");
                var decoder = SparseAutoencoder.ReadDecoder(config);   // [d_sae, d_in]
                foreach (int f in ids)
                {
                    var row = decoder.AsSpan(f * config.DIn, config.DIn).ToArray();
                    vectorList.Add(row);
                    vectorSources.Add(new SteerVectorSource("sae", f, System.Numerics.Tensors.TensorPrimitives.Norm(row)));
                }
                RunKey.AddFolder(keyInputs, "sae", saeFolder, "cfg.json", "*.safetensors");
                io.Out.WriteLine($"sae: {saeFolder} at {config.Hook}: the unit decoder rows of {ids.Length} features");
            }
            var hookName = r.GetValue(hook) is string h ? HookName.Parse(h) : saeHook
                ?? throw new PolyEngineException("--hook is missing; name the hook to edit, e.g. blocks.6.hook_resid_post");
            if (saeHook is { } sh && sh != hookName)
                throw new PolyEngineException($"--hook {hookName} differs from the SAE's hook {sh}; the paper injects a feature's direction at its own SAE's hook (drop --hook)");
            if (!HookName.AllFor(m.Spec).Contains(hookName)) throw new PolyEngineException($"--hook {hookName}: this {m.Spec.Architecture} model has no such hook");
            int width = hookName.WidthFor(m.Spec);
            if (r.GetValue(random) > 0)
            {
                var g = new Rng(r.GetValue(seed)).Normals([r.GetValue(random), width], 1f);
                for (int k = 0; k < r.GetValue(random); k++)
                {
                    var v = g.AsSpan(k * width, width).ToArray();
                    vectorList.Add(v);
                    vectorSources.Add(new SteerVectorSource("random", k, System.Numerics.Tensors.TensorPrimitives.Norm(v)));
                }
                io.Out.WriteLine($"random: {r.GetValue(random)} Gaussian unit vectors (seed {r.GetValue(seed)})");
            }
            int[] neuronList = useNeurons ? SteerGrids.ParseIndices(r.GetValue(neurons), "--neurons", width, "coordinate") : [];

            int? bosId = bosOn ? m.BosTokenId : null;
            io.Out.WriteLine(Common.DescribeBos(m, bosOn, bosOn ? "--bos on" : "the paper's prompts have none; --bos on to add it"));
            var part = Shard.Parse(r.GetValue(shard)!);
            var allPrompts = PromptFile.Load(r.GetValue(prompts)!, () => m.Tokenizer, bosId);
            int[] promptNumbers = [.. part.Of(Enumerable.Range(0, allPrompts.Count))];   // each swept prompt's number in the file
            if (promptNumbers.Length == 0) throw new PolyEngineException($"--shard {part}: the {allPrompts.Count} prompts leave this shard none; use at most {allPrompts.Count} shards");
            var promptList = promptNumbers.Select(k => allPrompts[k]).ToList();
            RunKey.AddFile(keyInputs, "prompts", r.GetValue(prompts));
            var plan = new SteerPlan
            {
                Hook = hookName, Prompts = promptList, Vectors = vectorList, Scales = scaleGrid, Neurons = neuronList, Factors = factorGrid,
                Metrics = steerMetrics, CenterEmbeddings = r.GetValue(center), TopK = r.GetValue(top), RowsBudget = r.GetValue(budget),
                From = r.GetValue(from),
            };
            plan.Validate(m.Spec);
            var options = new JsonObject
            {
                ["hook"] = hookName.ToString(), ["locus"] = plan.NeuronLocus ? "neuron" : "vector",
                ["features"] = r.GetValue(features), ["neurons"] = r.GetValue(neurons), ["random"] = r.GetValue(random), ["seed"] = r.GetValue(seed),
                [plan.NeuronLocus ? "factors" : "scales"] = new JsonArray((plan.NeuronLocus ? factorGrid : scaleGrid).Select(x => (JsonNode)x).ToArray()),
                ["metrics"] = new JsonArray(steerMetrics.Select(x => (JsonNode)x.Name()).ToArray()), ["center_embeddings"] = plan.CenterEmbeddings,
                ["top"] = plan.TopK, ["bos"] = bosOn, ["rows_budget"] = plan.RowsBudget, ["from"] = plan.From, ["shard"] = part.ToString(),
            };
            var key = new RunKey(keyInputs, (JsonObject)options.DeepClone());
            Common.PrepareScanOutput(io, folder, outDir, key, r.GetValue(overwrite), $"format={fmt}", SteerWriter.PlannedFiles(fmt, plan.NeuronLocus));
            if (folder.AlreadyComplete) return 0;
            var edits = plan.EditRows().Count;
            io.Out.WriteLine($"sweep: {promptList.Count} prompts × {edits} edits ({(plan.NeuronLocus ? $"{neuronList.Length} neurons × {factorGrid.Length} factors" : $"{vectorList.Count} vectors × {scaleGrid.Length} scales")}) " +
                             $"at {hookName} = {plan.Interventions:N0} interventions; metrics {string.Join(", ", steerMetrics.Select(x => x.Name()))}");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = new ProgressDisplay(io).Run("steer", job =>
                SteerRun.Run(m, plan, folder.Checkpoint(every), (done, total) =>
                {
                    double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                    job.Report(new ProgressDisplay.Status(done / (double)Math.Max(1, total), $"{done:N0}/{total:N0} interventions, {rate:N0}/s",
                        rate > 0 ? (total - done) / rate : null));
                }, prompts => job.Say($"resuming: {prompts:N0} prompts were swept by an earlier run")));
            if (part.Count > 1) result = result with { Rows = [.. result.Rows.Select(x => x with { Prompt = promptNumbers[x.Prompt] })] };   // the file's numbers
            var manifest = ScanManifest.Header("polyengine steer", m, note, new JsonObject
            {
                ["inputs"] = new JsonObject
                {
                    ["prompts"] = Path.GetFullPath(r.GetValue(prompts)!), ["vectors"] = r.GetValue(vectors) is string vf ? Path.GetFullPath(vf) : null,
                    ["sae"] = r.GetValue(sae) is string sf ? Path.GetFullPath(sf) : null,
                },
                ["options"] = options,
            });
            var written = SteerWriter.Write(outDir, result, plan.NeuronLocus ? null : vectorSources, fmt, manifest);
            folder.Complete(written);
            io.Out.WriteLine($"{plan.Interventions:N0} interventions in {result.Seconds:F1} s: {result.InterventionsPerSecond:N0} interventions/s");
            Summarize(io, result);
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>Per vector (neuron): the mean over prompts of the best change of the first metric, and how many prompts improved.</summary>
    static void Summarize(Io io, SteerResult result)
    {
        var metric = result.Plan.Metrics[0];
        string item = result.Plan.NeuronLocus ? "neuron" : "vector";
        foreach (var g in result.Best().Where(b => b.Metric == metric).GroupBy(b => b.Item).Take(20))
            io.Out.WriteLine($"  {item} {g.Key}: best {metric.Name()} Δ mean {g.Average(b => b.Delta):+0.0000;-0.0000}, " +
                             $"improved in {g.Count(b => b.Delta > 0)}/{g.Count()} prompts");
    }
}

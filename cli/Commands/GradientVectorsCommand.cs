using System.CommandLine;
using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Output;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine gradient-vectors</c>: the paper's token-locus vectors from a feature's activation records.</summary>
static class GradientVectorsCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var records = new Option<string>("--records")
        {
            Description = "The feature's activation records: a Neuronpedia feature export (.json: \"activations\" with tokens, values, maxValueTokenIndex) or a features run's contexts.parquet",
            Required = true,
        };
        var feature = new Option<int?>("--feature") { Description = "The feature whose contexts to read from a contexts.parquet" };
        var recordsSae = new Option<string?>("--records-sae") { Description = "The SAE's name in a contexts.parquet that holds several" };
        var limit = new Option<int>("--limit") { Description = "Use the first N records (0: all)", DefaultValueFactory = _ => 0 };
        var hook = new Option<string>("--hook") { Description = "The site whose activation is differentiated, e.g. blocks.3.hook_mlp_out (the authors use hook_attn_out / hook_mlp_out)", Required = true };
        var recipe = new Option<string>("--recipe")
        {
            Description = "tl: every position with activation ≥ ratio·max, one gradient each at its own position, summed, normalised (the authors' TransformerLens path); hf: the first sub-token of the strongest token only",
            DefaultValueFactory = _ => "tl",
        };
        var ratio = new Option<float>("--ratio") { Description = "The tl recipe's threshold r (positions with activation ≥ r·max)", DefaultValueFactory = _ => 0.8f };
        var objective = new Option<string>("--objective")
        {
            Description = "sum (Σ_d a[p, d], the authors'), FILE.npy / FILE.safetensors (⟨a[p], v⟩), or sae:DIR:FEATURE (the feature's pre-activation)",
            DefaultValueFactory = _ => "sum",
        };
        var weights = GradientCommand.Weights();
        var format = new Option<string>("--format") { Description = "The records table: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Write the unit vectors [n, d_model] to this .npy (steer --vectors reads it) and FILE.records.parquet beside it",
            Required = true,
        };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("gradient-vectors", Common.WithExamples(
            "The paper's token-locus vectors: for each activation record of a feature, the gradient of the site's activation at the record's " +
            "strongest positions with respect to the token embedding at the same position, normalised — one vector per record, ready for steer --vectors.",
            "polyengine gradient-vectors --model gpt2 --records feature_1234.json --hook blocks.6.hook_mlp_out --out f1234.npy",
            "polyengine gradient-vectors --model ./toy --records feats/contexts.parquet --feature 12 --hook blocks.1.hook_attn_out --recipe hf --out g12.npy",
            "polyengine steer --model gpt2 --hook blocks.6.hook_mlp_out --vectors f1234.npy --prompts prompts.jsonl --out sweep/"))
        { model, records, feature, recordsSae, limit, hook, recipe, ratio, objective, weights, format, output, device, threads };
        cmd.SetAction(r =>
        {
            string outPath = r.GetValue(output)!;
            if (!outPath.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)) throw new PolyEngineException($"--out {outPath}: give a .npy file");
            Common.CheckWritable(outPath, "--out");
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            var how = r.GetValue(recipe) switch
            {
                "tl" => GradientRecipe.TransformerLens,
                "hf" => GradientRecipe.HuggingFace,
                var x => throw new PolyEngineException($"--recipe {x}: choose tl or hf"),
            };
            if (r.GetValue(limit) < 0) throw new PolyEngineException($"--limit {r.GetValue(limit)}: give 0 (all) or a positive count");
            var list = ActivationRecords.Load(r.GetValue(records)!, r.GetValue(feature), r.GetValue(recordsSae));
            if (r.GetValue(limit) > 0) list = list.Take(r.GetValue(limit)).ToList();
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder} ({m.Spec.Architecture}, {m.Spec.NLayers} layers, d_model {m.Spec.DModel})\ndevice: {note}");
            var hookName = HookName.Parse(r.GetValue(hook)!);
            if (!HookName.AllFor(m.Spec).Contains(hookName)) throw new PolyEngineException($"--hook {hookName}: this {m.Spec.Architecture} model has no such hook");
            var goal = GradientCommand.Objective(r.GetValue(objective)!, r.GetValue(weights)!, m, hookName);
            io.Out.WriteLine($"records: {list.Count} from {r.GetValue(records)}; recipe {GradientVectorWriter.Name(how)}" +
                (how == GradientRecipe.TransformerLens ? $" (positions ≥ {r.GetValue(ratio)}·max)" : " (first sub-token of the strongest token)") + $"; objective {goal.Description}");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var vectors = GradientVectors.FromRecords(m, list, hookName, new GradientVectorOptions { Recipe = how, Ratio = r.GetValue(ratio), Direction = goal.Direction });
            double seconds = sw.Elapsed.TotalSeconds;
            int n = GradientVectorWriter.Write(outPath, vectors, hookName, how, goal.Description, fmt);
            foreach (var v in vectors.Where(v => v.Vector is null)) io.Out.WriteLine($"  {v.Record.Source}: no vector ({v.Note})");
            int backwards = vectors.Sum(v => v.Positions.Length + v.Skipped);
            io.Out.WriteLine($"{n} vectors from {list.Count} records ({backwards} gradients, {vectors.Sum(v => v.Skipped)} skipped) in {seconds:F2} s");
            io.Out.WriteLine($"wrote {outPath} [{n}, {m.Spec.DModel}] and {GradientVectorWriter.TablePath(outPath, fmt)}");
            return 0;
        });
        return cmd;
    }
}

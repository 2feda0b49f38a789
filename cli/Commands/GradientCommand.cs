using System.CommandLine;
using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Tokenization;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine gradient</c>: the backward pass from a hook objective to the token embeddings of one row.</summary>
static class GradientCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var prompt = new Option<string>("--prompt", "-p") { Description = "The row as text (the model's tokenizer; BOS per --bos)" };
        var idsFile = new Option<string>("--ids-file") { Description = "JSON file with an array of rows of token ids ([[1,2,3],[4,5]]); --row picks one" };
        var row = new Option<int>("--row") { Description = "The row of --ids-file", DefaultValueFactory = _ => 0 };
        var hook = new Option<string>("--hook") { Description = "The objective's hook: hook_embed or any block hook but the layer norms' and the pattern (hook_resid_pre/mid/post, attn.hook_q/k/v/z, hook_attn_out, mlp.hook_pre/post, hook_mlp_out)", Required = true };
        var to = new Option<string>("--to")
        {
            Description = "The gradient with respect to this hook: hook_embed (the token embeddings) or an earlier layer's hook_resid_pre, hook_resid_mid, hook_attn_out, hook_mlp_out or hook_resid_post",
            DefaultValueFactory = _ => "hook_embed",
        };
        var position = new Option<int>("--position") { Description = "The objective's position in the row (negative counts from its end: -1 is the last token)", Required = true };
        var objective = new Option<string>("--objective")
        {
            Description = "sum (Σ_d a[p, d], the authors' objective), FILE.npy / FILE.safetensors (⟨a[p], v⟩ for one vector v), or sae:DIR:FEATURE (the feature's pre-activation)",
            DefaultValueFactory = _ => "sum",
        };
        var weights = Weights();
        var bos = Common.Bos("on for --prompt, as TransformerLens does; off for --ids-file rows, which run as given (on puts BOS first)");
        var output = new Option<string>("--out", "-o") { Description = "Write gradient [T, d_model], objective [1] and input_ids [T] to this .safetensors file", Required = true };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("gradient", Common.WithExamples(
            "The gradient of an objective at a hook and position with respect to the token embeddings of every position of one row " +
            "(the token locus's direction), or with respect to an earlier hook (--to): a hand-written backward pass over the state the forward kept.",
            "polyengine gradient --model gpt2 --prompt \"The dog barked\" --hook blocks.6.hook_mlp_out --position -1 --out grad.safetensors",
            "polyengine gradient --model ./toy --ids-file rows.json --row 2 --hook blocks.1.hook_resid_post --position 5 --objective v.npy --out g.safetensors",
            "polyengine gradient --model gpt2 --prompt \"Hello\" --hook blocks.8.hook_resid_pre --position 1 --objective sae:./saes/blocks.8.hook_resid_pre:12 --out g.safetensors"))
        { model, prompt, idsFile, row, hook, position, objective, weights, to, bos, output, device, threads };
        cmd.SetAction(r =>
        {
            if ((r.GetValue(prompt) is null) == (r.GetValue(idsFile) is null)) throw new PolyEngineException("give one of --prompt or --ids-file");
            string outPath = r.GetValue(output)!;
            if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) throw new PolyEngineException($"--out {outPath}: give a .safetensors file");
            Common.CheckWritable(outPath, "--out");
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder} ({m.Spec.Architecture}, {m.Spec.NLayers} layers, d_model {m.Spec.DModel})\ndevice: {note}");
            int[] ids;
            if (r.GetValue(prompt) is string text)
            {
                bool prependBos = Bos.Parse(r.GetValue(bos)) ?? true;
                ids = m.Encode(text, prependBos);
                io.Out.WriteLine(Common.DescribeBos(m, prependBos, "text, as TransformerLens does"));
            }
            else
            {
                var rows = TokenIds.ParseJsonFile(r.GetValue(idsFile)!);
                int pick = r.GetValue(row);
                if (pick < 0 || pick >= rows.Length) throw new PolyEngineException($"--row {pick}: {r.GetValue(idsFile)} has rows 0..{rows.Length - 1}");
                ids = Bos.Parse(r.GetValue(bos)) == true ? [m.BosTokenId, .. rows[pick]] : rows[pick];
                if (Bos.Parse(r.GetValue(bos)) == true) io.Out.WriteLine(Common.DescribeBos(m, true, "--bos on"));
            }
            m.ValidateIds(ids, 1, ids.Length);
            var hookName = HookName.Parse(r.GetValue(hook)!);
            if (!HookName.AllFor(m.Spec).Contains(hookName)) throw new PolyEngineException($"--hook {hookName}: this {m.Spec.Architecture} model has no such hook");
            int p = r.GetValue(position) < 0 ? ids.Length + r.GetValue(position) : r.GetValue(position);
            if (p < 0 || p >= ids.Length) throw new PolyEngineException($"--position {r.GetValue(position)}: the row has {ids.Length} tokens (positions 0..{ids.Length - 1}, or -1..-{ids.Length})");
            var goal = Objective(r.GetValue(objective)!, r.GetValue(weights)!, m, hookName);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var toHook = HookName.Parse(r.GetValue(to)!);
            var (grad, act) = Gradient.Run(m, [ids], [new GradientSeed(0, hookName, p, goal.Direction)], toHook)[0];
            double seconds = sw.Elapsed.TotalSeconds;
            double value = goal.Value(act);
            new SafeTensorsWriter()
                .Add("gradient", grad, ids.Length, m.Spec.DModel)
                .Add("objective", [(float)value], 1)
                .Add("input_ids", ids.Select(i => (long)i).ToArray(), ids.Length)
                .AddMetadata("hook", hookName.ToString()).AddMetadata("position", p.ToString()).AddMetadata("objective", goal.Description).AddMetadata("to", toHook.ToString())
                .Save(outPath);
            double norm = Math.Sqrt(grad.Skip(p * m.Spec.DModel).Take(m.Spec.DModel).Sum(x => (double)x * x));
            io.Out.WriteLine($"objective {goal.Description} at {hookName}, position {p}: {value:G6}; ‖∂/∂{toHook} at position {p}‖ = {norm:G6} ({seconds * 1000:F0} ms)");
            io.Out.WriteLine($"wrote {outPath}: gradient [{ids.Length}, {m.Spec.DModel}], objective, input_ids");
            return 0;
        });
        return cmd;
    }

    /// <summary>--weights: the parameterisation the objective is read on (gradient, gradient-vectors).</summary>
    internal static Option<string> Weights() => new("--weights")
    {
        Description = "hf: the unprocessed HF weights (default); tl: as the authors' TransformerLens runs (center_writing_weights; hook_attn_out / hook_mlp_out only, where the all-ones objective is degenerate)",
        DefaultValueFactory = _ => "hf",
    };

    /// <summary>The objective of --objective on --weights at <paramref name="hook"/>.</summary>
    internal static GradientObjective Objective(string objective, string weights, Model m, HookName hook)
    {
        var goal = GradientObjective.Parse(objective, m, hook);
        return weights switch
        {
            "hf" => goal,
            "tl" => goal.UnderTransformerLensWeights(hook, hook.WidthFor(m.Spec)),
            _ => throw new PolyEngineException($"--weights {weights}: choose hf or tl"),
        };
    }
}

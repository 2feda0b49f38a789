using System.CommandLine;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Tokenization;

namespace PolyEngine.Cli.Commands;

static class RunCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var prompt = new Option<string[]>("--prompt", "-p")
        {
            Description = "Text to run, tokenized with the model's tokenizer; repeat for several rows (they may differ in length)",
            AllowMultipleArgumentsPerToken = false,
        };
        var ids = new Option<string>("--ids") { Description = "Token ids, rows separated by ';' (\"1,2,3;4,5\"); rows may differ in length" };
        var idsFile = new Option<string>("--ids-file") { Description = "JSON file with an array of rows of token ids ([[1,2,3],[4,5]])" };
        var bos = Common.Bos("with --sae: the SAE's prepend_bos; else on for --prompt, as TransformerLens does, and off for ids, which run as given");
        var hooks = new Option<string>("--hooks") { Description = "Hooks to export: comma-separated TransformerLens names, '*' wildcards, or 'all'" };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Write input_ids, attention_mask, logits and the hooks to this file: .safetensors or .npz (numpy); rows of different " +
                          "lengths are right-padded, with zeros at the padded positions",
        };
        var sae = new Option<string>("--sae")
        {
            Description = "SAE folders (comma-separated; SAELens or sparsify): adds {hook}.hook_sae_acts_pre/_post, .hook_sae_output and " +
                          ".hook_sae_error to --out. Without --splice the SAE only reads its hook and the logits are the model's own " +
                          "(SAELens use_error_term=True)",
        };
        var splice = new Option<bool>("--splice")
        {
            Description = "Splice the SAEs in: each hook is replaced by its SAE's reconstruction during the pass, so the layers after it and the " +
                          "logits see it (SAELens HookedSAETransformer with the SAE attached)",
        };
        var edits = new Option<string>("--edits")
        {
            Description = "JSON file of edits applied in list order where each hook is computed, e.g. " +
                          "[{\"hook\": \"blocks.1.hook_resid_post\", \"add\": [...d_model floats], \"scale\": 4}, " +
                          "{\"hook\": \"blocks.0.mlp.hook_post\", \"coordinate\": 7, \"factor\": 0}]; each edit may name \"rows\" and " +
                          "\"positions\" (or \"from\"), counted in the tokens that run (BOS included when prepended); \"value\" sets a coordinate. " +
                          "--out then holds the edited logits and hooks",
        };
        var top = new Option<int>("--top") { Description = "How many next-token candidates to print per row", DefaultValueFactory = _ => 5 };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("run", Common.WithExamples(
            "Run a forward pass: print the top next tokens at the last real position of each row, optionally export logits and hooks.",
            "polyengine run --model gpt2 --prompt \"The dog\" --prompt \"A cat sat on the\"",
            "polyengine run --model ./toy --ids \"1,2,3;4,5\" --hooks \"blocks.*.hook_resid_post\" --out acts.safetensors",
            "polyengine run --model EleutherAI/pythia-70m-deduped --prompt \"Hello\" --bos off --hooks all --out all.npz",
            "polyengine run --model gpt2 --prompt \"The dog\" --sae ./saes/blocks.8.hook_resid_pre --splice --out sae.safetensors",
            "polyengine run --model gpt2 --prompt \"The dog\" --edits steer.json --out steered.safetensors"))
        { model, prompt, ids, idsFile, bos, hooks, sae, splice, edits, output, top, device, threads };
        cmd.SetAction(r =>
        {
            var prompts = r.GetValue(prompt) ?? [];
            int inputs = new[] { prompts.Length > 0, r.GetValue(ids) is not null, r.GetValue(idsFile) is not null }.Count(x => x);
            if (inputs != 1) throw new PolyEngineException("give exactly one of --prompt (repeatable), --ids or --ids-file");
            if (r.GetValue(top) < 0) throw new PolyEngineException($"--top must be 0 or positive, got {r.GetValue(top)}");
            bool? bosChoice = Bos.Parse(r.GetValue(bos));
            var editSpecs = r.GetValue(edits) is string editsPath ? EditSpec.Load(editsPath) : [];
            string? outPath = r.GetValue(output);
            if (outPath is not null)
            {
                RunWriter.CheckFormat(outPath);
                Common.CheckWritable(outPath, "--out");
            }
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder} ({m.Spec.Architecture}, {m.Spec.NLayers} layers, d_model {m.Spec.DModel})");
            io.Out.WriteLine($"device: {note}");
            var selected = HookName.Select(m.Spec, r.GetValue(hooks));
            var saeFolders = (r.GetValue(sae) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if ((selected.Count > 0 || saeFolders.Length > 0) && outPath is null)
                throw new PolyEngineException("--hooks and --sae need --out FILE.safetensors (or .npz) to write the activations to");
            if (r.GetValue(splice) && saeFolders.Length == 0) throw new PolyEngineException("--splice splices the --sae SAEs in; give --sae");
            var saes = saeFolders.Length == 0 ? [] : Common.LoadSaes(io, m, r.GetValue(sae)!);
            try
            {
                if (saes.GroupBy(s => s.Config.Hook).FirstOrDefault(g => g.Count() > 1) is { } shared)
                    throw new PolyEngineException($"--sae: {string.Join(" and ", shared.Select(s => s.Config.Folder))} all read {shared.Key}; give one SAE per hook (their outputs share the hook's names)");
                var (prependBos, why) = Bos.Resolve(bosChoice, saes.Select(s => (s.Config.Folder, s.Config.PrependBos)), prompts.Length > 0,
                    prompts.Length > 0 ? "text, as TransformerLens does" : "ids run as given");
                io.Out.WriteLine(Common.DescribeBos(m, prependBos, why));
                int[][] rows = prompts.Length > 0 ? prompts.Select(p => m.Encode(p, prependBos: false)).ToArray()
                    : r.GetValue(ids) is string list ? TokenIds.ParseList(list) : TokenIds.ParseJsonFile(r.GetValue(idsFile)!);
                var splices = r.GetValue(splice) ? saes.Select(s => new SaeSplice(s)).ToList() : [];
                int batch = rows.Length, seq = rows.Max(x => x.Length) + (prependBos ? 1 : 0);
                var hookEdits = editSpecs.Select((e, i) => e.Resolve(m.Spec, batch, seq, $"--edits {r.GetValue(edits)}: edit {i}")).ToArray();
                if (hookEdits.Length > 0)
                    io.Out.WriteLine($"edits: {hookEdits.Length} from {r.GetValue(edits)}, at {string.Join(", ", hookEdits.Select(e => e.Hook.ToString()).Distinct())}");
                if (splices.Count > 0)
                    io.Out.WriteLine($"splice: {string.Join(", ", saes.Select(s => s.Config.Hook))} replaced by the SAE reconstruction downstream");
                var result = m.Run(rows, new RunOptions
                {
                    Hooks = selected.Concat(saes.Select(s => s.Config.Hook)).Distinct().ToArray(),
                    Logits = outPath is null ? LogitsMode.None : LogitsMode.All,
                    TopLogits = r.GetValue(top),
                    PrependBos = prependBos,
                    Replacements = splices.Select(s => s.Replacement).ToArray(),
                    Edits = hookEdits,
                });
                PrintTop(io, m, result, r.GetValue(top));
                if (outPath is not null)
                {
                    var saeTensors = splices.Count > 0 ? splices.SelectMany(s => s.Tensors(result)).ToList() : SaeHooks.Apply(saes, result).ToList();
                    RunWriter.Save(outPath, result, new Dictionary<string, string>
                    {
                        ["model"] = m.Folder, ["polyengine"] = typeof(Model).Assembly.GetName().Version!.ToString(),
                        ["prepend_bos"] = prependBos ? "true" : "false", ["sae_splice"] = splices.Count > 0 ? "true" : "false",
                        ["edits"] = editSpecs.Count == 0 ? "none" : Path.GetFullPath(r.GetValue(edits)!),
                    }, saeTensors);
                    io.Out.WriteLine($"wrote {outPath}: input_ids, attention_mask, logits [{result.Batch}, {result.Seq}, {m.Spec.DVocab}], {result.Cache.Count} hooks" +
                        (saes.Count > 0 ? $" and {saeTensors.Count} SAE tensors" : ""));
                }
            }
            finally
            {
                foreach (var s in saes) s.Dispose();
            }
            return 0;
        });
        return cmd;
    }

    /// <summary>Each row's most likely next tokens, reduced on the backend (<see cref="RunOptions.TopLogits"/>).</summary>
    static void PrintTop(Io io, Model m, RunResult result, int n)
    {
        if (n == 0) return;
        var top = result.Top!;
        Func<int, string> decode = TryDecoder(m);
        for (int r = 0; r < result.Batch; r++)
        {
            int len = result.Lengths[r];
            io.Out.WriteLine($"row {r} ({len} tokens), next token after {decode(result.InputIds[r * result.Seq + len - 1])}:");
            for (int j = 0; j < top.K; j++)
            {
                var (id, logit, p) = top.At(r, j);
                io.Out.WriteLine($"  {j + 1,2}. {id,6} {decode(id),-20} logit {logit,9:F4}  p {p:F4}");
            }
        }
    }

    static Func<int, string> TryDecoder(Model m)
    {
        try
        {
            var tok = m.Tokenizer;
            return id => System.Text.Json.JsonSerializer.Serialize(tok.Decode([id]), Common.Json);
        }
        catch (PolyEngineException)
        {
            return id => $"#{id}";
        }
    }
}

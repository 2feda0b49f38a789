using System.CommandLine;
using PolyEngine.Forward;
using PolyEngine.Hooks;
using PolyEngine.Output;
using PolyEngine.Tokenization;

namespace PolyEngine.Cli.Commands;

static class RunCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Text to run (tokenized with the model's tokenizer; no BOS is added)" };
        var ids = new Option<string>("--ids") { Description = "Token ids, rows separated by ';' (\"1,2,3;4,5,6\")" };
        var idsFile = new Option<string>("--ids-file") { Description = "JSON file with an array of equal-length rows of token ids" };
        var hooks = new Option<string>("--hooks") { Description = "Hooks to export: comma-separated TransformerLens names, '*' wildcards, or 'all'" };
        var output = new Option<string>("--out", "-o") { Description = "Write logits, input_ids and the hooks to this .safetensors file" };
        var sae = new Option<string>("--sae") { Description = "SAE folders (comma-separated; SAELens or sparsify): adds {hook}.hook_sae_acts_pre/_post, .hook_sae_output and .hook_sae_error to --out" };
        var top = new Option<int>("--top") { Description = "How many next-token candidates to print per row", DefaultValueFactory = _ => 5 };
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("run", Common.WithExamples(
            "Run a forward pass: print the top next tokens at the last position of each row, optionally export logits and hooks.",
            "polyengine run --model gpt2 --prompt \"The dog\"",
            "polyengine run --model ./toy --ids \"1,2,3;4,5,6\" --hooks \"blocks.*.hook_resid_post\" --out acts.safetensors",
            "polyengine run --model EleutherAI/pythia-70m-deduped --prompt \"Hello\" --hooks all --out all.safetensors",
            "polyengine run --model gpt2 --prompt \"The dog\" --sae ./saes/blocks.8.hook_resid_pre --out sae.safetensors"))
        { model, prompt, ids, idsFile, hooks, sae, output, top, device, threads };
        cmd.SetAction(r =>
        {
            int inputs = new[] { r.GetValue(prompt) is not null, r.GetValue(ids) is not null, r.GetValue(idsFile) is not null }.Count(x => x);
            if (inputs != 1) throw new PolyEngineException("give exactly one of --prompt, --ids or --ids-file");
            if (r.GetValue(top) < 0) throw new PolyEngineException($"--top must be 0 or positive, got {r.GetValue(top)}");
            string? outPath = r.GetValue(output);
            if (outPath is not null) Common.CheckWritable(outPath, "--out");
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder} ({m.Spec.Architecture}, {m.Spec.NLayers} layers, d_model {m.Spec.DModel})");
            io.Out.WriteLine($"device: {note}");
            var selected = HookName.Select(m.Spec, r.GetValue(hooks));
            var saeFolders = (r.GetValue(sae) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if ((selected.Count > 0 || saeFolders.Length > 0) && outPath is null)
                throw new PolyEngineException("--hooks and --sae need --out FILE.safetensors to write the activations to");
            var saes = saeFolders.Length == 0 ? [] : Common.LoadSaes(io, m, r.GetValue(sae)!);
            if (saes.GroupBy(s => s.Config.Hook).FirstOrDefault(g => g.Count() > 1) is { } shared)
                throw new PolyEngineException($"--sae: {string.Join(" and ", shared.Select(s => s.Config.Folder))} all read {shared.Key}; give one SAE per hook (their outputs share the hook's names)");
            int[][] rows = r.GetValue(prompt) is string text ? [m.Encode(text)]
                : r.GetValue(ids) is string list ? TokenIds.ParseList(list) : TokenIds.ParseJsonFile(r.GetValue(idsFile)!);
            var flat = rows.SelectMany(x => x).ToArray();
            var result = m.Run(rows, new RunOptions
            {
                Hooks = selected.Concat(saes.Select(s => s.Config.Hook)).Distinct().ToArray(),
                Logits = outPath is null ? LogitsMode.None : LogitsMode.All,
                TopLogits = r.GetValue(top),
            });
            PrintTop(io, m, rows, result, r.GetValue(top));
            if (outPath is not null)
            {
                var saeTensors = Sae.SaeHooks.Apply(saes, result).ToList();
                RunWriter.Save(outPath, flat, result, new Dictionary<string, string> { ["model"] = m.Folder, ["polyengine"] = typeof(Model).Assembly.GetName().Version!.ToString() },
                    saeTensors);
                io.Out.WriteLine($"wrote {outPath}: input_ids, logits [{result.Batch}, {result.Seq}, {m.Spec.DVocab}], {result.Cache.Count} hooks" +
                    (saes.Count > 0 ? $" and {saeTensors.Count} SAE tensors" : ""));
            }
            foreach (var s in saes) s.Dispose();
            return 0;
        });
        return cmd;
    }

    /// <summary>Each row's most likely next tokens, reduced on the backend (<see cref="RunOptions.TopLogits"/>).</summary>
    static void PrintTop(Io io, Model m, int[][] rows, RunResult result, int n)
    {
        if (n == 0) return;
        var top = result.Top!;
        Func<int, string> decode = TryDecoder(m);
        for (int r = 0; r < rows.Length; r++)
        {
            io.Out.WriteLine($"row {r} ({rows[r].Length} tokens), next token after {decode(rows[r][^1])}:");
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

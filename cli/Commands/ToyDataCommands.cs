using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Cli.Commands;

static class ToyDataCommands
{
    public static Command Corpus(Io io)
    {
        var output = new Option<string>("--out", "-o") { Description = "Output .jsonl file", Required = true };
        var docs = new Option<int>("--docs") { Description = "Documents", DefaultValueFactory = _ => 200 };
        var sentences = new Option<int>("--sentences") { Description = "Sentences per document", DefaultValueFactory = _ => 8 };
        var seed = new Option<ulong>("--seed") { Description = "Random seed; the same seed gives the same bytes", DefaultValueFactory = _ => 0UL };
        var cmd = new Command("toy-corpus", Common.WithExamples("Write a deterministic synthetic corpus (JSONL with a text field) for the demo and tests.",
            "polyengine toy-corpus --docs 200 --seed 1 --out corpus.jsonl")) { output, docs, sentences, seed };
        cmd.SetAction(r =>
        {
            Common.CheckWritable(r.GetValue(output)!, "--out");
            if (r.GetValue(docs) < 1 || r.GetValue(sentences) < 1) throw new PolyEngineException("--docs and --sentences must be positive");
            ToyCorpus.Write(r.GetValue(output)!, r.GetValue(docs), r.GetValue(sentences), r.GetValue(seed));
            io.Out.WriteLine($"wrote {r.GetValue(output)}: {r.GetValue(docs)} documents");
            return 0;
        });
        return cmd;
    }

    public static Command Sae(Io io)
    {
        var model = Common.Model();
        var hook = new Option<string>("--hook") { Description = "TransformerLens hook the SAE reads", DefaultValueFactory = _ => "blocks.0.hook_resid_post" };
        var dSae = new Option<int>("--d-sae") { Description = "Number of features", DefaultValueFactory = _ => 512 };
        var arch = new Option<string>("--arch") { Description = "standard, jumprelu or topk", DefaultValueFactory = _ => "topk" };
        var k = new Option<int>("--k") { Description = "Active features per token for topk", DefaultValueFactory = _ => 16 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL, Description = "Random seed" };
        var output = new Option<string>("--out", "-o") { Description = "Output SAE folder (SAELens 6.x format)", Required = true };
        var cmd = new Command("toy-sae", Common.WithExamples("Write a random SAE for a model's hook in SAELens format, deterministic per seed.",
            "polyengine toy-sae --model ./toy --hook blocks.1.hook_resid_post --d-sae 1024 --arch topk --k 16 --out toy-sae"))
        { model, hook, dSae, arch, k, seed, output };
        cmd.SetAction(r =>
        {
            Scans.RunFolder.Create(r.GetValue(output)!);
            var spec = ModelSpec.FromConfigFile(Path.Combine(HfHub.ResolveModelFolder(r.GetValue(model)!), "config.json"));
            var h = HookName.Parse(r.GetValue(hook)!);
            if (!HookName.AllFor(spec).Contains(h)) throw new PolyEngineException($"--hook {h}: this model has no such hook");
            int dIn = h.WidthFor(spec);
            if (dIn == 0) throw new PolyEngineException($"--hook {h}: the attention pattern is not an SAE input; choose a hook with a width per position");
            var architecture = r.GetValue(arch) switch
            {
                "standard" => SaeArchitecture.Standard, "jumprelu" => SaeArchitecture.JumpRelu, "topk" => SaeArchitecture.TopK,
                var other => throw new PolyEngineException($"--arch '{other}' is unknown; choose standard, jumprelu or topk"),
            };
            if (r.GetValue(dSae) < 2) throw new PolyEngineException("--d-sae must be at least 2");
            ToySae.Write(r.GetValue(output)!, h, dIn, r.GetValue(dSae), architecture, r.GetValue(seed), r.GetValue(k), contextSize: Math.Min(128, spec.NCtx));
            io.Out.WriteLine($"wrote {r.GetValue(output)}: {architecture} SAE, d_in {dIn}, d_sae {r.GetValue(dSae)}, at {h}");
            return 0;
        });
        return cmd;
    }
    public static Command Explanations(Io io)
    {
        var sae = new Option<string>("--sae") { Description = "SAE folder the explanations describe (its d_sae)", Required = true };
        var dim = new Option<int>("--dim") { Description = "Embedding width", DefaultValueFactory = _ => 32 };
        var topics = new Option<int>("--topics") { Description = "Topics: features of one topic get related embeddings", DefaultValueFactory = _ => 8 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL, Description = "Random seed" };
        var output = new Option<string>("--out", "-o") { Description = "Output .jsonl file (Neuronpedia explanation-export layout)", Required = true };
        var cmd = new Command("toy-explanations", Common.WithExamples(
            "Write synthetic explanation embeddings for an SAE (JSONL with index, description, embedding), deterministic per seed: " +
            "features fall into topics; every tenth has no explanation, every seventh two.",
            "polyengine toy-explanations --sae toy-sae --out toy-explanations.jsonl"))
        { sae, dim, topics, seed, output };
        cmd.SetAction(r =>
        {
            Common.CheckWritable(r.GetValue(output)!, "--out");
            var c = SaeConfig.Load(r.GetValue(sae)!);
            if (r.GetValue(dim) < 1 || r.GetValue(topics) < 1) throw new PolyEngineException("--dim and --topics must be positive");
            ToyExplanations.Write(r.GetValue(output)!, c.DSae, r.GetValue(dim), r.GetValue(topics), r.GetValue(seed));
            io.Out.WriteLine($"wrote {r.GetValue(output)}: explanations of {c.DSae} features, embeddings of width {r.GetValue(dim)}");
            return 0;
        });
        return cmd;
    }
}

using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Cli.Commands;

static class ToyCommand
{
    public static Command Create(Io io)
    {
        var family = new Option<string>("--family") { Description = "gpt2 or neox", Required = true };
        var preset = new Option<string>("--preset") { Description = "tiny, gpt2-small or pythia-70m (real shapes)", DefaultValueFactory = _ => "tiny" };
        var seed = new Option<ulong>("--seed") { Description = "Random seed; the same seed gives the same bytes", DefaultValueFactory = _ => 0UL };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created)", Required = true };
        var cmd = new Command("toy", Common.WithExamples(
            "Write a random model in HuggingFace format (config.json + model.safetensors, + tokenizer.json for neox), deterministic per seed.",
            "polyengine toy --family gpt2 --preset gpt2-small --seed 1 --out toy-gpt2-small",
            "polyengine toy --family neox --preset pythia-70m --seed 1 --out toy-pythia-70m")) { family, preset, seed, output };
        cmd.SetAction(r =>
        {
            var fam = ParseFamily(r.GetValue(family)!);
            var config = ToyModels.Preset(fam, r.GetValue(preset)!);
            string dir = r.GetValue(output)!;
            Scans.RunFolder.Create(dir);
            ToyModels.Write(config, r.GetValue(seed), dir);
            io.Out.WriteLine($"wrote {fam} {r.GetValue(preset)} (d_model {config.DModel}, {config.NLayers} layers, d_vocab {config.DVocab}, {config.DType}) to {dir}");
            return 0;
        });
        return cmd;
    }

    public static ModelFamily ParseFamily(string s) => s switch
    {
        "gpt2" => ModelFamily.Gpt2,
        "neox" or "pythia" => ModelFamily.GptNeoX,
        _ => throw new PolyEngineException($"--family '{s}' is unknown; choose gpt2 or neox"),
    };
}

using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Models;

namespace PolyEngine.Cli.Commands;

static class InspectCommand
{
    public static Command Create(Io io)
    {
        var path = new Argument<string>("PATH") { Description = "A model folder, a hub id in the HF cache, or any .safetensors file" };
        var cmd = new Command("inspect", Common.WithExamples(
            "Show a model's config mapping, tensor names, dtypes, shapes and parameter count (or any safetensors file's contents).",
            "polyengine inspect gpt2",
            "polyengine inspect ./my-model",
            "polyengine inspect sae_weights.safetensors")) { path };
        cmd.SetAction(r => Inspect(r.GetValue(path)!, io));
        return cmd;
    }

    static int Inspect(string path, Io io)
    {
        if (File.Exists(path))
        {
            using var f = SafeTensorsFile.Open(path);
            io.Out.WriteLine($"{path}: safetensors, {f.Tensors.Count} tensors, {Formats.FileLinks.Length(path):N0} bytes");
            foreach (var (k, v) in f.Metadata) io.Out.WriteLine($"  metadata {k} = {v}");
            PrintTensors(io, f.Tensors);
            return 0;
        }
        string folder = HfHub.ResolveModelFolder(path);
        var spec = ModelSpec.FromConfigFile(Path.Combine(folder, "config.json"));
        io.Out.WriteLine($"{folder}");
        io.Out.WriteLine($"  architecture   {spec.Architecture} ({spec.Family})");
        io.Out.WriteLine($"  d_model {spec.DModel}  n_layers {spec.NLayers}  n_heads {spec.NHeads}  d_head {spec.DHead}  d_mlp {spec.DMlp}  d_vocab {spec.DVocab}  n_ctx {spec.NCtx}");
        io.Out.WriteLine($"  activation {spec.Act}  ln_eps {spec.LnEps:g}  positions {(spec.RotaryDim > 0 ? $"rotary {spec.RotaryDim} dims, base {spec.RotaryBase:g}" : "learned")}  " +
                         $"residual {(spec.ParallelResidual ? "parallel" : "sequential")}  head {(spec.TiedHead ? "tied to W_E" : "untied")}");
        io.Out.WriteLine($"  parameters {spec.ParameterCount:N0}");
        using var files = WeightFiles.Open(folder);
        foreach (var f in files.Files)
        {
            io.Out.WriteLine($"  {Path.GetFileName(f.Path)}: {f.Tensors.Count} tensors");
            PrintTensors(io, f.Tensors);
        }
        return 0;
    }

    static void PrintTensors(Io io, IEnumerable<SafeTensorInfo> tensors)
    {
        foreach (var t in tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
            io.Out.WriteLine($"    {t.Name,-56} {t.DType,-5} {t.ShapeText}");
        io.Out.WriteLine($"    total elements {tensors.Sum(t => t.ElementCount):N0}");
    }
}

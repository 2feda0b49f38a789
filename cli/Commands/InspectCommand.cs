using System.CommandLine;
using PolyEngine.Formats;
using PolyEngine.Models;

namespace PolyEngine.Cli.Commands;

static class InspectCommand
{
    public static Command Create(Io io)
    {
        var path = new Argument<string>("PATH") { Description = "A model folder, a hub id in the HF cache, an SAE folder, or any .safetensors file" };
        var cmd = new Command("inspect", Common.WithExamples(
            "Show a model's config mapping, tensor names, dtypes, shapes and parameter count; an SAE folder's configuration and tensors; " +
            "or any safetensors file's contents. Tensors are listed in reading order (h.2 before h.10).",
            "polyengine inspect gpt2",
            "polyengine inspect ./my-model",
            "polyengine inspect ./saes/blocks.8.hook_resid_pre",
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
        if (Directory.Exists(path) && File.Exists(Path.Combine(path, "cfg.json")) && !File.Exists(Path.Combine(path, "config.json")))
            return InspectSae(path, io);
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

    /// <summary>An SAE folder: its configuration as the engine reads it, and its weight tensors.</summary>
    static int InspectSae(string folder, Io io)
    {
        var c = SaeConfig.Load(folder);
        io.Out.WriteLine($"{Path.GetFullPath(folder)}: SAE ({c.Format})");
        io.Out.WriteLine($"  architecture {c.Architecture}{(c.Architecture == SaeArchitecture.TopK ? $" (k {c.K})" : "")}  d_in {c.DIn}  d_sae {c.DSae}  hook {c.Hook}");
        io.Out.WriteLine($"  input: normalisation {c.Normalization}, apply_b_dec_to_input {c.ApplyBDecToInput.ToString().ToLowerInvariant()}, " +
                         $"rescale_acts_by_decoder_norm {c.RescaleActsByDecoderNorm.ToString().ToLowerInvariant()}, center_writing_weights {c.CenterWritingWeights.ToString().ToLowerInvariant()}");
        io.Out.WriteLine($"  training windows: context_size {c.ContextSize?.ToString() ?? "(not given)"}, prepend_bos {c.PrependBos.ToString().ToLowerInvariant()}" +
                         (c.ModelName is null ? "" : $", model {c.ModelName}"));
        foreach (var file in Directory.GetFiles(folder, "*.safetensors").Order(NaturalOrder.Comparer))
        {
            using var f = SafeTensorsFile.Open(file);
            io.Out.WriteLine($"  {Path.GetFileName(file)}: {f.Tensors.Count} tensors");
            PrintTensors(io, f.Tensors);
        }
        return 0;
    }

    static void PrintTensors(Io io, IEnumerable<SafeTensorInfo> tensors)
    {
        foreach (var t in tensors.OrderBy(t => t.Name, NaturalOrder.Comparer))
            io.Out.WriteLine($"    {t.Name,-56} {t.DType,-5} {t.ShapeText}");
        io.Out.WriteLine($"    total elements {tensors.Sum(t => t.ElementCount):N0}");
    }
}

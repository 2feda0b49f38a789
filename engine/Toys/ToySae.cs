using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Toys;

/// <summary>
/// A random SAE in the SAELens 6.x folder format (cfg.json + sae_weights.safetensors), deterministic per seed, drawn as
/// the HF-golden SAEs were: unit-norm W_dec rows, W_enc ~ N(0, 1/d_in), biases ~ N(0, 0.1²). For tests and the demo.
/// </summary>
public static class ToySae
{
    public static void Write(string folder, HookName hook, int dIn, int dSae, SaeArchitecture architecture, ulong seed,
        int k = 0, int contextSize = 32, bool prependBos = false, string modelName = "toy")
    {
        Directory.CreateDirectory(folder);
        var rng = new Rng(seed);
        var wDec = rng.Normals([dSae, dIn], 1f);
        for (int j = 0; j < dSae; j++)
        {
            var row = wDec.AsSpan(j * dIn, dIn);
            float norm = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(row));
            System.Numerics.Tensors.TensorPrimitives.Divide(row, norm, row);
        }
        var w = new SafeTensorsWriter()
            .Add("W_enc", rng.Normals([dIn, dSae], 1f / MathF.Sqrt(dIn)), dIn, dSae)
            .Add("b_enc", rng.Normals([dSae], 0.1f), dSae)
            .Add("W_dec", wDec, dSae, dIn)
            .Add("b_dec", rng.Normals([dIn], 0.1f), dIn);
        if (architecture == SaeArchitecture.JumpRelu) w.Add("threshold", rng.Uniforms(dSae, 0.05f, 0.5f), dSae);
        var cfg = new JsonObject
        {
            ["d_in"] = dIn, ["d_sae"] = dSae, ["dtype"] = "float32", ["device"] = "cpu", ["apply_b_dec_to_input"] = true,
            ["normalize_activations"] = "none", ["reshape_activations"] = "none",
            ["architecture"] = architecture switch { SaeArchitecture.JumpRelu => "jumprelu", SaeArchitecture.TopK => "topk", _ => "standard" },
            ["metadata"] = new JsonObject
            {
                ["sae_lens_version"] = "6.18.0", ["model_name"] = modelName, ["hook_name"] = hook.ToString(), ["hook_head_index"] = null,
                ["context_size"] = contextSize, ["prepend_bos"] = prependBos, ["model_from_pretrained_kwargs"] = new JsonObject(),
            },
        };
        if (architecture == SaeArchitecture.TopK) { cfg["k"] = k; cfg["rescale_acts_by_decoder_norm"] = false; }
        w.Save(Path.Combine(folder, "sae_weights.safetensors"));
        AtomicFile.WriteText(Path.Combine(folder, "cfg.json"), cfg.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}

using PolyEngine.Formats;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>Every tensor HuggingFace transformers recorded for the tiny GPT-2 and GPT-NeoX fixtures, matched at 1e-4.</summary>
public class GoldenParityTests
{
    public static TheoryData<string> Models => new() { "gpt2-tiny", "neox-tiny" };

    [Theory]
    [MemberData(nameof(Models))]
    public void EveryGoldenTensorMatches(string name)
    {
        using var model = Model.Load(Fixtures.Golden(name));
        AssertEveryGoldenTensor(model, name, "cpu");
    }

    /// <summary>
    /// Runs the golden input_ids through <paramref name="model"/> (any backend) with every hook recorded and compares every
    /// tensor HF recorded at 1e-4: hooks by name, HF's layer-norm outputs via hook_normalized·w + b, hidden states, logits.
    /// </summary>
    internal static void AssertEveryGoldenTensor(Model model, string name, string backend)
    {
        string folder = Fixtures.Golden(name);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        using var weights = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        var ids = golden.ReadInt64("input_ids");
        var shape = golden.Info("input_ids").Shape;
        int batch = (int)shape[0], seq = (int)shape[1];
        var result = model.Run(ids.Select(i => (int)i).ToArray(), batch, seq, new RunOptions { Hooks = HookName.AllFor(model.Spec).ToArray() });
        int L = model.Spec.NLayers, checkedCount = 0;
        bool gpt2 = model.Spec.Family == PolyEngine.Models.ModelFamily.Gpt2;
        string ln(int l, int which) => gpt2 ? $"transformer.h.{l}.ln_{which}" : $"gpt_neox.layers.{l}.{(which == 1 ? "input_layernorm" : "post_attention_layernorm")}";
        string lnFinal = gpt2 ? "transformer.ln_f" : "gpt_neox.final_layer_norm";

        foreach (var t in golden.Tensors)
        {
            float[]? actual = t.Name switch
            {
                "input_ids" => null,
                "logits" => result.Logits!.Data,
                "ln_final_out" => Affine(result.Cache["ln_final.hook_normalized"].Data, weights, lnFinal),
                _ when t.Name.StartsWith("hidden_states.") => int.Parse(t.Name["hidden_states.".Length..]) is var j && j < L
                    ? result.Cache[$"blocks.{j}.hook_resid_pre"].Data
                    : Affine(result.Cache["ln_final.hook_normalized"].Data, weights, lnFinal),
                _ when t.Name.EndsWith(".ln1_out") || t.Name.EndsWith(".ln2_out") =>
                    Affine(result.Cache[t.Name.Replace("ln1_out", "ln1.hook_normalized").Replace("ln2_out", "ln2.hook_normalized")].Data,
                        weights, ln(int.Parse(t.Name.Split('.')[1]), t.Name.EndsWith("ln1_out") ? 1 : 2)),
                _ => result.Cache[t.Name].Data,
            };
            if (actual is null) continue;
            if (HookName.TryParse(t.Name, out var hook)) Assert.Equal(t.Shape, result.Cache[hook].Shape);
            Compare.Close(golden.ReadFloat32(t.Name), actual, 1e-4, $"{name} ({backend}) {t.Name}");
            checkedCount++;
        }
        Assert.True(checkedCount >= 30, $"only {checkedCount} golden tensors were compared");
        Assert.Equal(new long[] { batch, seq, model.Spec.DVocab }, result.Logits!.Shape);
    }

    /// <summary>LayerNorm output from TransformerLens's hook_normalized: x̂·w + b with the HF weights.</summary>
    static float[] Affine(float[] normalized, SafeTensorsFile weights, string prefix)
    {
        var w = weights.ReadFloat32(prefix + ".weight");
        var b = weights.ReadFloat32(prefix + ".bias");
        var y = new float[normalized.Length];
        for (int i = 0; i < y.Length; i++) y[i] = normalized[i] * w[i % w.Length] + b[i % b.Length];
        return y;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void AttentionPatternIsExactlyZeroAboveTheDiagonal(string name)
    {
        using var model = Model.Load(Fixtures.Golden(name));
        int seq = 7;
        var ids = Enumerable.Range(0, 2 * seq).Select(i => (i * 37) % model.Spec.DVocab).ToArray();
        var r = model.Run(ids, 2, seq, new RunOptions { Hooks = [HookName.Parse("blocks.0.attn.hook_pattern")] });
        var p = r.Cache["blocks.0.attn.hook_pattern"];
        Assert.Equal(new long[] { 2, model.Spec.NHeads, seq, seq }, p.Shape);
        for (int bh = 0; bh < 2 * model.Spec.NHeads; bh++)
            for (int q = 0; q < seq; q++)
            {
                double sum = 0;
                for (int k = 0; k < seq; k++)
                {
                    float v = p.Data[(bh * seq + q) * seq + k];
                    if (k > q) Assert.Equal(0f, v);
                    sum += v;
                }
                Assert.InRange(sum, 1 - 1e-5, 1 + 1e-5);
            }
    }
}

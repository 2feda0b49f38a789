using System.Runtime.InteropServices;
using PolyEngine.Backward;
using PolyEngine.Formats;
using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Backward;

/// <summary>
/// The backward pass against HuggingFace's float64 autograd: every <c>gradfull.*</c> (and so <c>grad.*</c>) tensor of
/// both fixtures' interventions.safetensors — ∂(Σ_k hook[0, p, k])/∂e[0, t] for hook_attn_out and hook_mlp_out of layer 1,
/// p = 8 and 15, e the token embeddings — at 1e-5 × max|g| on the CPU and the emulated CUDA backend; positions after p
/// exactly 0. Plus central differences of the model's own forward for the hooks without goldens.
/// </summary>
public class GradientGoldenTests
{
    static double[] Float64(SafeTensorsFile f, string name) => MemoryMarshal.Cast<byte, double>(f.Bytes(name)).ToArray();

    public static TheoryData<string, bool> Models() => new() { { "gpt2-tiny", false }, { "neox-tiny", false }, { "gpt2-tiny", true }, { "neox-tiny", true } };

    [Theory]
    [MemberData(nameof(Models))]
    public void EveryGoldenGradientIsReproduced(string model, bool emulated)
    {
        string folder = Fixtures.Golden(model);
        using var golden = SafeTensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        using var grads = SafeTensorsFile.Open(Path.Combine(folder, "interventions.safetensors"));
        var ids = golden.ReadInt64("input_ids");
        int seq = (int)golden.Info("input_ids").Shape[1];
        var row = ids.Take(seq).Select(i => (int)i).ToArray();
        using var gpu = emulated ? IlgpuBackend.CreateEmulated() : null;
        using var m = gpu is null ? Model.Load(folder) : Model.Load(folder, gpu);
        int compared = 0;
        foreach (var t in grads.Tensors.Where(t => t.Name.StartsWith("gradfull.")))
        {
            // gradfull.hook_attn_out.L1.p15 → blocks.1.hook_attn_out at position 15
            var parts = t.Name.Split('.');
            var hook = HookName.Parse($"blocks.{parts[2][1..]}.{parts[1]}");
            int p = int.Parse(parts[3][1..]);
            var expected = Float64(grads, t.Name);
            var got = Gradient.ToEmbeddings(m, row, hook, p);
            double max = expected.Max(Math.Abs);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - got[i]) <= 1e-5 * max, $"{model}{(emulated ? " (emulated)" : "")} {t.Name}[{i / m.Spec.DModel}, {i % m.Spec.DModel}]: {got[i]} vs {expected[i]} (max |g| {max})");
            Assert.All(got.Skip((p + 1) * m.Spec.DModel), v => Assert.Equal(0f, v));   // positions after p: exactly 0
            var at = Float64(grads, "grad" + t.Name["gradfull".Length..]);
            Assert.Equal(expected.Skip(p * m.Spec.DModel).Take(m.Spec.DModel), at);   // grad.* is gradfull.*'s row p
            compared++;
        }
        Assert.Equal(4, compared);
    }

    /// <summary>Central differences of the model's own float32 forward (the objective through the token embedding of one
    /// position, moved along the computed gradient) for the hooks without goldens.</summary>
    [Theory]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_post", 5)]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_mid", 3)]
    [InlineData("neox-tiny", "blocks.1.hook_resid_post", 6)]
    [InlineData("neox-tiny", "blocks.1.hook_resid_pre", 2)]
    [InlineData("gpt2-tiny", "hook_embed", 4)]
    public void TheGradientPredictsTheForwardsChange(string model, string hookName, int p)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        int[] row = [5, 17, 300, 2, 41, 8, 77, 12];
        var hook = HookName.Parse(hookName);
        var g = Gradient.ToEmbeddings(m, row, hook, p);
        int d = m.Spec.DModel;
        Assert.All(g.Skip((p + 1) * d), v => Assert.Equal(0f, v));
        // Move the token embeddings along the gradient by ±h (an edit at hook_embed) and difference the objective.
        double norm2 = g.Sum(v => (double)v * v);
        float h = (float)(1e-3 / Math.Sqrt(norm2));   // a move of 1e-3 in the embeddings: small against the layer norms' scale
        double Objective(float sign)
        {
            var edit = new HookEdit(HookName.Parse("hook_embed")) { Add = [.. Enumerable.Range(0, row.Length * d).Select(i => sign * h * g[i])] };
            var r = m.Run([row], new RunOptions { Edits = [edit], Hooks = [hook], Logits = LogitsMode.None });
            return r.Cache[hook].Data.Skip(p * d).Take(d).Sum(v => (double)v);
        }
        double fd = (Objective(1f) - Objective(-1f)) / (2 * h);
        Assert.True(Math.Abs(fd - norm2) <= 5e-3 * norm2, $"{model} {hookName}: the objective moved {fd} along the gradient, |g|² = {norm2}");
        // A given direction: the gradient is linear in it.
        var v2 = Enumerable.Range(0, hook.WidthFor(m.Spec)).Select(i => i % 3 == 0 ? 2f : 0f).ToArray();
        var sum = Gradient.ToEmbeddings(m, row, hook, p, v2.Select(x => x / 2).ToArray());
        var twice = Gradient.ToEmbeddings(m, row, hook, p, v2);
        for (int i = 0; i < sum.Length; i++) Assert.Equal(2 * sum[i], twice[i], 4);
    }

    [Fact]
    public void BadRequestsAreOneLineErrors()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int[] row = [5, 17, 300];
        string Error(Action a) => Assert.Throws<PolyEngineException>(a).Message;
        var hook = HookName.Parse("blocks.1.hook_mlp_out");
        Assert.Contains("position 3 is outside", Error(() => Gradient.ToEmbeddings(m, row, hook, 3)));
        Assert.Contains("has 3 values", Error(() => Gradient.ToEmbeddings(m, row, hook, 1, [1, 2, 3])));
        Assert.Contains("all zeros", Error(() => Gradient.ToEmbeddings(m, row, hook, 1, new float[m.Spec.DModel])));
        Assert.Contains("not implemented yet", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("blocks.1.attn.hook_z"), 1)));
        Assert.Contains("does not exist", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("blocks.7.hook_mlp_out"), 1)));
    }
}

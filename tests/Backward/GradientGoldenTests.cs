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

    /// <summary>Central differences of the model's own float32 forward: the objective at the seed hook, with the
    /// <paramref name="toName"/> hook's value moved by ±h along the computed gradient (an edit there), for the hooks
    /// without goldens — every kind of seed the walk takes, and gradients with respect to earlier hooks.</summary>
    [Theory]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_post", 5, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_mid", 3, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.hook_resid_post", 6, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.hook_resid_pre", 2, "hook_embed")]
    [InlineData("gpt2-tiny", "hook_embed", 4, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.attn.hook_z", 5, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.attn.hook_q", 6, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.attn.hook_k", 6, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.0.attn.hook_v", 4, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.mlp.hook_pre", 5, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.mlp.hook_post", 7, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.attn.hook_rot_q", 5, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.attn.hook_q", 5, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.attn.hook_rot_k", 6, "hook_embed")]
    [InlineData("neox-tiny", "blocks.1.mlp.hook_post", 3, "hook_embed")]
    [InlineData("neox-tiny", "blocks.0.attn.hook_z", 7, "hook_embed")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_post", 5, "blocks.1.hook_resid_pre")]
    [InlineData("gpt2-tiny", "blocks.1.hook_mlp_out", 6, "blocks.1.hook_resid_mid")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_post", 4, "blocks.0.hook_attn_out")]
    [InlineData("gpt2-tiny", "blocks.1.mlp.hook_post", 4, "blocks.1.hook_attn_out")]
    [InlineData("neox-tiny", "blocks.1.hook_resid_post", 6, "blocks.0.hook_mlp_out")]
    [InlineData("neox-tiny", "blocks.1.hook_mlp_out", 6, "blocks.1.hook_resid_pre")]
    [InlineData("neox-tiny", "blocks.1.attn.hook_z", 6, "blocks.0.hook_resid_post")]
    public void TheGradientPredictsTheForwardsChange(string model, string hookName, int p, string toName)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        int[] row = [5, 17, 300, 2, 41, 8, 77, 12];
        var hook = HookName.Parse(hookName);
        var to = HookName.Parse(toName);
        var g = Gradient.Run(m, [row], [new GradientSeed(0, hook, p)], to)[0].Gradient;
        int d = m.Spec.DModel, width = hook.WidthFor(m.Spec);
        Assert.All(g.Skip((p + 1) * d), v => Assert.Equal(0f, v));
        double norm2 = g.Sum(v => (double)v * v);
        Assert.True(norm2 > 0, $"{hookName} → {toName}: the gradient is all zero");
        float h = (float)(1e-3 / Math.Sqrt(norm2));   // a move of 1e-3 at the target hook: small against the layer norms' scale
        double Objective(float sign)
        {
            var edit = new HookEdit(to) { Add = [.. Enumerable.Range(0, row.Length * d).Select(i => sign * h * g[i])] };
            var r = m.Run([row], new RunOptions { Edits = [edit], Hooks = [hook], Logits = LogitsMode.None });
            return r.Cache[hook].Data.Skip(p * width).Take(width).Sum(v => (double)v);
        }
        double fd = (Objective(1f) - Objective(-1f)) / (2 * h);
        Assert.True(Math.Abs(fd - norm2) <= 5e-3 * norm2, $"{model} {hookName} → {toName}: the objective moved {fd} along the gradient, |g|² = {norm2}");
        // A given direction: the gradient is linear in it.
        var v2 = Enumerable.Range(0, width).Select(i => i % 3 == 0 ? 2f : 0f).ToArray();
        var half = Gradient.Run(m, [row], [new GradientSeed(0, hook, p, v2.Select(x => x / 2).ToArray())], to)[0].Gradient;
        var twice = Gradient.Run(m, [row], [new GradientSeed(0, hook, p, v2)], to)[0].Gradient;
        for (int i = 0; i < half.Length; i++) Assert.Equal(2 * half[i], twice[i], 4);
    }

    /// <summary>Seeds batched together — ragged rows, several seeds per row, mixed hooks, positions and directions — give
    /// each seed's gradient and activation as when it runs alone, on the CPU and the emulated CUDA backend.</summary>
    [Theory]
    [InlineData("gpt2-tiny", false)]
    [InlineData("neox-tiny", false)]
    [InlineData("gpt2-tiny", true)]
    [InlineData("neox-tiny", true)]
    public void BatchedSeedsEqualSeparateOnes(string model, bool emulated)
    {
        using var gpu = emulated ? IlgpuBackend.CreateEmulated() : null;
        using var m = gpu is null ? Model.Load(Fixtures.Golden(model)) : Model.Load(Fixtures.Golden(model), gpu);
        int[][] rows = [[5, 17, 300, 2, 41, 8, 77, 12], [9, 4, 250], [60, 61, 62, 63, 64]];
        var v = Enumerable.Range(0, m.Spec.DModel).Select(i => MathF.Sin(i)).ToArray();
        GradientSeed[] seeds =
        [
            new(0, HookName.Parse("blocks.1.hook_mlp_out"), 6),
            new(1, HookName.Parse("blocks.1.hook_resid_post"), 2, v),
            new(0, HookName.Parse("blocks.0.hook_attn_out"), 3),
            new(2, HookName.Parse("blocks.1.attn.hook_z"), 4),
            new(0, HookName.Parse("blocks.1.mlp.hook_pre"), 7),
            new(1, HookName.Parse("hook_embed"), 1),
            new(2, HookName.Parse("blocks.1.hook_mlp_out"), 0),
        ];
        var batched = Gradient.Run(m, rows, seeds);
        for (int k = 0; k < seeds.Length; k++)
        {
            var s = seeds[k];
            var alone = Gradient.Compute(m, rows[s.Row], s.Hook, s.Position, s.Direction);
            Assert.Equal(alone.Gradient.Length, batched[k].Gradient.Length);
            Compare.Close(alone.Gradient, batched[k].Gradient, 1e-6 * Math.Max(1e-30, alone.Gradient.Max(Math.Abs)), $"seed {k} gradient", 1e-5);
            Compare.Close(alone.Activation, batched[k].Activation, 1e-5, $"seed {k} activation", 1e-5);
        }
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
        Assert.Contains("not implemented", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("blocks.1.attn.hook_pattern"), 1)));
        Assert.Contains("LM head side", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("ln_final.hook_normalized"), 1)));
        Assert.Contains("does not depend on the token embeddings", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("hook_pos_embed"), 1)));
        Assert.Contains("holds NaN", Error(() => Gradient.ToEmbeddings(m, row, hook, 1, [.. Enumerable.Repeat(float.NaN, m.Spec.DModel)])));
        Assert.Contains("comes before", Error(() => Gradient.Run(m, [row], [new GradientSeed(0, HookName.Parse("blocks.0.hook_mlp_out"), 1)], HookName.Parse("blocks.1.hook_resid_pre"))));
        Assert.Contains("with respect to hook_embed or", Error(() => Gradient.Run(m, [row], [new GradientSeed(0, hook, 1)], HookName.Parse("blocks.1.attn.hook_z"))));
        Assert.Contains("seed 1: row 4 is outside", Error(() => Gradient.Run(m, [row], [new GradientSeed(0, hook, 1), new GradientSeed(4, hook, 1)])));
        Assert.Contains("does not exist", Error(() => Gradient.ToEmbeddings(m, row, HookName.Parse("blocks.7.hook_mlp_out"), 1)));
    }
}

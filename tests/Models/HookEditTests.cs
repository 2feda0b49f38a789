using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Kernels.Reference;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// In-place hook edits (<see cref="HookEdit"/>) change what flows downstream exactly as the model's structure says:
/// patching a run's residual with another run's gives the other run's logits; adding a vector at points that are the
/// same in the network (GPT-2: attn_out ≡ resid_mid; Pythia's parallel block: attn_out ≡ mlp_out ≡ resid_post;
/// resid_post(l) ≡ resid_pre(l+1)) gives the same logits; edits from position p leave earlier positions alone.
/// Checked on the golden fixtures' models, whose unedited runs match HF.
/// </summary>
public class HookEditTests
{
    static readonly int[] IdsA = [11, 250, 37, 4, 999, 73, 8], IdsB = [500, 2, 61, 300, 17, 44, 5];

    static float[] Vector(int d, ulong seed, float scale = 1f) => new Rng(seed).Normals([d], scale);

    static float[] Logits(Model m, int[] ids, params HookEdit[] edits) =>
        m.Run([ids], new RunOptions { Edits = edits }).Logits!.Data;

    [Theory]
    [InlineData("gpt2-tiny", "blocks.0.hook_resid_post")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_mid")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_pre")]
    [InlineData("neox-tiny", "blocks.0.hook_resid_post")]
    [InlineData("neox-tiny", "blocks.1.hook_resid_post")]
    public void PatchingTheResidualGivesTheOtherRunsLogits(string model, string hook)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var h = HookName.Parse(hook);
        var b = m.Run([IdsB], new RunOptions { Hooks = [h] });
        var patched = Logits(m, IdsA, HookEdit.Patch(h, b.Cache[h].Data));
        Compare.Close(b.Logits!.Data, patched, 1e-5, $"{model}: A with B's {hook}");
        Assert.False(Logits(m, IdsA).AsSpan().SequenceEqual(patched), "the patch must change A's logits");
    }

    [Theory]
    [InlineData("gpt2-tiny", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid")]
    [InlineData("gpt2-tiny", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post")]
    [InlineData("gpt2-tiny", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre")]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out")]
    [InlineData("neox-tiny", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out")]
    [InlineData("neox-tiny", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post")]
    [InlineData("neox-tiny", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre")]
    public void AddingAVectorAtEquivalentPointsGivesTheSameLogits(string model, string first, string second)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var v = Vector(m.Spec.DModel, 3, 2f);
        var a = Logits(m, IdsA, HookEdit.AddVector(HookName.Parse(first), v, 1.5f));
        var c = Logits(m, IdsA, HookEdit.AddVector(HookName.Parse(second), v, 1.5f));
        Compare.Close(a, c, 1e-5, $"{model}: +v at {first} vs at {second}");
        Compare.Close(Logits(m, IdsA), Logits(m, IdsA, new HookEdit(HookName.Parse(first)) { Mul = Enumerable.Repeat(1f, m.Spec.DModel).ToArray() }),
            1e-5, "an identity edit changes nothing (the fused norm recomputed)");
        Assert.True(a.Zip(Logits(m, IdsA)).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "the vector must move the logits");
    }

    /// <summary>Edits from position p leave positions before p as they were (attention is causal), in every row.</summary>
    [Fact]
    public void EditsFromAPositionLeaveEarlierPositionsAlone()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int vocab = m.Spec.DVocab, seq = IdsA.Length;
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var edit = HookEdit.AddVector(hook, Vector(m.Spec.DModel, 4), 3f) with { From = [4, 2] };
        var plain = m.Run([IdsA, IdsB]).Logits!.Data;
        var edited = m.Run([IdsA, IdsB], new RunOptions { Edits = [edit], Hooks = [hook] });
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < seq; t++)
            {
                var p = plain.AsSpan((r * seq + t) * vocab, vocab);
                var e = edited.Logits!.Data.AsSpan((r * seq + t) * vocab, vocab);
                Assert.True(t < edit.From[r] ? p.SequenceEqual(e) : !p.SequenceEqual(e), $"row {r} position {t}");
            }
    }

    /// <summary>Per batch row edits: row b of a batch edited with v_b equals a one-row run edited with v_b.</summary>
    [Fact]
    public void EachBatchRowGetsItsOwnEdit()
    {
        using var m = Model.Load(Fixtures.Golden("neox-tiny"));
        int d = m.Spec.DModel, vocab = m.Spec.DVocab, seq = IdsA.Length;
        var hook = HookName.Parse("blocks.1.hook_attn_out");
        var (v0, v1) = (Vector(d, 7), Vector(d, 8));
        var batched = m.Run([IdsA, IdsA], new RunOptions { Edits = [new HookEdit(hook) { Add = [.. v0, .. v1] }] }).Logits!.Data;
        Compare.Close(Logits(m, IdsA, new HookEdit(hook) { Add = v0 }), batched.AsSpan(0, seq * vocab), 1e-5, "row 0");
        Compare.Close(Logits(m, IdsA, new HookEdit(hook) { Add = v1 }), batched.AsSpan(seq * vocab, seq * vocab), 1e-5, "row 1");
    }

    /// <summary>A neuron edit scales one coordinate of mlp.hook_post: the tap shows it, and mlp_out moves linearly in the factor.</summary>
    [Fact]
    public void ScalingANeuronActsLinearlyDownstream()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        var post = HookName.Parse("blocks.0.mlp.hook_post");
        var outHook = HookName.Parse("blocks.0.hook_mlp_out");
        int dMlp = m.Spec.DMlp;
        RunResult With(float factor) => m.Run([IdsA], new RunOptions { Hooks = [post, outHook], Edits = [HookEdit.ScaleCoordinate(post, dMlp, 5, factor)] });
        var (r1, r2, r3) = (With(1f), With(2f), With(3f));
        var (p1, p2) = (r1.Cache[post].Data, r2.Cache[post].Data);
        for (int i = 0; i < p1.Length; i++) Assert.Equal(i % dMlp == 5 ? 2 * p1[i] : p1[i], p2[i]);
        var (o1, o2, o3) = (r1.Cache[outHook].Data, r2.Cache[outHook].Data, r3.Cache[outHook].Data);
        Compare.Close(o2.Zip(o1, (x, y) => x - y).ToArray(), o3.Zip(o2, (x, y) => x - y).ToArray(), 1e-5, "equal steps in the factor, equal steps in mlp_out");
        Assert.Contains(o2.Zip(o1, (x, y) => Math.Abs(x - y)), x => x > 1e-4);
        var set = m.Run([IdsA], new RunOptions { Hooks = [post], Edits = [HookEdit.SetCoordinate(post, dMlp, 7, -2.5f)] }).Cache[post].Data;
        for (int i = 7; i < set.Length; i += dMlp) Assert.Equal(-2.5f, set[i]);
    }

    /// <summary>Edits run on the emulated CUDA backend as on the CPU.</summary>
    [Fact]
    public void EditsMatchOnTheEmulatedCudaBackend()
    {
        using var gpu = PolyEngine.Kernels.Cuda.IlgpuBackend.CreateEmulated();
        using var cpuModel = Model.Load(Fixtures.Golden("neox-tiny"));
        using var gpuModel = Model.Load(Fixtures.Golden("neox-tiny"), gpu);
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var b = cpuModel.Run([IdsB], new RunOptions { Hooks = [hook] }).Cache[hook].Data;
        var edits = new[] { HookEdit.Patch(hook, b) with { From = [3] }, HookEdit.ScaleCoordinate(HookName.Parse("blocks.1.mlp.hook_post"), cpuModel.Spec.DMlp, 2, 0f) };
        var options = new RunOptions { Edits = edits, TopLogits = 4 };
        var c = cpuModel.Run([IdsA], options);
        var g = gpuModel.Run([IdsA], options);
        Compare.Close(c.Logits!.Data, g.Logits!.Data, 1e-4, "edited logits, emulated vs cpu");
        Assert.Equal(c.Top!.Ids, g.Top!.Ids);
        Compare.Close(c.Top.LogSumExp, g.Top.LogSumExp, 1e-4, "log-sum-exp, emulated vs cpu");
    }

    public static TheoryData<string, string> BadEdits() => new()
    {
        { "blocks.0.attn.hook_pattern", "cannot be edited" },
        { "blocks.0.ln1.hook_normalized", "cannot be edited" },
        { "blocks.0.hook_resid_mid", "does not exist in this GPTNeoXForCausalLM model" },
        { "blocks.0.hook_resid_post:5", "Add has 5 values; give [64], [batch 1, 64] or [batch 1, pos 7, 64]" },
        { "blocks.0.hook_resid_post:from", "From must give one first position in 0..7 per batch row (1)" },
    };

    [Theory]
    [MemberData(nameof(BadEdits))]
    public void BadEditsAreRejectedClearly(string spec, string expected)
    {
        using var m = Model.Load(Fixtures.Golden("neox-tiny"));
        var parts = spec.Split(':');
        var edit = new HookEdit(HookName.Parse(parts[0])) { Add = new float[parts.Length > 1 && parts[1] == "5" ? 5 : 64] };
        if (parts.Length > 1 && parts[1] == "from") edit = edit with { From = [9] };
        Assert.Contains(expected, Assert.Throws<PolyEngineException>(() => m.Run([IdsA], new RunOptions { Edits = [edit] })).Message);
    }

    /// <summary>The next-token reduction equals the full softmax over the logits the pass returns.</summary>
    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void TopLogitsEqualTheFullSoftmax(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        int vocab = m.Spec.DVocab, seq = IdsA.Length;
        var r = m.Run([IdsA, IdsB], new RunOptions { TopLogits = 5, Logits = LogitsMode.LastPosition });
        var expected = ReductionReference.TopLogits(r.Logits!.Data, 2, vocab, 5);
        Assert.Equal(expected.Ids, r.Top!.Ids);
        Compare.Close(expected.Logits, r.Top.Logits, 1e-6, "top logits");
        Compare.Close(expected.LogSumExp, r.Top.LogSumExp, 1e-5, "log-sum-exp");
        var all = m.Run([IdsA, IdsB], new RunOptions { TopLogits = 5 });   // with every position's logits too: the same last-position top
        Assert.Equal(r.Top.Ids, all.Top!.Ids);
        Assert.Equal(vocab * seq * 2, all.Logits!.Data.Length);
        Assert.Null(m.Run([IdsA], new RunOptions { TopLogits = 3, Logits = LogitsMode.None }).Logits);
    }
}

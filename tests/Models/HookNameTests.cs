using PolyEngine.Models;
using Xunit;

namespace PolyEngine.Tests.Models;

public class HookNameTests
{
    [Fact]
    public void FullOrderedHookListPerFamily()
    {
        using var gpt2 = Model.Load(Fixtures.Golden("gpt2-tiny"));
        var g = HookName.AllFor(gpt2.Spec).Select(h => h.ToString()).ToList();
        string[] block(int l, bool rot, bool mid) =>
        [
            $"blocks.{l}.hook_resid_pre", $"blocks.{l}.ln1.hook_scale", $"blocks.{l}.ln1.hook_normalized",
            $"blocks.{l}.attn.hook_q", $"blocks.{l}.attn.hook_k", $"blocks.{l}.attn.hook_v",
            .. rot ? new[] { $"blocks.{l}.attn.hook_rot_q", $"blocks.{l}.attn.hook_rot_k" } : [],
            $"blocks.{l}.attn.hook_pattern", $"blocks.{l}.attn.hook_z", $"blocks.{l}.hook_attn_out",
            .. mid ? new[] { $"blocks.{l}.hook_resid_mid" } : [],
            $"blocks.{l}.ln2.hook_scale", $"blocks.{l}.ln2.hook_normalized", $"blocks.{l}.mlp.hook_pre", $"blocks.{l}.mlp.hook_post",
            $"blocks.{l}.hook_mlp_out", $"blocks.{l}.hook_resid_post",
        ];
        Assert.Equal(["hook_embed", "hook_pos_embed", .. block(0, false, true), .. block(1, false, true), "ln_final.hook_scale", "ln_final.hook_normalized"], g);
        using var neox = Model.Load(Fixtures.Golden("neox-tiny"));
        var n = HookName.AllFor(neox.Spec).Select(h => h.ToString()).ToList();
        Assert.Equal(["hook_embed", .. block(0, true, false), .. block(1, true, false), "ln_final.hook_scale", "ln_final.hook_normalized"], n);
        // Sequential NeoX has resid_mid.
        Assert.Contains(HookName.Parse("blocks.0.hook_resid_mid"), HookName.AllFor(neox.Spec with { ParallelResidual = false }));
    }

    [Fact]
    public void ParseFormatRoundTripAndRejects()
    {
        foreach (var p in Enum.GetValues<HookPoint>())
        {
            var h = new HookName(p, 3);
            var text = h.ToString();
            Assert.True(HookName.TryParse(text, out var back));
            Assert.Equal(h.IsBlock ? h : new HookName(p), back);
        }
        foreach (var bad in new[] { "", "blocks.x.hook_resid_pre", "blocks.1.hook_nothing", "hook_embedx", "blocks.-1.hook_resid_pre" })
            Assert.False(HookName.TryParse(bad, out _), bad);
    }

    [Fact]
    public void SelectionSupportsWildcardsAllAndNamesValidHooksOnError()
    {
        var spec = ModelSpec.FromConfigFile(Path.Combine(Fixtures.Golden("neox-tiny"), "config.json"));
        Assert.Equal(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], HookName.Select(spec, "blocks.*.hook_resid_post").Select(h => h.ToString()));
        Assert.Equal(HookName.AllFor(spec).Count, HookName.Select(spec, "all").Count);
        Assert.Equal(3, HookName.Select(spec, "hook_embed, blocks.1.attn.*_q, blocks.1.attn.hook_q").Count);   // hook_q + hook_rot_q, deduplicated
        Assert.Empty(HookName.Select(spec, null));
        var e = Assert.Throws<PolyEngineException>(() => HookName.Select(spec, "blocks.0.hook_resid_mid"));
        Assert.Contains("matches no hook", e.Message);
        Assert.Contains("blocks.{L}.hook_resid_post", e.Message);
        Assert.Contains("L = 0..1", e.Message);
    }
}

using PolyEngine.Backward;
using PolyEngine.Models;
using PolyEngine.Tests.Models;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Backward;

/// <summary>
/// The backward pass at full width through 10 layers — generated models of GPT-2-small's and Pythia-70m's widths (d_model
/// 768, 12 heads, d_mlp 3072; d_model 512, 8 heads, d_mlp 2048, rotary_pct 0.25, parallel residual) — against the float64
/// <see cref="ReferenceForward"/>: the directional derivative of ⟨hook[p], v⟩ along directions u of the token embeddings,
/// by central differences of the float64 forward (h = 1e-6, so truncation and round-off are both far below 1e-7 of it),
/// against ⟨g, u⟩ from the engine's float32 gradient g. Directions: g itself, a Gaussian over every position, and a
/// Gaussian at position p only. The objective sits at the last block's output, so every op of every block is on the path
/// (attn_out and mlp_out objectives are checked against HF's own autograd in <see cref="GradientGoldenTests"/>).
/// </summary>
public class GradientDeepTests
{
    public static TheoryData<string, ToyConfig, string> Shapes => new()
    {
        { "gpt2-small widths", new ToyConfig { Family = ModelFamily.Gpt2, DModel = 768, NLayers = 10, NHeads = 12, DMlp = 3072, DVocab = 64, NCtx = 32 }, "blocks.9.hook_resid_post" },
        { "pythia-70m widths", new ToyConfig { Family = ModelFamily.GptNeoX, DModel = 512, NLayers = 10, NHeads = 8, DMlp = 2048, DVocab = 64, NCtx = 32 }, "blocks.9.hook_resid_post" },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void TenLayersAgreeWithTheFloat64Reference(string what, ToyConfig config, string hookName)
    {
        using var dir = new Fixtures.TempDir();
        ToyModels.Write(config, 11, dir.Path);
        using var m = Model.Load(dir.Path);
        const int seq = 10, p = 8;
        var rng = new Rng(5);
        var ids = Enumerable.Range(0, seq).Select(_ => (int)(rng.NextU64() % (ulong)config.DVocab)).ToArray();
        var hook = HookName.Parse(hookName);
        int d = config.DModel;
        var g = Gradient.ToEmbeddings(m, ids, hook, p);

        double Objective(double[] delta) => ReferenceForward.Run(dir.Path, ids, 1, seq, delta).Hooks[hookName].Skip(p * d).Take(d).Sum();
        double Along(double[] u)
        {
            const double h = 1e-6;
            return (Objective([.. u.Select(x => h * x)]) - Objective([.. u.Select(x => -h * x)])) / (2 * h);
        }
        double gNorm = Math.Sqrt(g.Sum(x => (double)x * x));
        var directions = new List<(string Name, double[] U)>
        {
            ("along g", [.. g.Select(x => x / gNorm)]),
            ("Gaussian, every position", [.. rng.Normals([seq * d], 1f).Select(x => x / Math.Sqrt(seq * d))]),
            ("Gaussian at p", [.. rng.Normals([seq * d], 1f).Select((x, i) => i / d == p ? x / Math.Sqrt(d) : 0)]),
        };
        foreach (var (name, u) in directions)
        {
            double fd = Along(u), dot = 0;
            for (int i = 0; i < u.Length; i++) dot += g[i] * u[i];
            // u has norm ≈ 1, so |⟨g, u⟩ − fd| ≤ tol·‖g‖ is the 1e-5 relative gradient criterion along u.
            Assert.True(Math.Abs(dot - fd) <= 1e-5 * gNorm, $"{what} {hookName}, {name}: ⟨g, u⟩ = {dot:G9}, float64 central difference {fd:G9}, ‖g‖ = {gNorm:G6}");
        }
    }
}

using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// A windowed resume (<see cref="Model.Resume(ForwardState, RunOptions?, int, KvPrefix?)"/> with a <see cref="KvPrefix"/>)
/// runs only positions [p, seq) and reads the clean K/V of the earlier positions: for edits from p on it equals the full
/// edited pass at those positions bit for bit on the CPU — at every hook point it can start from, in both families (rotary
/// from the window's position), over ragged rows fanned out to copies with one edit per row. Misuse is a one-line error.
/// </summary>
public class WindowedResumeTests
{
    static readonly int[][] Rows = [[5, 17, 300, 2, 41, 8, 77], [9, 12, 3, 4, 5], [700, 3, 3, 61, 1, 2, 3]];

    static HookPoint KeyPoint(Model m) => m.Spec.RotaryDim > 0 ? HookPoint.AttnRotK : HookPoint.AttnK;

    /// <summary>The clean pass's K and V of every layer, on the model's backend.</summary>
    static KvPrefix CleanKv(Model m, int[][] rows, int p)
    {
        var hooks = Enumerable.Range(0, m.Spec.NLayers).SelectMany(l => new[] { new HookName(KeyPoint(m), l), new HookName(HookPoint.AttnV, l) }).ToArray();
        var clean = m.Run(rows, new RunOptions { Hooks = hooks });
        return new KvPrefix(p,
            Enumerable.Range(0, m.Spec.NLayers).Select(l => m.Backend.Upload(clean.Cache[new HookName(KeyPoint(m), l)].Data)).ToArray(),
            Enumerable.Range(0, m.Spec.NLayers).Select(l => m.Backend.Upload(clean.Cache[new HookName(HookPoint.AttnV, l)].Data)).ToArray());
    }

    static bool InsideAttention(HookName h) =>
        h.Point is HookPoint.AttnQ or HookPoint.AttnK or HookPoint.AttnV or HookPoint.AttnRotQ or HookPoint.AttnRotK or HookPoint.AttnPattern;

    /// <summary>Positions [p, seq) of x [batch, seq, width].</summary>
    static float[] Window(float[] x, int batch, int seq, int p)
    {
        int width = x.Length / (batch * seq);
        return Enumerable.Range(0, batch).SelectMany(b => x.AsSpan((b * seq + p) * width, (seq - p) * width).ToArray()).ToArray();
    }

    [Theory]
    [InlineData("gpt2-tiny", 3)]
    [InlineData("neox-tiny", 3)]
    [InlineData("neox-tiny", 4)]   // the shortest row's last token
    public void AWindowedResumeEqualsTheFullEditedPassFromItsFirstPosition(string model, int p)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        int copies = 2, batch = Rows.Length, seq = Rows.Max(r => r.Length);
        var prefix = CleanKv(m, Rows, p);
        var rng = new Random(p);
        foreach (var at in HookName.AllFor(m.Spec).Where(h => !InsideAttention(h)))
        {
            bool editable = at.Point is not (HookPoint.Ln1Scale or HookPoint.Ln1Normalized or HookPoint.Ln2Scale or HookPoint.Ln2Normalized
                or HookPoint.LnFinalScale or HookPoint.LnFinalNormalized);
            int width = at.WidthFor(m.Spec);
            // One edit per fanned-out row, from position p on: in the full pass From = p, in the window From = 0 (its first position).
            var add = Enumerable.Range(0, copies * batch * width).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
            var hooks = HookName.AllFor(m.Spec).Where(h => h.CompareTo(at) >= 0 && h.Point != HookPoint.AttnPattern).ToArray();
            var full = m.Run([.. Rows, .. Rows], new RunOptions
            {
                Hooks = hooks,
                Edits = editable ? [new HookEdit(at) { Add = add, From = Enumerable.Repeat(p, copies * batch).ToArray() }] : [],
            });
            using var state = m.Run(Rows, new RunOptions { StopAt = at }).State!;
            var windowed = m.Resume(state, new RunOptions { Hooks = hooks, Edits = editable ? [new HookEdit(at) { Add = add }] : [] }, copies, prefix);
            Assert.Equal(seq - p, windowed.Seq);
            Assert.Equal(full.Lengths.Select(n => n - p), windowed.Lengths);
            Assert.True(Window(full.Logits!.Data, copies * batch, seq, p).AsSpan().SequenceEqual(windowed.Logits!.Data), $"{model} from {p} at {at}: logits differ");
            foreach (var h in hooks)
                Assert.True(Window(full.Cache[h].Data, copies * batch, seq, p).AsSpan().SequenceEqual(windowed.Cache[h].Data), $"{model} from {p} at {at}: {h} differs");
        }
        // The window's edit took effect: without it the logits differ.
        var resid = new HookName(HookPoint.ResidPre, 1);
        using var s = m.Run(Rows, new RunOptions { StopAt = resid }).State!;
        var plain = m.Resume(s, new RunOptions(), copies, prefix);
        var steered = m.Resume(s, new RunOptions { Edits = [HookEdit.AddVector(resid, Enumerable.Repeat(1f, m.Spec.DModel).ToArray(), 3f)] }, copies, prefix);
        Assert.NotEqual(plain.Logits!.Data, steered.Logits!.Data);
    }

    [Fact]
    public void MisuseOfAWindowIsAOneLineErrorThatSaysWhatToDo()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        string Error(Action a) => Assert.Throws<PolyEngineException>(a).Message;
        var prefix = CleanKv(m, Rows, 3);
        using var state = m.Run(Rows, new RunOptions { StopAt = HookName.Parse("blocks.1.hook_resid_pre") }).State!;
        Assert.Contains("outside 0..6", Error(() => m.Resume(state, prefix: prefix with { Positions = 7 })));
        Assert.Contains("row 1 has 5 tokens", Error(() => m.Resume(state, prefix: prefix with { Positions = 5 })));
        Assert.Contains("no K for layer 1", Error(() => m.Resume(state, prefix: prefix with { K = [prefix.K[0]] })));
        Assert.Contains("the state's rows need", Error(() => m.Resume(state, prefix: prefix with { V = [prefix.V[0], m.Backend.Allocate(4)] })));
        Assert.Contains("not recorded in a windowed resume", Error(() => m.Resume(state, new RunOptions { Hooks = [HookName.Parse("blocks.1.attn.hook_pattern")] }, prefix: prefix)));
        Assert.Contains("KeepForBackward", Error(() => m.Resume(state, new RunOptions { KeepForBackward = true }, prefix: prefix)));
        using var inside = m.Run(Rows, new RunOptions { StopAt = HookName.Parse("blocks.1.attn.hook_v") }).State!;
        Assert.Contains("cannot start inside attention", Error(() => m.Resume(inside, prefix: prefix)));
        Assert.Single(Error(() => m.Resume(inside, prefix: prefix)).Split('\n'));
        // Only the layers the resumed pass attends in are needed: from layer 1 on here.
        Assert.NotNull(m.Resume(state, prefix: prefix with { K = [null, prefix.K[1]], V = [null, prefix.V[1]] }).Logits);
        // A window from position 0 is the plain resume.
        Assert.Equal(m.Resume(state).Logits!.Data, m.Resume(state, prefix: prefix with { Positions = 0 }).Logits!.Data);
    }

    [Fact]
    public void TheEmulatedCudaBackendRunsAWindowAsItRunsThePass()
    {
        using var gpu = IlgpuBackend.CreateEmulated();
        using var m = Model.Load(Fixtures.Golden("neox-tiny"), gpu);
        int p = 3, batch = Rows.Length, seq = Rows.Max(r => r.Length);
        var prefix = CleanKv(m, Rows, p);
        var at = HookName.Parse("blocks.1.hook_resid_pre");
        var add = Enumerable.Range(0, 2 * batch * m.Spec.DModel).Select(i => (i % 7 - 3) * 0.1f).ToArray();
        foreach (var attention in Enum.GetValues<AttentionVariant>())
        {
            gpu.AttentionKind = attention;
            var full = m.Run([.. Rows, .. Rows], new RunOptions { Edits = [new HookEdit(at) { Add = add, From = Enumerable.Repeat(p, 2 * batch).ToArray() }] });
            using var state = m.Run(Rows, new RunOptions { StopAt = at }).State!;
            var windowed = m.Resume(state, new RunOptions { Edits = [new HookEdit(at) { Add = add }] }, copies: 2, prefix);
            Assert.True(Window(full.Logits!.Data, 2 * batch, seq, p).AsSpan().SequenceEqual(windowed.Logits!.Data), $"windowed on the emulated device ({attention})");
        }
    }
}

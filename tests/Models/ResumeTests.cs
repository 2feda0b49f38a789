using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// A pass stopped at a hook point (<see cref="RunOptions.StopAt"/>) and resumed there (<see cref="Model.Resume"/>) — for the
/// same rows or fanned out to several — equals the full pass bit for bit on the CPU: at every hook point of both families,
/// with edits before the stop, at the resume point and after it, over ragged rows, and stopped twice. What a state keeps
/// (K/V, the backward pass's tensors) equals what a full pass records; every misuse is a one-line error.
/// </summary>
public class ResumeTests
{
    static readonly int[] Ids = [5, 17, 300, 2, 41, 8, 77];

    static int[] Repeat(int[] rows, int copies) => Enumerable.Range(0, copies).SelectMany(_ => rows).ToArray();

    /// <summary>The hooks at or after <paramref name="at"/>.</summary>
    static HookName[] From(Model m, HookName at) => HookName.AllFor(m.Spec).Where(h => h.CompareTo(at) >= 0).ToArray();

    static void Same(RunResult full, RunResult resumed, IEnumerable<HookName> hooks, string where)
    {
        Assert.True(full.Logits!.Data.AsSpan().SequenceEqual(resumed.Logits!.Data), $"{where}: logits differ");
        foreach (var h in hooks)
            Assert.True(full.Cache[h].Data.AsSpan().SequenceEqual(resumed.Cache[h].Data), $"{where}: {h} differs");
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void AResumedPassEqualsTheFullPassAtEveryHookPoint(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var all = HookName.AllFor(m.Spec);
        var full = m.Run(Repeat(Ids, 3), 3, Ids.Length, new RunOptions { Hooks = all.ToArray() });
        var plain = m.Run(Repeat(Ids, 3), 3, Ids.Length);
        Assert.Equal(plain.Logits!.Data, full.Logits!.Data);   // recording every hook changes nothing
        var other = Repeat(Ids.Reverse().ToArray(), 3);
        foreach (var at in all)
        {
            using var state = m.Run([Ids], new RunOptions { StopAt = at, Hooks = [at] }).State!;
            Assert.Equal(at, state.At);
            m.Run(other, 3, Ids.Length, new RunOptions { Hooks = all.ToArray() });   // the resumed shape's workspace now holds other values
            var resumed = m.Resume(state, new RunOptions { Hooks = From(m, at) }, copies: 3);
            Assert.Equal(3, resumed.Batch);
            Assert.Equal(Repeat(Ids, 3), resumed.InputIds);
            Same(full, resumed, From(m, at), $"resumed at {at}");
            // The state's own value of the stop hook is the first row of the full pass's.
            var value = state.Read(at).Data;
            Assert.True(full.Cache[at].Data.AsSpan(0, value.Length).SequenceEqual(value), $"{at}: the stopped value differs");
            // Resumed for the same rows (no fan-out) too.
            var once = m.Resume(state, new RunOptions());
            Assert.True(plain.Logits.Data.AsSpan(0, once.Logits!.Data.Length).SequenceEqual(once.Logits.Data), $"{at}: copies = 1 differs");
        }
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void EditsBeforeAtAndAfterTheResumePointActAsInTheFullPass(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var spec = m.Spec;
        var rng = new Rng(7);
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        int[][] rows = [Ids, [.. Ids.Skip(2), 9, 4]];   // two prompts fanned out to 3 copies each: batch rows r0 r1 r0 r1 r0 r1
        var flat = Enumerable.Range(0, 3).SelectMany(_ => rows.SelectMany(r => r)).ToArray();
        var editable = HookName.AllFor(spec).Where(h => h.Point is not (HookPoint.AttnPattern or HookPoint.Ln1Scale or HookPoint.Ln1Normalized
            or HookPoint.Ln2Scale or HookPoint.Ln2Normalized or HookPoint.LnFinalScale or HookPoint.LnFinalNormalized)).ToList();
        foreach (var at in editable)
        {
            // Before the stop: the same edit for every row. At the resume point: a vector per batch row, from position 2 in
            // rows 1 and 4. After it: a scale per batch row.
            var before = editable.Where(h => h.CompareTo(at) < 0).Select(h => new HookEdit(h) { Add = Values(h.WidthFor(spec)) }).LastOrDefault();
            var atEdit = new HookEdit(at) { Add = Values(6 * at.WidthFor(spec)), From = [0, 2, 0, 0, 2, 0] };
            var later = editable.Where(h => h.CompareTo(at) > 0).Select(h => new HookEdit(h) { Mul = Values(6 * h.WidthFor(spec)) }).FirstOrDefault();
            HookEdit[] edits = later is null ? [atEdit] : [atEdit, later];
            var hooks = From(m, at);
            var full = m.Run(flat, 6, Ids.Length, new RunOptions { Hooks = hooks, Edits = before is null ? edits : [before, .. edits] });
            using var state = m.Run(rows, new RunOptions { StopAt = at, Edits = before is null ? [] : [before] }).State!;
            var resumed = m.Resume(state, new RunOptions { Hooks = hooks, Edits = edits }, copies: 3);
            Assert.Equal(flat, resumed.InputIds);
            Same(full, resumed, hooks, $"edited at {at}");
        }
    }

    [Fact]
    public void AResumedPassTakesTheRunOptionsOfAnyPass()
    {
        using var m = Model.Load(Fixtures.Golden("neox-tiny"));
        var at = HookName.Parse("blocks.0.hook_attn_out");
        var three = Repeat(Ids, 3);
        using var state = m.Run([Ids], new RunOptions { StopAt = at, KeepForBackward = true }).State!;
        // Kept for backward up to the stop: layer 0's ln1, q, k, v and pattern; nothing of ln2 or later.
        Assert.Equal(new[] { "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_v", "blocks.0.attn.hook_rot_q",
            "blocks.0.attn.hook_rot_k", "blocks.0.attn.hook_pattern" }.Select(HookName.Parse).Order(), state.Kept);

        // A stop layer, and the last position's logits without top-k.
        var hook = HookName.Parse("blocks.1.hook_mlp_out");
        var fullStop = m.Run(three, 3, Ids.Length, new RunOptions { Hooks = [hook], StopAtLayer = 1 });
        var stop = m.Resume(state, new RunOptions { Hooks = [hook], StopAtLayer = 1 }, copies: 3);
        Assert.Null(stop.Logits);
        Assert.Equal(fullStop.Cache[hook].Data, stop.Cache[hook].Data);
        var fullLast = m.Run(three, 3, Ids.Length, new RunOptions { Logits = LogitsMode.LastPosition });
        Assert.Equal(fullLast.Logits!.Data, m.Resume(state, new RunOptions { Logits = LogitsMode.LastPosition }, copies: 3).Logits!.Data);

        // A device tap and a replacement at the resume point see and change the fanned-out rows.
        var b = m.Backend;
        long n = 3L * Ids.Length * m.Spec.DModel;
        var seen = new float[n];
        var options = new RunOptions
        {
            DeviceTaps = [new DeviceTap(at, buf => b.Download(buf, seen))],
            Replacements = [new HookReplacement(at, (buf, batch, seq) => b.Rows.Add(buf, buf, buf, (long)batch * seq * m.Spec.DModel))],
        };
        var full = m.Run(three, 3, Ids.Length, options with { Hooks = [at] });
        var seenFull = (float[])seen.Clone();
        var resumed = m.Resume(state, options with { Hooks = [at] }, copies: 3);
        Assert.Equal(seenFull, seen);
        Assert.Equal(full.Cache[at].Data, resumed.Cache[at].Data);
        Assert.Equal(full.Logits!.Data, resumed.Logits!.Data);
        Assert.NotEqual(m.Run(three, 3, Ids.Length).Logits!.Data, resumed.Logits.Data);   // the doubling took effect
    }

    [Fact]
    public void RaggedRowsResumeAsTheyRunAndAPassStopsTwice()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        int[][] rows = [[5, 17, 300, 2, 41, 8], [9, 12], [700, 3, 3, 61]];
        var first = HookName.Parse("blocks.0.attn.hook_z");
        var second = HookName.Parse("blocks.1.hook_resid_mid");
        var hooks = From(m, first);
        var full = m.Run([.. rows, .. rows], new RunOptions { Hooks = hooks, TopLogits = 3 });
        using var a = m.Run(rows, new RunOptions { StopAt = first }).State!;
        var middle = m.Resume(a, new RunOptions { StopAt = second, Hooks = hooks.Where(h => h.CompareTo(second) <= 0).ToArray() }, copies: 2);
        Assert.Null(middle.Logits);
        using var b = middle.State!;
        Assert.Equal([6, 2, 4, 6, 2, 4], b.Lengths);
        var resumed = m.Resume(b, new RunOptions { Hooks = hooks.Where(h => h.CompareTo(second) >= 0).ToArray(), TopLogits = 3 });
        Assert.Equal(full.Lengths, resumed.Lengths);
        Assert.Equal(full.Logits!.Data, resumed.Logits!.Data);   // padding zeroed in both
        foreach (var h in hooks)
            Assert.Equal(full.Cache[h].Data, (h.CompareTo(second) < 0 ? middle : resumed).Cache[h].Data);
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 3; j++) Assert.Equal(full.Top!.At(r, j), resumed.Top!.At(r, j));
        Assert.True(b.Read(second).Data.AsSpan((2 * 6 - 4) * m.Spec.DModel, 4 * m.Spec.DModel).ToArray().All(v => v == 0f), "padding reads zero");
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void AStoppedStateKeepsTheKAndVOfTheLayersThatRan(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        bool rotary = m.Spec.RotaryDim > 0;
        var k = rotary ? HookPoint.AttnRotK : HookPoint.AttnK;
        var at = new HookName(HookPoint.MlpOut, 1);
        var edit = new HookEdit(new HookName(HookPoint.AttnV, 0)) { Mul = Enumerable.Repeat(0.5f, m.Spec.DModel).ToArray() };
        var full = m.Run([Ids], new RunOptions { Hooks = HookName.AllFor(m.Spec).ToArray(), Edits = [edit] });
        using var state = m.Run([Ids], new RunOptions { StopAt = at, Edits = [edit] }).State!;
        HookName[] expected = [new(k, 0), new(HookPoint.AttnV, 0), new(k, 1), new(HookPoint.AttnV, 1)];
        Assert.Equal(expected.Order(), state.Kept);
        foreach (var h in expected) Assert.Equal(full.Cache[h].Data, state.Read(h).Data);   // as attention used them: V after its edit
        using var without = m.Run([Ids], new RunOptions { StopAt = at, KeepKv = false }).State!;
        Assert.Empty(without.Kept);
        Assert.True(without.Bytes < state.Bytes);
        var e = Assert.Throws<PolyEngineException>(() => without.Read(new(HookPoint.AttnV, 0)));
        Assert.Contains("is not held by this forward state", e.Message);
        Assert.Contains(at.ToString(), e.Message);
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void KeepForBackwardHoldsWhatTheBackwardPassReadsAsThePassUsedIt(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var spec = m.Spec;
        var edits = new[]
        {
            new HookEdit(HookName.Parse("blocks.0.hook_resid_post")) { Add = Enumerable.Repeat(0.25f, spec.DModel).ToArray() },
            new HookEdit(HookName.Parse("blocks.1.mlp.hook_pre")) { Mul = Enumerable.Repeat(2f, spec.DMlp).ToArray() },
        };
        int[][] rows = [Ids, [3, 4, 5]];
        var full = m.Run(rows, new RunOptions { Hooks = HookName.AllFor(spec).ToArray(), Edits = edits });
        var kept = m.Run(rows, new RunOptions { KeepForBackward = true, Edits = edits });
        Assert.Equal(full.Logits!.Data, kept.Logits!.Data);
        using var state = kept.State!;
        Assert.Null(state.At);
        var q = spec.RotaryDim > 0 ? HookPoint.AttnRotQ : HookPoint.AttnQ;
        var k = spec.RotaryDim > 0 ? HookPoint.AttnRotK : HookPoint.AttnK;
        var perLayer = new[] { HookPoint.Ln1Scale, HookPoint.Ln1Normalized, q, k, HookPoint.AttnV, HookPoint.AttnPattern, HookPoint.Ln2Scale, HookPoint.Ln2Normalized, HookPoint.MlpPre };
        var expected = Enumerable.Range(0, spec.NLayers).SelectMany(l => perLayer.Select(p => new HookName(p, l)))
            .Append(new(HookPoint.LnFinalScale)).Append(new(HookPoint.LnFinalNormalized)).Order().ToList();
        Assert.Equal(expected, state.Kept);
        foreach (var h in expected) Assert.Equal(full.Cache[h].Data, state.Read(h).Data);   // mlp.hook_pre after its edit
        var e = Assert.Throws<PolyEngineException>(() => m.Resume(state));
        Assert.Contains("ran to its end", e.Message);
        Assert.Null(m.Run(rows).State);
    }

    [Fact]
    public void MisuseIsAOneLineErrorThatSaysWhatToDo()
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        using var other = Model.Load(Fixtures.Golden("gpt2-tiny"));
        var at = HookName.Parse("blocks.1.hook_resid_pre");
        var d = m.Spec.DModel;
        string Error(Action a) => Assert.Throws<PolyEngineException>(a).Message;

        Assert.Contains("belong to the pass that resumes there", Error(() => m.Run([Ids], new RunOptions { StopAt = at, Edits = [new HookEdit(at) { Add = new float[d] }] })));
        Assert.Contains("lies after the stop hook", Error(() => m.Run([Ids], new RunOptions { StopAt = at, Hooks = [HookName.Parse("blocks.1.hook_resid_post")] })));
        Assert.Contains("not both", Error(() => m.Run([Ids], new RunOptions { StopAt = at, StopAtLayer = 1 })));
        Assert.Contains("does not exist", Error(() => m.Run([Ids], new RunOptions { StopAt = HookName.Parse("blocks.9.hook_resid_pre") })));
        Assert.Contains("LM head", Error(() => m.Run([Ids], new RunOptions { StopAt = at, TopLogits = 2 })));

        var state = m.Run([Ids], new RunOptions { StopAt = at }).State!;
        Assert.Contains("lies before the resume point", Error(() => m.Resume(state, new RunOptions { Hooks = [HookName.Parse("blocks.0.hook_resid_post")] })));
        Assert.Contains("lies before the resume point", Error(() => m.Resume(state, new RunOptions { Edits = [new HookEdit(HookName.Parse("hook_embed")) { Add = new float[d] }] })));
        Assert.Contains("does not lie after the resume point", Error(() => m.Resume(state, new RunOptions { StopAt = at })));
        Assert.Contains("lies before the resume point", Error(() => m.Resume(state, new RunOptions { StopAtLayer = 0 })));
        Assert.Contains("another model", Error(() => other.Resume(state)));
        Assert.Contains("copies must be at least 1", Error(() => m.Resume(state, copies: 0)));
        Assert.Contains("chunks of at most", Error(() => m.Resume(state, copies: int.MaxValue / 2)));
        Assert.Contains("[batch 4,", Error(() => m.Resume(state, new RunOptions { Edits = [new HookEdit(at) { Add = new float[3 * d] }] }, copies: 4)));
        Assert.Contains("PrependBos", Error(() => m.Resume(state, new RunOptions { PrependBos = true })));
        state.Dispose();
        Assert.Contains("was disposed", Error(() => m.Resume(state)));
    }

    [Fact]
    public void TheEmulatedCudaBackendResumesAsItRuns()
    {
        using var gpu = IlgpuBackend.CreateEmulated();
        using var m = Model.Load(Fixtures.Golden("neox-tiny"), gpu);
        int[][] rows = [Ids, [3, 4, 5]];
        var edit = new HookEdit(HookName.Parse("blocks.1.hook_resid_pre")) { Add = Enumerable.Range(0, m.Spec.DModel).Select(i => (i % 5 - 2) * 0.2f).ToArray() };
        var hook = HookName.Parse("blocks.1.mlp.hook_post");
        foreach (var attention in Enum.GetValues<AttentionVariant>())
        {
            gpu.AttentionKind = attention;
            var full = m.Run([.. rows, .. rows], new RunOptions { Edits = [edit], Hooks = [hook] });
            string[] points = attention == AttentionVariant.Fused ? ["hook_embed", "blocks.1.ln2.hook_normalized"] : ["blocks.0.attn.hook_rot_k"];
            foreach (var at in points.Select(HookName.Parse))
            {
                // The edit goes to the pass it lies in: the resumed one when it resumes at or before it, else the stopping one.
                bool inResumed = at.CompareTo(edit.Hook) <= 0;
                using var state = m.Run(rows, new RunOptions { StopAt = at, Edits = inResumed ? [] : [edit] }).State!;
                var resumed = m.Resume(state, new RunOptions { Edits = inResumed ? [edit] : [], Hooks = [hook] }, copies: 2);
                Assert.True(full.Logits!.Data.AsSpan().SequenceEqual(resumed.Logits!.Data), $"resumed at {at} on the emulated device ({attention})");
                Assert.True(full.Cache[hook].Data.AsSpan().SequenceEqual(resumed.Cache[hook].Data), $"{hook} resumed at {at} ({attention})");
            }
        }
    }
}

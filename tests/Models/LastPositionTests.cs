using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Models;

/// <summary>
/// When only the LM head at the last position reads the last layer, the pass runs that layer's attention output and MLP on
/// each row's last position alone (after its keys and values of every position): the last-position logits, top-k and
/// device-side logits equal the full pass's last row bit for bit on the CPU, in both families, for a plain run, a resumed
/// one and a windowed one; a hook in the last layer, ragged rows or full logits keep the whole layer.
/// </summary>
public class LastPositionTests
{
    static readonly int[][] Rows = [[5, 17, 300, 2, 41, 8, 77], [9, 12, 3, 4, 5, 6, 7]];

    /// <summary>The last position's row of logits [batch, seq, vocab].</summary>
    static float[] LastRows(Tensor logits, int[] lengths)
    {
        int seq = (int)logits.Shape[1], vocab = (int)logits.Shape[2];
        return lengths.SelectMany((n, b) => logits.Data.AsSpan((b * seq + n - 1) * vocab, vocab).ToArray()).ToArray();
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void TheLastPositionLogitsEqualTheFullPassesLastRow(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var full = m.Run(Rows);
        var expected = LastRows(full.Logits!, full.Lengths);
        var last = m.Run(Rows, new RunOptions { Logits = LogitsMode.LastPosition, TopLogits = 4 });
        Assert.Equal([2, 1, m.Spec.DVocab], last.Logits!.Shape);
        Assert.True(expected.AsSpan().SequenceEqual(last.Logits.Data), $"{model}: last-position logits differ");
        for (int r = 0; r < 2; r++)
        {
            var row = expected.AsSpan(r * m.Spec.DVocab, m.Spec.DVocab).ToArray();
            Assert.Equal(Enumerable.Range(0, row.Length).MaxBy(t => row[t]), last.Top!.At(r, 0).Id);
        }
        // On the device: the LastLogits tap sees the same rows.
        float[]? tapped = null;
        m.Run(Rows, new RunOptions { Logits = LogitsMode.None, LastLogits = x => { tapped = new float[x.Length]; m.Backend.Download(x, tapped); } });
        Assert.Equal(expected, tapped);
        // A hook in the last layer after its attention keeps every position; the logits are the same.
        var lastLayer = m.Spec.NLayers - 1;
        var hooked = m.Run(Rows, new RunOptions { Logits = LogitsMode.LastPosition, Hooks = [new HookName(HookPoint.MlpOut, lastLayer)] });
        Assert.Equal(expected, hooked.Logits!.Data);
        Assert.Equal(7, hooked.Cache[new HookName(HookPoint.MlpOut, lastLayer)].Shape[1]);
        // Ragged rows run every position of every row; each row's own last token.
        int[][] ragged = [Rows[0], [9, 12, 3]];
        var raggedFull = m.Run(ragged);
        Assert.Equal(LastRows(raggedFull.Logits!, raggedFull.Lengths), m.Run(ragged, new RunOptions { Logits = LogitsMode.LastPosition }).Logits!.Data);
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("neox-tiny")]
    public void ResumedAndWindowedPassesKeepTheLastPositionAlikeInTheLastLayer(string model)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var at = new HookName(HookPoint.ResidPre, m.Spec.NLayers - 1);   // resume right before the last layer
        var edit = new HookEdit(at) { Add = Enumerable.Range(0, 3 * 2 * m.Spec.DModel).Select(i => (i % 11 - 5) * 0.05f).ToArray(), From = [4, 4, 4, 4, 4, 4] };
        var full = m.Run([.. Rows, .. Rows, .. Rows], new RunOptions { Edits = [edit] });
        var expected = LastRows(full.Logits!, full.Lengths);
        using var state = m.Run(Rows, new RunOptions { StopAt = at }).State!;
        var resumed = m.Resume(state, new RunOptions { Edits = [edit], Logits = LogitsMode.LastPosition }, copies: 3);
        Assert.True(expected.AsSpan().SequenceEqual(resumed.Logits!.Data), $"{model}: resumed last-position logits differ");
        var kHook = m.Spec.RotaryDim > 0 ? HookPoint.AttnRotK : HookPoint.AttnK;
        var clean = m.Run(Rows, new RunOptions { Hooks = [new HookName(kHook, m.Spec.NLayers - 1), new HookName(HookPoint.AttnV, m.Spec.NLayers - 1)] });
        var prefix = new KvPrefix(4, Enumerable.Range(0, m.Spec.NLayers).Select(l => l == m.Spec.NLayers - 1 ? m.Backend.Upload(clean.Cache[new HookName(kHook, l)].Data) : null).ToArray(),
            Enumerable.Range(0, m.Spec.NLayers).Select(l => l == m.Spec.NLayers - 1 ? m.Backend.Upload(clean.Cache[new HookName(HookPoint.AttnV, l)].Data) : null).ToArray());
        var windowed = m.Resume(state, new RunOptions { Edits = [edit with { From = null }], Logits = LogitsMode.LastPosition }, copies: 3, prefix);
        Assert.True(expected.AsSpan().SequenceEqual(windowed.Logits!.Data), $"{model}: windowed last-position logits differ");
    }

    [Fact]
    public void TheEmulatedCudaBackendKeepsTheLastPositionAsTheCpuDoes()
    {
        using var gpu = IlgpuBackend.CreateEmulated();
        using var m = Model.Load(Fixtures.Golden("neox-tiny"), gpu);
        foreach (var attention in Enum.GetValues<AttentionVariant>())
        {
            gpu.AttentionKind = attention;
            var full = m.Run(Rows);
            var last = m.Run(Rows, new RunOptions { Logits = LogitsMode.LastPosition });
            Assert.True(LastRows(full.Logits!, full.Lengths).AsSpan().SequenceEqual(last.Logits!.Data), $"emulated ({attention}): last-position logits differ");
        }
    }
}

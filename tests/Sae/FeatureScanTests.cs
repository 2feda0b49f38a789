using PolyEngine.Formats;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Sae;

public class FeatureScanTests
{
    /// <summary>Firing counts, sums, maxima and the top-k contexts equal a brute-force pass over each window alone, for two
    /// SAEs at different hooks sharing one forward pass.</summary>
    [Fact]
    public void StatisticsAndTopContextsEqualBruteForce()
    {
        using var dir = new Fixtures.TempDir();
        string model = dir.File("model");
        ToyModels.Write(new ToyConfig { Family = ModelFamily.GptNeoX, DModel = 32, NLayers = 2, NHeads = 2, DMlp = 64, DVocab = 89, NCtx = 32, InitStd = 0.2f }, 12, model);
        ToySae.Write(dir.File("sae0"), HookName.Parse("blocks.0.hook_resid_post"), 32, 20, SaeArchitecture.JumpRelu, 6, contextSize: 6);
        ToySae.Write(dir.File("sae1"), HookName.Parse("blocks.1.mlp.hook_post"), 64, 16, SaeArchitecture.TopK, 7, k: 3, contextSize: 6);
        var rng = new Rng(8);
        var tokens = Enumerable.Range(0, 23).Select(_ => (int)(rng.NextU64() % 89)).ToArray();
        File.WriteAllBytes(dir.File("c.u32"), tokens.SelectMany(t => BitConverter.GetBytes((uint)t)).ToArray());

        using var m = Model.Load(model, new CpuBackend(1));
        var saes = new[] { SparseAutoencoder.Load(dir.File("sae0"), m.Backend), SparseAutoencoder.Load(dir.File("sae1"), m.Backend) };
        var (stats, n, windows, _) = FeatureScan.Run(m, saes, Corpus.Open(dir.File("c.u32"), null), new FeatureScanOptions { TopK = 2, Batch = 2 });
        Assert.Equal((23L, 4L), (n, windows));

        for (int i = 0; i < 2; i++)
        {
            var sae = saes[i];
            int f = sae.Config.DSae;
            var fires = new long[f]; var sums = new double[f]; var max = new float[f];
            var windowMax = new List<(float Act, long Window)>[f];
            for (int j = 0; j < f; j++) windowMax[j] = [];
            for (int w = 0, start = 0; start < tokens.Length; start += 6, w++)
            {
                var win = tokens.Skip(start).Take(6).ToArray();
                var r = m.Run([win], new RunOptions { Hooks = [sae.Config.Hook], Logits = LogitsMode.None, StopAtLayer = 1 });
                var acts = sae.Encode(r.Cache[sae.Config.Hook].Data, win.Length).FeatureActs;
                for (int j = 0; j < f; j++)
                {
                    float wm = 0;
                    for (int t = 0; t < win.Length; t++)
                    {
                        float a = acts[t * f + j];
                        if (a > 0) { fires[j]++; sums[j] += a; max[j] = Math.Max(max[j], a); }
                        wm = Math.Max(wm, a);
                    }
                    if (wm > 0) windowMax[j].Add((wm, w));
                }
            }
            Assert.Equal(fires, stats[i].FireCounts);
            Compare.Close(sums.Select(x => (float)x).ToArray(), stats[i].ActivationSums.Select(x => (float)x).ToArray(), 1e-4, $"sae{i} sums");
            Compare.Close(max, stats[i].MaxActivations, 1e-5, $"sae{i} max");
            for (int j = 0; j < f; j++)
            {
                var expected = windowMax[j].OrderByDescending(x => x.Act).ThenBy(x => x.Window).Take(2).Select(x => x.Window).ToArray();
                var got = stats[i].TopContexts(j);
                Assert.Equal(expected, got.Select(c => c.Window).ToArray());
                foreach (var c in got)
                {
                    Assert.Equal(c.Activation, c.TokenActivations[c.Position]);
                    Assert.Equal(c.Activation, c.TokenActivations.Max());
                    Assert.Equal(tokens.Skip((int)c.Window * 6).Take(6), c.Tokens);
                    Assert.Equal((0L, c.Window * 6), (c.Document, c.Offset));   // one document; each window's first token
                }
            }
        }
        Assert.True(stats[1].FireCounts.Sum() > 0 && stats[0].FireCounts.Sum() > 0);

        // Killed at the third batch and resumed from its checkpoint: the same statistics and contexts.
        var checkpoint = new ScanCheckpoint { Path = dir.File(ScanCheckpoint.FileName), RunKey = "f", Every = TimeSpan.Zero };
        int calls = 0;
        Assert.Throws<OperationCanceledException>(() => FeatureScan.Run(m, saes, Corpus.Open(dir.File("c.u32"), null), new FeatureScanOptions { TopK = 2, Batch = 1 },
            progress: _ => { if (++calls == 3) throw new OperationCanceledException(); }, checkpoint: checkpoint));
        long resumedAt = -1;
        var (again, n2, _, _) = FeatureScan.Run(m, saes, Corpus.Open(dir.File("c.u32"), null), new FeatureScanOptions { TopK = 2, Batch = 1 }, checkpoint: checkpoint, resumed: w => resumedAt = w);
        Assert.Equal((3L, 23L), (resumedAt, n2));   // the third batch was saved before its progress report "killed" the run
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(stats[i].FireCounts, again[i].FireCounts);
            Assert.Equal(stats[i].ActivationSums, again[i].ActivationSums);
            Assert.Equal(stats[i].MaxActivations, again[i].MaxActivations);
            Assert.Equal(stats[i].Tokens, again[i].Tokens);
            for (int j = 0; j < saes[i].Config.DSae; j++)
                Assert.Equal(stats[i].TopContexts(j).Select(c => (c.Window, c.Position, c.Activation, string.Join(",", c.Tokens), string.Join(",", c.TokenActivations), c.Document, c.Offset)),
                    again[i].TopContexts(j).Select(c => (c.Window, c.Position, c.Activation, string.Join(",", c.Tokens), string.Join(",", c.TokenActivations), c.Document, c.Offset)));
        }
        foreach (var s in saes) s.Dispose();
    }
}

using PolyEngine.Formats;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;
using PolyEngine.Scans;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Sae;

public class CoactivationTests
{
    [Fact]
    public void TriangleIndexCoversEveryPairOnce()
    {
        foreach (int f in new[] { 2, 3, 7, 64 })
        {
            var seen = new HashSet<long>();
            for (int a = 0; a < f; a++)
                for (int b = a + 1; b < f; b++)
                    Assert.True(seen.Add(CoactivationCounter.Index(a, b, f)));
            Assert.Equal(CoactivationCounter.PairCount(f), seen.Count);
            Assert.Equal(CoactivationCounter.PairCount(f) - 1, seen.Max());
        }
        Assert.Equal(4L * 24576 * 24575 / 2 + 20 * 24576, CoactivationCounter.BytesFor(24576));
    }

    /// <summary>Real SAE widths (49k, 65k, 131k features) have more pairs than one .NET array holds: the triangle is
    /// laid out in chunks of whole rows, none past the chunk limit, together exactly the triangle (checked without
    /// allocating the gigabytes).</summary>
    [Theory]
    [InlineData(49152)]
    [InlineData(65537)]
    [InlineData(131072)]
    public void WideTrianglesSplitIntoChunksOfWholeRows(int f)
    {
        var rowChunk = new int[f];
        var rowBase = new long[f];
        var sizes = CoactivationCounter.Layout(f, CoactivationCounter.ChunkElements, rowChunk, rowBase);
        Assert.Equal(CoactivationCounter.PairCount(f), sizes.Sum());
        Assert.All(sizes, n => Assert.InRange(n, 1, Math.Min(CoactivationCounter.ChunkElements, Array.MaxLength)));
        long[] starts = [0, .. sizes.Take(sizes.Count - 1)];
        for (int i = 1; i < starts.Length; i++) starts[i] += starts[i - 1];
        foreach (int a in new[] { 0, 1, f / 3, f / 2, f - 3, f - 2 })   // the global index of pair (a, b) is chunk start + base + b
            foreach (int b in new[] { a + 1, (a + f) / 2, f - 1 })
                Assert.Equal(CoactivationCounter.Index(a, b, f), starts[rowChunk[a]] + rowBase[a] + b);
    }

    /// <summary>A counter in small chunks counts, adds, saves and restores exactly as one in a single chunk.</summary>
    [Fact]
    public void ChunkedCountersAgreeWithOneChunk()
    {
        var rng = new Rng(5);
        const int f = 29;
        var one = new CoactivationCounter(f, long.MaxValue);
        var chunked = new CoactivationCounter(f, 11);
        var other = new CoactivationCounter(f, 40);
        Assert.True(chunked.PairChunks.Count > 5);
        for (int u = 0; u < 200; u++)
        {
            var unit = Enumerable.Range(0, f).Where(_ => rng.NextU64() % 3 == 0).ToArray();
            one.AddUnit(unit);
            chunked.AddUnit(unit);
            if (u % 2 == 0) other.AddUnit(unit);
        }
        Assert.Single(one.PairChunks);
        Assert.Equal(one.Triangle(), chunked.Triangle());
        for (int a = 0; a < f; a++)
            for (int b = 0; b < f; b++) Assert.Equal(one.Count(a, b), chunked.Count(a, b));
        chunked.Add(other);
        one.Add(other);
        Assert.Equal(one.Triangle(), chunked.Triangle());
        // Saved through pieces and read back through windows: the same triangle, whatever the chunks.
        using var dir = new Fixtures.TempDir();
        new SafeTensorsWriter().Add("p", chunked.PairChunks, CoactivationCounter.PairCount(f)).Save(dir.File("t.safetensors"));
        using var file = SafeTensorsFile.Open(dir.File("t.safetensors"));
        var restored = new CoactivationCounter(f, 7);
        restored.Restore((first, dst) => file.CopyU32("p", first, dst), one.Marginals.ToArray(), one.Units);
        Assert.Equal(one.Triangle(), restored.Triangle());
        Assert.Equal(one.Triangle(), Enumerable.Range(0, (int)CoactivationCounter.PairCount(f)).Select(i => file.U32At(file.Info("p"), i)));
    }

    /// <summary>The top-N partner table: every pair that is among one of its features' N most co-occurring partners (ties:
    /// the lower id), once, a &lt; b — equal to a brute-force selection, with many tied counts.</summary>
    [Fact]
    public void TopPartnerRowsEqualBruteForce()
    {
        var rng = new Rng(12);
        const int f = 23;
        var counter = new CoactivationCounter(f);
        for (int u = 0; u < 60; u++)
            counter.AddUnit(Enumerable.Range(0, f).Where(_ => rng.NextU64() % 4 == 0).ToArray());
        foreach (int n in new[] { 1, 3, 30 })
        {
            var expected = new SortedSet<(int, int)>();
            for (int a = 0; a < f; a++)
                foreach (int b in Enumerable.Range(0, f).Where(b => b != a && counter.Count(a, b) > 0)
                             .OrderByDescending(b => counter.Count(a, b)).ThenBy(b => b).Take(n))
                    expected.Add((Math.Min(a, b), Math.Max(a, b)));
            var rows = PolyEngine.Output.CoactivationWriter.Rows("s", counter, n);
            Assert.Equal(expected, rows.Select(r => (r.FeatureA, r.FeatureB)));
            Assert.All(rows, r => Assert.Equal(counter.Count(r.FeatureA, r.FeatureB), (uint)r.CountAB));
        }
    }

    [Fact]
    public void MetricsMatchHandComputedCases()
    {
        // 10 units, a fires in 4, b in 5, both in 2: Jaccard 2/7, lift 2·10/(4·5) = 1, PMI 0.
        var s = PairStats.Of(1, 2, 4, 5, 2, 10);
        Assert.Equal(2.0 / 7, s.Jaccard, 12);
        Assert.Equal(1.0, s.Lift, 12);
        Assert.Equal(0.0, s.Pmi, 12);
        // always together: Jaccard 1, lift N/a
        var t = PairStats.Of(0, 3, 3, 3, 3, 12);
        Assert.Equal((1.0, 4.0, Math.Log(4)), (t.Jaccard, t.Lift, t.Pmi));
    }

    /// <summary>The scan's counts equal a brute-force count over dense activation matrices, for every window mode.</summary>
    [Theory]
    [InlineData("token", 0f)]
    [InlineData("3", 0f)]
    [InlineData("document", 0.05f)]
    public void CountsEqualBruteForce(string window, float threshold)
    {
        using var dir = new Fixtures.TempDir();
        string model = Path.Combine(dir.Path, "model"), saeDir = Path.Combine(dir.Path, "sae");
        ToyModels.Write(new ToyConfig { Family = ModelFamily.Gpt2, DModel = 32, NLayers = 2, NHeads = 2, DMlp = 64, DVocab = 97, NCtx = 32, InitStd = 0.2f }, 11, model);
        ToySae.Write(saeDir, HookName.Parse("blocks.0.hook_resid_post"), 32, 24, SaeArchitecture.Standard, 5, contextSize: 7);
        // Two documents as uint16 token files, 17 and 9 tokens: windows of 7 with a ragged tail.
        var rng = new Rng(3);
        string corpusDir = Path.Combine(dir.Path, "corpus");
        Directory.CreateDirectory(corpusDir);
        var docs = new[] { 17, 9 }.Select(n => Enumerable.Range(0, n).Select(_ => (int)(rng.NextU64() % 97)).ToArray()).ToArray();
        for (int d = 0; d < docs.Length; d++)
            File.WriteAllBytes(Path.Combine(corpusDir, $"doc{d}.bin"), docs[d].SelectMany(t => BitConverter.GetBytes((ushort)t)).ToArray());

        using var m = Model.Load(model, new CpuBackend(1));
        using var sae = SparseAutoencoder.Load(saeDir, m.Backend);
        var opts = new CoactivationOptions { Window = CoactivationWindow.Parse(window), Threshold = threshold, Batch = 3 };
        var result = CoactivationScan.Run(m, [sae], Corpus.Open(corpusDir, null), opts);
        var counter = result.Counters[0].Counter;
        Assert.Equal(26, result.Tokens);

        // Brute force: each 7-token window on its own, dense activations, units by hand.
        var units = new List<bool[]>();
        foreach (var doc in docs)
        {
            var docUnit = new bool[24];
            for (int start = 0; start < doc.Length; start += 7)
            {
                var w = doc.Skip(start).Take(7).ToArray();
                var r = m.Run([w], new RunOptions { Hooks = [sae.Config.Hook], StopAtLayer = 0, Logits = LogitsMode.None });
                var acts = sae.Encode(r.Cache[sae.Config.Hook].Data, w.Length).FeatureActs;
                int n = opts.Window.Document ? w.Length : opts.Window.Tokens;
                for (int t0 = 0; t0 < w.Length; t0 += n)
                {
                    var unit = new bool[24];
                    for (int t = t0; t < Math.Min(w.Length, t0 + n); t++)
                        for (int j = 0; j < 24; j++) if (acts[t * 24 + j] > threshold) { unit[j] = true; docUnit[j] = true; }
                    if (!opts.Window.Document) units.Add(unit);
                }
            }
            if (opts.Window.Document) units.Add(docUnit);
        }
        Assert.Equal((ulong)units.Count, counter.Units);
        for (int a = 0; a < 24; a++)
        {
            Assert.Equal((ulong)units.Count(u => u[a]), counter.Marginals[a]);
            for (int b = a + 1; b < 24; b++) Assert.Equal((uint)units.Count(u => u[a] && u[b]), counter.Count(a, b));
        }
        Assert.True(counter.Triangle().Any(c => c > 0), "the toy SAE should co-activate something");
    }

    [Theory]
    [InlineData("token")]
    [InlineData("document")]
    public void AKilledScanResumesToIdenticalCounts(string window)
    {
        using var dir = new Fixtures.TempDir();
        string model = dir.File("model"), saeDir = dir.File("sae");
        ToyModels.Write(new ToyConfig { Family = ModelFamily.Gpt2, DModel = 32, NLayers = 1, NHeads = 2, DMlp = 64, DVocab = 97, NCtx = 32, InitStd = 0.2f }, 4, model);
        ToySae.Write(saeDir, HookName.Parse("blocks.0.hook_resid_post"), 32, 30, SaeArchitecture.TopK, 9, k: 4, contextSize: 5);
        var rng = new Rng(2);
        for (int d = 0; d < 3; d++)   // three documents of 31 tokens: windows of 5 with ragged tails, documents spanning batches
            File.WriteAllBytes(dir.File($"doc{d}.u32"), Enumerable.Range(0, 31).SelectMany(_ => BitConverter.GetBytes((uint)(rng.NextU64() % 97))).ToArray());
        using var m = Model.Load(model, new CpuBackend(1));
        using var sae = SparseAutoencoder.Load(saeDir, m.Backend);
        var opts = new CoactivationOptions { Window = CoactivationWindow.Parse(window), Batch = 2 };
        var corpus = Corpus.Open(dir.Path, null);
        var whole = CoactivationScan.Run(m, [sae], corpus, opts).Counters[0].Counter;

        var checkpoint = new ScanCheckpoint { Path = dir.File(ScanCheckpoint.FileName), RunKey = "k1", Every = TimeSpan.Zero };
        int batches = 0;
        Assert.Throws<OperationCanceledException>(() => CoactivationScan.Run(m, [sae], corpus, opts,
            _ => { if (++batches == 7) throw new OperationCanceledException("killed"); }, checkpoint));
        Assert.True(File.Exists(checkpoint.Path));
        long resumedAt = -1;
        var resumed = CoactivationScan.Run(m, [sae], corpus, opts, null, checkpoint, w => resumedAt = w);
        Assert.InRange(resumedAt, 7, 20);   // the 6 batches before the kill (ragged 1-token windows run alone) of 21 windows
        var c = resumed.Counters[0].Counter;
        Assert.Equal(whole.Units, c.Units);
        Assert.Equal(whole.Marginals.ToArray(), c.Marginals.ToArray());
        Assert.Equal(whole.Triangle(), c.Triangle());
        Assert.Equal(93, resumed.Tokens);
        // A checkpoint of another run is ignored.
        var other = new ScanCheckpoint { Path = checkpoint.Path, RunKey = "k2" };
        long ignored = -1;
        CoactivationScan.Run(m, [sae], corpus, opts, null, other, w => ignored = w);
        Assert.Equal(-1, ignored);
    }

    [Fact]
    public void CounterRefusesToOverflowAndMergesExactly()
    {
        var a = new CoactivationCounter(4);
        var b = new CoactivationCounter(4);
        a.AddUnit([0, 2, 3]);
        b.AddUnit([2, 3]);
        b.AddUnit([]);
        a.Add(b);
        Assert.Equal((3UL, 2u, 1u, 0u), (a.Units, a.Count(2, 3), a.Count(0, 3), a.Count(0, 1)));
        Assert.Equal(2UL, a.Marginals[2]);
        Assert.Throws<ArgumentException>(() => a.Add(new CoactivationCounter(5)));
    }

    [Fact]
    public void WindowsDoNotDependOnHowADocumentIsSplitIntoPieces()
    {
        var rng = new Rng(1);
        var docs = new[] { 23, 5, 40 }.Select(n => Enumerable.Range(0, n).Select(_ => (int)(rng.NextU64() % 1000)).ToArray()).ToArray();
        var whole = docs.Select((d, i) => new CorpusPiece(d, i, 0, 0)).ToList();
        foreach (int pieceSize in new[] { 1, 3, 7, 8, 100 })
        {
            var pieces = docs.SelectMany((d, i) => d.Chunk(pieceSize).Select(c => new CorpusPiece(c, i, 0, 0))).ToList();
            foreach (int? bos in new int?[] { null, 999 })
            {
                var expected = Corpus.Windows(whole, 8, bos).ToList();
                var actual = Corpus.Windows(pieces, 8, bos).ToList();
                Assert.Equal(expected.Select(w => w.Document), actual.Select(w => w.Document));
                Assert.Equal(expected.Select(w => w.Offset), actual.Select(w => w.Offset));
                Assert.Equal(expected.Select(w => string.Join(",", w.Tokens)), actual.Select(w => string.Join(",", w.Tokens)));
            }
        }
        // 23 tokens in windows of 8: 8 + 8 + 7; with BOS, bodies of 7: 7 + 7 + 7 + 2.
        Assert.Equal([8, 8, 7], Corpus.Windows([new CorpusPiece(docs[0], 0, 0, 0)], 8, null).Select(w => w.Tokens.Length));
        Assert.Equal([8, 8, 8, 3], Corpus.Windows([new CorpusPiece(docs[0], 0, 0, 0)], 8, 999).Select(w => w.Tokens.Length));
    }

    [Fact]
    public void CorpusFormatsAndBadInput()
    {
        using var dir = new Fixtures.TempDir();
        var ids = new[] { 5, 0, 65535, 7 };
        File.WriteAllBytes(dir.File("raw.bin"), ids.SelectMany(t => BitConverter.GetBytes((ushort)t)).ToArray());
        Assert.Equal(ids, Corpus.ReadTokens(dir.File("raw.bin")));
        var llmc = new byte[1024 + 8];
        BitConverter.GetBytes(20240520).CopyTo(llmc, 0); BitConverter.GetBytes(1).CopyTo(llmc, 4); BitConverter.GetBytes(4).CopyTo(llmc, 8);
        ids.SelectMany(t => BitConverter.GetBytes((ushort)t)).ToArray().CopyTo(llmc, 1024);
        File.WriteAllBytes(dir.File("llmc.bin"), llmc);
        Assert.Equal(ids, Corpus.ReadTokens(dir.File("llmc.bin")));
        File.WriteAllBytes(dir.File("short.bin"), llmc[..1030]);
        Assert.Contains("truncated", Assert.Throws<PolyEngineException>(() => Corpus.ReadTokens(dir.File("short.bin"))).Message);
        var npyHeader = "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }";
        npyHeader = npyHeader.PadRight(118) + "\n";
        var npy = new byte[] { 0x93 }.Concat("NUMPY"u8.ToArray()).Concat(new byte[] { 1, 0, (byte)npyHeader.Length, 0 })
            .Concat(System.Text.Encoding.ASCII.GetBytes(npyHeader)).Concat(ids.SelectMany(BitConverter.GetBytes)).ToArray();
        File.WriteAllBytes(dir.File("t.npy"), npy);
        Assert.Equal(ids, Corpus.ReadTokens(dir.File("t.npy")));
        File.WriteAllText(dir.File("c.jsonl"), "{\"text\": \"Hello world\"}\n\n{\"text\": \"The dog\"}\n");
        var docs = Corpus.Open(dir.File("c.jsonl"), () => PolyEngine.Tokenization.ModelTokenizer.Gpt2()).Documents().ToList();
        Assert.Equal([[15496, 995], [464, 3290]], docs);
        File.WriteAllText(dir.File("bad.jsonl"), "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
        Assert.Contains("bad.jsonl:2", Assert.Throws<PolyEngineException>(() => Corpus.Open(dir.File("bad.jsonl"), () => PolyEngine.Tokenization.ModelTokenizer.Gpt2()).Documents().ToList()).Message);
        File.WriteAllText(dir.File("empty.jsonl"), "\n");
        Assert.Contains("empty corpus", Assert.Throws<PolyEngineException>(() => Corpus.Open(dir.File("empty.jsonl"), () => PolyEngine.Tokenization.ModelTokenizer.Gpt2()).Documents().ToList()).Message);
        File.WriteAllText(dir.File("x.csv"), "a");
        Assert.Contains("unknown corpus format", Assert.Throws<PolyEngineException>(() => Corpus.Open(dir.File("x.csv"), null)).Message);
        var windows = Corpus.Open(dir.File("raw.bin"), null).Windows(3, 50256).Select(w => w.Tokens).ToList();
        Assert.Equal([[50256, 5, 0], [50256, 65535, 7]], windows);
    }
}

static class CounterExtensions
{
    /// <summary>The whole triangle as one array (small counters in tests).</summary>
    public static uint[] Triangle(this CoactivationCounter c) => c.PairChunks.SelectMany(x => x).ToArray();
}

using System.Text.Json.Nodes;
using PolyEngine.Benchmarks;
using PolyEngine.Formats;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Toys;
using Xunit;

namespace PolyEngine.Tests.Scans;

/// <summary>
/// The interference scan against a brute-force reference: every pair's cosine, its bin, its semantic mask, every
/// feature's partner lists sorted by hand. On "lattice" data (unit rows with 64 entries of ±1/8, embeddings with 16
/// entries of ±1/4) every dot product is exact in float32, so the tiled scan and the reference must agree bit for bit —
/// histograms included.
/// </summary>
public class InterferenceTests
{
    static readonly float[] Taus = [0.4f, 0.3f, 0.2f, 0.15f];

    /// <summary>[n, dim] rows with <paramref name="nonzeros"/> entries of ±1/√nonzeros (exact: a power of two), the rest 0.</summary>
    internal static float[] Lattice(int n, int dim, int nonzeros, ulong seed)
    {
        var rng = new Rng(seed);
        float v = 1f / MathF.Sqrt(nonzeros);
        var x = new float[n * dim];
        for (int a = 0; a < n; a++)
        {
            var cols = Enumerable.Range(0, dim).OrderBy(_ => rng.NextU64()).Take(nonzeros);
            foreach (int c in cols) x[a * dim + c] = (rng.NextU64() & 1) == 0 ? v : -v;
        }
        return x;
    }

    /// <summary>Unit rows drawn from a Gaussian (float cosines, not exact): the benchmark's decoder.</summary>
    internal static float[] Gaussian(int n, int dim, ulong seed) => InterferenceBenchmark.Decoder(n, dim, seed);

    sealed class Reference
    {
        public long[] Fine = new long[InterferenceBins.FineCount], Bins = new long[5];
        public long[] Unrelated = new long[Taus.Length * 5];
        public long[] SimilarityFine = new long[InterferenceBins.FineCount], SimilarityBelow = new long[Taus.Length];
        public List<(int Partner, float Cos)>[,,] Lists;   // [τ, a, bin]
        public (int, int)[] TopPairs = [];
        public float[,] Cos;

        public Reference(float[] unit, int d, float[]? embed, int e, int topN)
        {
            int n = unit.Length / d;
            Cos = new float[n, n];
            var sim = new double[n, n];
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++)
                {
                    double c = 0, s = 0;
                    for (int i = 0; i < d; i++) c += (double)unit[a * d + i] * unit[b * d + i];
                    if (embed is not null) for (int i = 0; i < e; i++) s += (double)embed[a * e + i] * embed[b * e + i];
                    Cos[a, b] = Math.Clamp((float)c, -1f, 1f);
                    sim[a, b] = s;
                }
            Lists = new List<(int, float)>[Taus.Length, n, 5];
            for (int t = 0; t < Taus.Length; t++) for (int a = 0; a < n; a++) for (int b = 0; b < 5; b++) Lists[t, a, b] = [];
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++)
                {
                    if (a == b) continue;
                    float c = Cos[a, b];
                    int bin = c < 0 ? -1 : c < 0.1f ? 0 : c < 0.2f ? 1 : c < 0.3f ? 2 : c < 0.4f ? 3 : 4;
                    if (a < b)
                    {
                        Fine[Math.Min(1999, (int)Math.Floor((c + 1.0) * 1000))]++;
                        if (bin >= 0) Bins[bin]++;
                        if (embed is not null)
                        {
                            SimilarityFine[Math.Clamp((int)Math.Floor((Math.Clamp(sim[a, b], -1, 1) + 1.0) * 1000), 0, 1999)]++;
                            for (int t = 0; t < Taus.Length; t++) if (sim[a, b] < Taus[t]) SimilarityBelow[t]++;
                        }
                    }
                    if (bin < 0 || embed is null) continue;
                    for (int t = 0; t < Taus.Length; t++)
                        if (sim[a, b] < Taus[t])
                        {
                            Lists[t, a, bin].Add((b, c));
                            if (a < b) Unrelated[t * 5 + bin]++;
                        }
                }
            foreach (var l in Lists) l.Sort((x, y) => x.Item2 != y.Item2 ? y.Item2.CompareTo(x.Item2) : x.Item1.CompareTo(y.Item1));
            if (topN > 0)
            {
                var pairs = new SortedSet<(int, int)>();
                for (int a = 0; a < n; a++)
                    foreach (int b in Enumerable.Range(0, n).Where(b => b != a).OrderByDescending(b => Cos[a, b]).ThenBy(b => b).Take(topN))
                        pairs.Add((Math.Min(a, b), Math.Max(a, b)));
                TopPairs = [.. pairs];
            }
        }

        public bool Qualified(int t, int a) => Enumerable.Range(0, 5).All(b => Lists[t, a, b].Count > 0);
    }

    static InterferenceInputs Inputs(float[] unit, int d, float[]? embed, int e) => new()
    {
        Config = new SaeConfig
        {
            Folder = "mem", Format = "test", Architecture = SaeArchitecture.Standard, DIn = d, DSae = unit.Length / d,
            Hook = HookName.Parse("blocks.0.hook_resid_post"),
        },
        Name = "test", Source = new InterferenceSource("mem"), Features = Enumerable.Range(0, unit.Length / d).ToArray(), Unit = unit,
        Embed = embed, EmbedDim = e,
    };

    static void AssertMatches(Reference r, InterferenceResult res, int partners)
    {
        Assert.Equal(r.Bins, res.Bins);
        Assert.Equal(r.Fine, res.Fine);
        if (!res.Semantic) { Assert.Null(res.SimilarityFine); return; }
        Assert.Equal(r.Unrelated, res.Unrelated);
        Assert.Equal(r.SimilarityFine, res.SimilarityFine);
        Assert.Equal(r.SimilarityBelow, res.SimilarityBelow);
        int n = res.Features, row = 0, target = 0;
        for (int t = 0; t < Taus.Length; t++)
        {
            Assert.Equal(Enumerable.Range(0, n).Count(a => r.Qualified(t, a)), res.Qualified[t]);
            for (int a = 0; a < n; a++)
            {
                if (!r.Qualified(t, a)) continue;
                for (int b = 0; b < 5; b++)
                {
                    Assert.Equal((t, a, b, r.Lists[t, a, b].Count), (res.TargetTau[target], res.TargetFeature[target], res.TargetBin[target], res.TargetPartners[target]));
                    target++;
                    foreach (var (p, c) in r.Lists[t, a, b].Take(partners))
                    {
                        Assert.Equal((t, a, b, p, c), (res.QTau[row], res.QTarget[row], res.QBin[row], res.QPartner[row], res.QCosine[row]));
                        row++;
                    }
                }
            }
        }
        Assert.Equal(row, res.QTau.Length);
        Assert.Equal(target, res.TargetTau.Length);
    }

    static InterferenceResult Scan(float[] unit, int d, float[]? embed, int e, int tile, int partners, int topN, int threads = 2)
    {
        var o = new InterferenceOptions { Taus = Taus, PartnersPerBin = partners, TopN = topN, Tile = tile, Threads = threads };
        var st = InterferenceScan.Run(new CpuBackend(threads), unit, d, embed, e, o);
        return InterferenceResult.From(Inputs(unit, d, embed, e), st, o, null, null, null);
    }

    /// <summary>Exact on lattice data, at odd n, d and tiles (tile boundaries inside and at the diagonal), with and without
    /// the semantic mask and top-N.</summary>
    [Theory]
    [InlineData(301, 67, 64, 3, 4)]
    [InlineData(130, 65, 130, 2, 0)]
    [InlineData(97, 64, 17, 1, 3)]
    public void LatticeScanEqualsBruteForceExactly(int n, int d, int tile, int partners, int topN)
    {
        var unit = Lattice(n, d, 64, (ulong)n);
        var embed = Lattice(n, 19, 16, (ulong)n + 1);
        var withSemantics = Scan(unit, d, embed, 19, tile, partners, topN);
        var reference = new Reference(unit, d, embed, 19, topN);
        Assert.True(reference.Bins.All(b => b > 0), "the data must populate every bin");
        Assert.True(withSemantics.Qualified.Sum() > 0, "some targets must qualify");
        AssertMatches(reference, withSemantics, partners);
        Assert.Equal(reference.TopPairs, withSemantics.TopA.Zip(withSemantics.TopB).ToArray());
        var plain = Scan(unit, d, null, 0, tile, partners, 0);
        AssertMatches(reference, plain, partners);
        Assert.False(plain.Semantic);
        Assert.Equal((long)n * (n - 1) / 2, plain.Fine.Sum());
    }

    /// <summary>Gaussian decoders: bins, counts, qualified sets and partners equal the reference exactly (no cosine lies
    /// within 1e-5 of a bin edge or τ, so float rounding cannot move a pair), and the result is the same for any tile
    /// size and thread count.</summary>
    [Fact]
    public void RandomScanEqualsBruteForceAndIgnoresTilingAndThreads()
    {
        int n = 157, d = 23, e = 11;
        var unit = Gaussian(n, d, 7);
        var embed = Gaussian(n, e, 8);
        var reference = new Reference(unit, d, embed, e, 0);
        float[] edges = [0f, 0.1f, 0.2f, 0.3f, 0.4f];
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (a != b) Assert.True(edges.All(x => Math.Abs(reference.Cos[a, b] - x) > 1e-5), "test data must keep cosines off the bin edges");
        var r1 = Scan(unit, d, embed, e, tile: 157, partners: 4, topN: 0, threads: 1);
        Assert.Equal(reference.Bins, r1.Bins);
        Assert.Equal(reference.Unrelated, r1.Unrelated);
        Assert.Equal(reference.SimilarityBelow, r1.SimilarityBelow);
        Assert.Equal(reference.SimilarityBelow[0], r1.SimilarityFine!.Take(1400).Sum());   // τ 0.4 is a fine-bin edge; no similarity lies on it
        for (int t = 0; t < Taus.Length; t++) Assert.Equal(Enumerable.Range(0, n).Count(a => reference.Qualified(t, a)), r1.Qualified[t]);
        Assert.Equal(Enumerable.Range(0, r1.QTau.Length).Select(i => (r1.QTau[i], r1.QTarget[i], r1.QBin[i], r1.QPartner[i])),
            Enumerable.Range(0, Taus.Length).SelectMany(t => Enumerable.Range(0, n).Where(a => reference.Qualified(t, a))
                .SelectMany(a => Enumerable.Range(0, 5).SelectMany(b => reference.Lists[t, a, b].Take(4).Select(p => (t, a, b, p.Partner))))));
        foreach (var (tile, threads) in new[] { (16, 2), (50, 2), (33, 1) }) AssertSame(r1, Scan(unit, d, embed, e, tile, 4, 0, threads));
    }

    /// <summary>A planted SAE on disk whose decoder rows have known cosines: feature 2k is e_k, feature 2k+1 is
    /// c_k·e_k + √(1−c_k²)·e_(k+G) (G groups); every other pair is orthogonal (cosine 0). The bin counts follow by hand.</summary>
    [Fact]
    public void PlantedDecoderGivesTheKnownBins()
    {
        float[] c = [0.05f, 0.15f, 0.25f, 0.35f, 0.45f, 0.95f, -0.3f, 0.12f, 0.33f];
        int g = c.Length, d = 2 * g + 3, n = 2 * g;   // three unused dimensions
        var wDec = new float[n * d];
        for (int k = 0; k < g; k++)
        {
            wDec[2 * k * d + k] = 2f;   // not unit on disk: the scan normalises
            wDec[(2 * k + 1) * d + k] = c[k];
            wDec[(2 * k + 1) * d + k + g] = MathF.Sqrt(1 - c[k] * c[k]);
        }
        using var dir = new Fixtures.TempDir();
        WriteSae(dir.File("planted"), wDec, n, d);
        var inp = InterferenceInputs.Load(new InterferenceSource(dir.File("planted")), "planted", strict: false);
        var o = new InterferenceOptions { Tile = 5, Threads = 2 };
        var st = InterferenceScan.Run(new CpuBackend(2), inp.Unit, inp.D, null, 0, o);
        long orthogonal = (long)n * (n - 1) / 2 - g;
        Assert.Equal(new long[] { orthogonal + 1, 2, 1, 2, 2 }, st.Bins);   // 0.05 | 0.15, 0.12 | 0.25 | 0.35, 0.33 | 0.45, 0.95
        Assert.Equal(orthogonal, st.Fine[InterferenceBins.FineOf(0f)]);
        Assert.Equal(1, st.Fine[InterferenceBins.FineOf(-0.3f)]);
    }

    /// <summary>A planted target: feature 0 is e_0, feature b (1..5) is c_b·e_0 + √(1−c_b²)·e_b with c = 0.05 … 0.45, one
    /// partner per bin; the partners' cosines with each other are c_i·c_j. Explanation embeddings put partner b at
    /// similarity s_b to the target, with s = 0.1 except 0.25 for the [0.2, 0.3) partner: feature 0 qualifies under
    /// τ 0.4 and 0.3, not under 0.2 and 0.15, and no other feature can (it has partners in two bins at most).</summary>
    [Fact]
    public void PlantedTargetQualifiesUnderTheRightTaus()
    {
        float[] c = [0.05f, 0.15f, 0.25f, 0.35f, 0.45f], sims = [0.1f, 0.1f, 0.25f, 0.1f, 0.1f];
        int n = 6, d = 7, e = 6;
        var wDec = new float[n * d];
        wDec[0] = 1;
        for (int b = 1; b <= 5; b++) { wDec[b * d] = c[b - 1]; wDec[b * d + b] = MathF.Sqrt(1 - c[b - 1] * c[b - 1]); }
        using var dir = new Fixtures.TempDir();
        WriteSae(dir.File("planted"), wDec, n, d);
        var lines = new List<string> { """{"index": 0, "description": "target", "embedding": [1, 0, 0, 0, 0, 0]}""" };
        for (int b = 1; b <= 5; b++)
        {
            var emb = new float[e];
            emb[0] = sims[b - 1];
            emb[b] = MathF.Sqrt(1 - sims[b - 1] * sims[b - 1]);
            lines.Add($$"""{"index": {{b}}, "description": "partner {{b}}", "embedding": [{{string.Join(", ", emb.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))}}]}""");
        }
        File.WriteAllLines(dir.File("ex.jsonl"), lines);
        var inp = InterferenceInputs.Load(new InterferenceSource(dir.File("planted"), dir.File("ex.jsonl")), "planted", strict: true);
        var o = new InterferenceOptions { Taus = Taus, PartnersPerBin = 3, Tile = 4, TopN = 1 };
        var st = InterferenceScan.Run(new CpuBackend(2), inp.Unit, inp.D, inp.Embed, inp.EmbedDim, o);
        var r = InterferenceResult.From(inp, st, o, null, null, new InterferenceSampleOptions(1, 1, 7));
        Assert.Equal(new[] { 1, 1, 0, 0 }, r.Qualified);
        Assert.Equal(new[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, r.TargetFeature);   // target 0, five bins, τ 0.4 and 0.3
        Assert.All(r.TargetPartners, p => Assert.Equal(1, p));
        Assert.Equal(new[] { 1, 2, 3, 4, 5, 1, 2, 3, 4, 5 }, r.QPartner);
        Assert.Equal(new[] { 0, 1, 2, 3, 4, 0, 1, 2, 3, 4 }, r.QBin);
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(c[r.QBin[i]], r.QCosine[i], 6);
            Assert.Equal(sims[r.QBin[i]], r.QSimilarity[i], 6);
        }
        // pairs among partners: c_i·c_j, so 0.35·0.45 = 0.1575 and 0.25·0.45 = 0.1125 land in [0.1, 0.2), the rest in [0, 0.1)
        Assert.Equal(new long[] { 1 + 8, 1 + 2, 1, 1, 1 }, r.Bins);
        var sample = JsonNode.Parse(r.SampleJson!)!["taus"]!;
        Assert.Equal(0, (int)sample[0]!["targets"]![0]!["feature"]!);
        Assert.Equal("target", (string)sample[0]!["targets"]![0]!["explanation"]!);
        Assert.Empty(sample[2]!["targets"]!.AsArray());
    }

    internal static void WriteSae(string folder, float[] wDec, int dSae, int dIn)
    {
        Directory.CreateDirectory(folder);
        new SafeTensorsWriter().Add("W_enc", new float[dIn * dSae], dIn, dSae).Add("b_enc", new float[dSae], dSae)
            .Add("W_dec", wDec, dSae, dIn).Add("b_dec", new float[dIn], dIn).Save(Path.Combine(folder, "sae_weights.safetensors"));
        File.WriteAllText(Path.Combine(folder, "cfg.json"), $$$"""
            {"architecture": "standard", "d_in": {{{dIn}}}, "d_sae": {{{dSae}}}, "dtype": "float32", "apply_b_dec_to_input": true,
             "normalize_activations": "none", "metadata": {"sae_lens_version": "6.18.0", "hook_name": "blocks.0.hook_resid_post", "model_name": "toy"}}
            """);
    }

    /// <summary>A scan stopped after some tiles and continued from its checkpoint ends identical to one run straight through.</summary>
    [Fact]
    public void ResumedScanEqualsUninterrupted()
    {
        int n = 120, d = 64;
        var unit = Lattice(n, d, 64, 3);
        var embed = Lattice(n, 17, 16, 4);
        var o = new InterferenceOptions { Taus = Taus, PartnersPerBin = 3, TopN = 2, Tile = 32 };
        var straight = InterferenceResult.From(Inputs(unit, d, embed, 17), InterferenceScan.Run(new CpuBackend(2), unit, d, embed, 17, o), o, null, null, null);
        using var dir = new Fixtures.TempDir();
        var ck = new ScanCheckpoint { Path = dir.File("ck.safetensors"), RunKey = "k", Every = TimeSpan.Zero };
        Assert.Throws<OperationCanceledException>(() => InterferenceScan.Run(new CpuBackend(2), unit, d, embed, 17, o, null, (st, done, total) =>
        {
            ck.MaybeSave(done, w => st.Save(w, ""));
            if (done == 6) throw new OperationCanceledException("killed");
        }));
        var (windows, file) = ck.Open()!.Value;
        using (file)
        {
            Assert.Equal(6, windows);
            var resume = new InterferenceState(n, Taus.Length, true, 3, 2);
            resume.Restore(file, "");
            Assert.Equal(6, resume.TilesDone);
            var resumed = InterferenceResult.From(Inputs(unit, d, embed, 17), InterferenceScan.Run(new CpuBackend(2), unit, d, embed, 17, o, resume), o, null, null, null);
            AssertSame(straight, resumed);
        }
    }

    static void AssertSame(InterferenceResult a, InterferenceResult b)
    {
        Assert.Equal(a.Fine, b.Fine);
        Assert.Equal(a.Bins, b.Bins);
        Assert.Equal(a.Unrelated, b.Unrelated);
        Assert.Equal(a.SimilarityFine, b.SimilarityFine);
        Assert.Equal(a.SimilarityBelow, b.SimilarityBelow);
        Assert.Equal(a.Qualified, b.Qualified);
        Assert.Equal(a.TargetPartners, b.TargetPartners);
        Assert.Equal(a.QPartner, b.QPartner);
        Assert.Equal(a.QCosine, b.QCosine);
        Assert.Equal(a.TopA, b.TopA);
        Assert.Equal(a.TopB, b.TopB);
    }

    [Fact]
    public void TopHeapsKeepTheStrongestWithTiesToTheLowerId()
    {
        var rng = new Rng(9);
        for (int trial = 0; trial < 50; trial++)
        {
            int k = 1 + trial % 6, m = 40;
            var cands = Enumerable.Range(0, m).Select(i => (Id: i, Score: (float)(rng.NextU64() % 7) / 4)).ToArray();
            var h = new TopHeaps<float>(2, k);
            foreach (var c in cands.OrderBy(_ => rng.NextU64())) h.Offer(1, c.Score, c.Id);
            var expected = cands.OrderByDescending(c => c.Score).ThenBy(c => c.Id).Take(k).ToArray();
            Assert.Equal(expected, h.Sorted(1).Select(x => (x.Id, x.Score)).ToArray());
            Assert.Empty(h.Sorted(0));
        }
    }

    [Fact]
    public void BinsFollowThePaperBoundaries()
    {
        Assert.Equal(-1, InterferenceBins.Of(-1e-7f));
        Assert.Equal(0, InterferenceBins.Of(0f));
        Assert.Equal(0, InterferenceBins.Of(0.099999f));
        Assert.Equal(1, InterferenceBins.Of(0.1f));
        Assert.Equal(3, InterferenceBins.Of(0.39999f));
        Assert.Equal(4, InterferenceBins.Of(0.4f));
        Assert.Equal(4, InterferenceBins.Of(1f));
        Assert.Equal(1f, InterferenceBins.Clamp(1.0000001f));
        Assert.Equal(0, InterferenceBins.FineOf(-1f));
        Assert.Equal(1999, InterferenceBins.FineOf(1f));
        Assert.Equal(1000, InterferenceBins.FineOf(0f));
        Assert.Equal((0.1, 0.101), (InterferenceBins.FineLo(1100), InterferenceBins.FineHi(1100)));
    }

    /// <summary>The logit-lens proxy equals cos(head·d̂_a, head·d̂_b) computed directly in double.</summary>
    [Fact]
    public void LogitLensEqualsTheDirectCosine()
    {
        int vocab = 53, d = 12, n = 9;
        var head = new Rng(5).Normals([vocab, d], 1f);
        var unit = Gaussian(n, d, 6);
        var backend = new CpuBackend(2);
        var lens = new LogitLens(backend, LogitLens.Gram(backend, head, vocab, d), unit, d);
        double[] Logits(int a) => Enumerable.Range(0, vocab).Select(v => Enumerable.Range(0, d).Sum(i => (double)head[v * d + i] * unit[a * d + i])).ToArray();
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
            {
                var (la, lb) = (Logits(a), Logits(b));
                double expected = la.Zip(lb, (x, y) => x * y).Sum() / Math.Sqrt(la.Sum(x => x * x) * lb.Sum(x => x * x));
                Assert.Equal(expected, lens.Cosine(a, b), 4);
            }
    }

    /// <summary>The co-activation proxy reads the triangle a coactivate run writes, by feature index.</summary>
    [Fact]
    public void CoactivationLookupReadsTheTriangle()
    {
        var counter = new CoactivationCounter(6);
        foreach (var unit in new[] { new[] { 0, 2, 5 }, [2, 5], [1], [0, 2] }) counter.AddUnit(unit);
        using var dir = new Fixtures.TempDir();
        var pairs = PolyEngine.Tests.Sae.CounterExtensions.Triangle(counter);
        new SafeTensorsWriter().AddMetadata("units", counter.Units.ToString())
            .AddRaw("my-sae.pairs", SafeTensorDType.U32, [pairs.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(pairs.AsSpan()).ToArray(), pairs.Length)
            .Add("my-sae.marginals", counter.Marginals.ToArray().Select(v => (long)v).ToArray(), 6).Save(dir.File("coactivation.safetensors"));
        using var lookup = new CoactivationLookup(dir.Path, "my-sae", 6);
        Assert.Equal(4, lookup.Units);
        Assert.Equal(2.0 / 3, lookup.Jaccard(2, 0), 12);   // together twice; 0 fires twice, 2 three times
        Assert.Equal(2.0 / 3, lookup.Jaccard(5, 2), 12);
        Assert.Equal(0, lookup.Jaccard(1, 5));
        Assert.True(double.IsNaN(lookup.Jaccard(3, 4)));
        Assert.Contains("no counts for SAE 'other'", Assert.Throws<PolyEngineException>(() => new CoactivationLookup(dir.Path, "other", 6)).Message);
        Assert.Contains("d_sae 7", Assert.Throws<PolyEngineException>(() => new CoactivationLookup(dir.Path, "my-sae", 7)).Message);
    }

    /// <summary>The seeded sample: the same seed gives the same draw, targets are qualified, partners sit in their bin,
    /// are unrelated, and are consecutive (circularly) in the ascending list of candidates.</summary>
    [Fact]
    public void SampleIsReproducibleAndDrawsValidPartners()
    {
        int n = 150, d = 64, e = 19;
        var unit = Lattice(n, d, 64, 21);
        var embed = Lattice(n, e, 16, 22);
        var o = new InterferenceOptions { Taus = Taus, Tile = 64 };
        var st = InterferenceScan.Run(new CpuBackend(2), unit, d, embed, e, o);
        var inp = Inputs(unit, d, embed, e);
        var s1 = InterferenceSampling.Draw(inp, st, Taus, new InterferenceSampleOptions(4, 3, 50)).ToJsonString();
        Assert.Equal(s1, InterferenceSampling.Draw(inp, st, Taus, new InterferenceSampleOptions(4, 3, 50)).ToJsonString());
        Assert.NotEqual(s1, InterferenceSampling.Draw(inp, st, Taus, new InterferenceSampleOptions(4, 3, 51)).ToJsonString());
        var reference = new Reference(unit, d, embed, e, 0);
        var json = JsonNode.Parse(s1)!;
        int drawn = 0;
        foreach (var (tauNode, t) in json["taus"]!.AsArray().Select((x, i) => (x!, i)))
        {
            foreach (var target in tauNode["targets"]!.AsArray())
            {
                int a = (int)target!["feature"]!;
                Assert.True(reference.Qualified(t, a));
                drawn++;
                for (int b = 0; b < 5; b++)
                {
                    var bin = target["bins"]![InterferenceBins.Keys[b]]!;
                    var candidates = reference.Lists[t, a, b].Select(p => p.Partner).Order().ToList();
                    Assert.Equal(candidates.Count, (int)bin["candidates"]!);
                    var chosen = bin["partners"]!.AsArray().Select(p => (int)p!["feature"]!).ToList();
                    Assert.Equal(Math.Min(3, candidates.Count), chosen.Count);
                    int start = candidates.IndexOf(chosen[0]);
                    for (int k = 0; k < chosen.Count; k++) Assert.Equal(candidates[(start + k) % candidates.Count], chosen[k]);
                }
            }
        }
        Assert.True(drawn > 0);
    }
}

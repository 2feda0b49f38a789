using PolyEngine.Interventions;
using PolyEngine.Kernels.Cuda;
using Xunit;

namespace PolyEngine.Tests.Interventions;

/// <summary>
/// The batch planner against the way it replaces: one full forward pass per prompt × edit with the edit applied by hand, the
/// metrics computed from the whole logits row in double by their definitions (scalar references here). Small rows budgets
/// force several prompt groups and several passes per group; prompts differ in length.
/// </summary>
public class SteerSweepTests
{
    static readonly SteerPrompt[] Prompts =
    [
        new([5, 17, 300, 2, 41], [17, 64]),
        new([9, 12, 700], [3]),
        new([700, 3, 3, 61, 8, 1, 99], [99, 99, 250]),
    ];

    static float[] Random(int n, int seed)
    {
        var rng = new Rng((ulong)seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    // ---- scalar references of the metrics, in double, from a whole logits row ----

    static double[] Probabilities(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        var p = new double[logits.Length];
        double sum = 0;
        for (int t = 0; t < p.Length; t++) sum += p[t] = Math.Exp(logits[t] - max);
        for (int t = 0; t < p.Length; t++) p[t] /= sum;
        return p;
    }

    static double Cosine(Tensor e, int a, int b)
    {
        int d = (int)e.Shape[1];
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < d; i++)
        {
            double x = e.Data[a * d + i], y = e.Data[b * d + i];
            dot += x * y; na += x * x; nb += y * y;
        }
        return dot / (Math.Max(Math.Sqrt(na), 1e-12) * Math.Max(Math.Sqrt(nb), 1e-12));
    }

    /// <summary>Kendall's τ of two value sequences by counting every pair (no ties in permutations).</summary>
    static double KendallBrute(int[] a, int[] b)
    {
        long c = 0, d = 0;
        for (int i = 0; i < a.Length; i++)
            for (int j = i + 1; j < a.Length; j++)
                if (Math.Sign(a[i] - a[j]) * Math.Sign(b[i] - b[j]) > 0) c++; else d++;
        return (c - d) / (double)(c + d);
    }

    /// <summary>Pearson's r of two sequences (Spearman's ρ of permutations, whose ranks are the values themselves).</summary>
    static double Pearson(int[] a, int[] b)
    {
        double ma = a.Average(), mb = b.Average(), sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < a.Length; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb); }
        return sab / Math.Sqrt(saa * sbb);
    }

    static int[] Inverse(int[] p) { var inv = new int[p.Length]; for (int i = 0; i < p.Length; i++) inv[p[i]] = i; return inv; }

    static double[] ReferenceMetrics(Model m, float[] logits, float[] cleanLogits, SteerPrompt prompt, IReadOnlyList<SteerMetric> metrics)
    {
        var e = m.W_E;
        int vocab = m.Spec.DVocab;
        var p = Probabilities(logits);
        var q = Probabilities(cleanLogits);
        var targets = prompt.Targets.Distinct().ToArray();
        double wc = 0, overlap = targets.Sum(u => p[u]), kl = 0;
        for (int t = 0; t < vocab; t++)
        {
            wc += p[t] * targets.Max(u => Cosine(e, t, u));
            kl += q[t] * (Math.Log(q[t]) - Math.Log(p[t]));
        }
        var predictions = Enumerable.Range(0, vocab).OrderByDescending(t => logits[t]).ThenBy(t => t).ToArray();
        var similar = Enumerable.Range(0, vocab).OrderByDescending(t => (float)Cosine(e, t, prompt.Targets[0])).ThenBy(t => t).ToArray();
        return metrics.Select(x => x switch
        {
            SteerMetric.WeightedCosine => wc,
            SteerMetric.Overlap => overlap,
            SteerMetric.Kl => kl,
            SteerMetric.Spearman => Pearson(predictions, similar),
            SteerMetric.Kendall => KendallBrute(predictions, similar),
            SteerMetric.SpearmanRank => Pearson(Inverse(predictions), Inverse(similar)),
            SteerMetric.KendallRank => KendallBrute(Inverse(predictions), Inverse(similar)),
            _ => throw new ArgumentOutOfRangeException(nameof(x)),
        }).ToArray();
    }

    static float[] LastLogits(Model m, int[] ids, HookEdit? edit)
    {
        var r = m.Run([ids], new RunOptions { Logits = LogitsMode.LastPosition, Edits = edit is null ? [] : [edit] });
        return r.Logits!.Data;
    }

    static void AssertSweepMatchesOnePassEach(Model m, SteerPlan plan, Func<(int Item, float Amount), HookEdit> byHand, double tol)
    {
        var result = SteerSweep.Collect(m, plan);
        var edits = plan.EditRows();
        Assert.Equal(plan.Prompts.Count * (1 + edits.Count), result.Rows.Count);
        int row = 0;
        for (int p = 0; p < plan.Prompts.Count; p++)
        {
            var prompt = plan.Prompts[p];
            var clean = LastLogits(m, prompt.Ids, null);
            var baseline = result.Rows[row++];
            Assert.True(baseline.IsBaseline && baseline.Prompt == p, $"row {row - 1} should be prompt {p}'s baseline");
            Compare(ReferenceMetrics(m, clean, clean, prompt, plan.Metrics), baseline.Metrics, plan.Metrics, tol, $"prompt {p} baseline");
            foreach (var edit in edits)
            {
                var r = result.Rows[row++];
                Assert.Equal((p, edit.Item, edit.Amount), (r.Prompt, r.Item, r.Amount));
                var hand = byHand(edit);
                var logits = LastLogits(m, prompt.Ids, plan.From is null ? hand : hand with { From = [plan.FirstEdited(p)] });
                Compare(ReferenceMetrics(m, logits, clean, prompt, plan.Metrics), r.Metrics, plan.Metrics, tol, $"prompt {p} item {edit.Item} amount {edit.Amount}");
                if (plan.TopK > 0)
                {
                    var expected = Enumerable.Range(0, logits.Length).OrderByDescending(t => logits[t]).ThenBy(t => t).Take(plan.TopK).ToArray();
                    Assert.Equal(expected, r.TopIds);
                    var probs = Probabilities(logits);
                    for (int j = 0; j < plan.TopK; j++) Assert.Equal(probs[expected[j]], r.TopProbabilities![j], 5);
                }
            }
        }
    }

    static void Compare(double[] expected, double[] actual, IReadOnlyList<SteerMetric> metrics, double tol, string what)
    {
        for (int i = 0; i < metrics.Count; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol + tol * Math.Abs(expected[i]),
                $"{what}: {metrics[i].Name()} {actual[i]} vs the reference {expected[i]}");
    }

    static readonly SteerMetric[] AllMetrics = Enum.GetValues<SteerMetric>();

    [Theory]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_pre", 24)]
    [InlineData("neox-tiny", "blocks.0.hook_attn_out", 70)]
    [InlineData("gpt2-tiny", "hook_embed", 100000)]
    public void AVectorSweepEqualsOnePassPerIntervention(string model, string hookName, int budget)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var hook = HookName.Parse(hookName);
        var vectors = new[] { Random(64, 1), Random(64, 2) };
        var plan = new SteerPlan
        {
            Hook = hook, Prompts = Prompts, Vectors = vectors, Scales = [-3f, 0.5f, 2f], Metrics = AllMetrics, TopK = 3, RowsBudget = budget,
        };
        AssertSweepMatchesOnePassEach(m, plan, e =>
        {
            var v = vectors[e.Item];
            float norm = System.Numerics.Tensors.TensorPrimitives.Norm(v);
            return HookEdit.AddVector(hook, v.Select(x => x / norm).ToArray(), e.Amount);
        }, 2e-5);
    }

    [Theory]
    [InlineData("gpt2-tiny", "blocks.1.hook_resid_pre", -1, 24)]       // each prompt's last token, one prompt a group
    [InlineData("gpt2-tiny", "blocks.0.hook_resid_post", -2, 100000)]  // ragged prompts in one group: the window starts at the earliest
    [InlineData("neox-tiny", "blocks.0.hook_mlp_out", 2, 70)]          // rotary from the window's position, several passes a group
    [InlineData("neox-tiny", "hook_embed", -1, 100000)]
    public void AnEditFromAPositionRunsOnlyTheWindowAndEqualsOnePassPerIntervention(string model, string hookName, int from, int budget)
    {
        using var m = Model.Load(Fixtures.Golden(model));
        var hook = HookName.Parse(hookName);
        var vectors = new[] { Random(64, 4), Random(64, 5) };
        var plan = new SteerPlan
        {
            Hook = hook, Prompts = Prompts, Vectors = vectors, Scales = [-6f, 3f], Metrics = AllMetrics, TopK = 2, RowsBudget = budget, From = from,
        };
        AssertSweepMatchesOnePassEach(m, plan, e =>
        {
            var v = vectors[e.Item];
            float norm = System.Numerics.Tensors.TensorPrimitives.Norm(v);
            return HookEdit.AddVector(hook, v.Select(x => x / norm).ToArray(), e.Amount);
        }, 2e-5);
        // The edit matters: the steered rows differ from the sweep that edits every position.
        var everywhere = SteerSweep.Collect(m, plan with { From = null }).Rows;
        Assert.Contains(SteerSweep.Collect(m, plan).Rows.Zip(everywhere), x => !x.First.IsBaseline && x.First.Metrics[2] != x.Second.Metrics[2]);
        Assert.Contains("prompt 1 has 3 tokens", Assert.Throws<PolyEngineException>(() => SteerSweep.Collect(m, plan with { From = 3 })).Message);
        Assert.Contains("prompt 1 has 3 tokens", Assert.Throws<PolyEngineException>(() => SteerSweep.Collect(m, plan with { From = -4 })).Message);
    }

    [Fact]
    public void ANeuronSweepEqualsOnePassPerIntervention()
    {
        using var m = Model.Load(Fixtures.Golden("neox-tiny"));
        var hook = HookName.Parse("blocks.1.mlp.hook_post");
        var plan = new SteerPlan { Hook = hook, Prompts = Prompts, Neurons = [7, 200], Factors = [0f, 0.5f, 5f], RowsBudget = 40 };
        AssertSweepMatchesOnePassEach(m, plan, e => HookEdit.ScaleCoordinate(hook, m.Spec.DMlp, plan.Neurons[e.Item], e.Amount), 2e-5);
        var baseline = SteerSweep.Collect(m, plan).Rows[0];
        Assert.Equal((-1, 1f), (baseline.Item, baseline.Amount));
    }

    [Fact]
    public void TheEmulatedCudaBackendSweepsAsTheCpuDoes()
    {
        using var gpu = IlgpuBackend.CreateEmulated();
        using var cpu = Model.Load(Fixtures.Golden("gpt2-tiny"));
        using var dev = Model.Load(Fixtures.Golden("gpt2-tiny"), gpu);
        var plan = new SteerPlan
        {
            Hook = HookName.Parse("blocks.1.hook_resid_pre"), Prompts = Prompts[..2], Vectors = [Random(64, 3)], Scales = [-4f, 2f],
            TopK = 2, RowsBudget = 16,
        };
        var a = SteerSweep.Collect(cpu, plan).Rows;
        var b = SteerSweep.Collect(dev, plan).Rows;
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal((a[i].Prompt, a[i].Item, a[i].Amount), (b[i].Prompt, b[i].Item, b[i].Amount));
            Compare(a[i].Metrics, b[i].Metrics, plan.Metrics, 1e-5, $"row {i} on the emulated device");
            Assert.Equal(a[i].TopIds, b[i].TopIds);
        }
        // The rank metrics by the device's sort and merge kernels, against their definitions on the device's own logits (a
        // logit 1e-6 away on the CPU can swap two tokens' ranks, so the CPU's rank metrics are not the yardstick here).
        var vector = plan.Vectors[0];
        float norm = System.Numerics.Tensors.TensorPrimitives.Norm(vector);
        AssertSweepMatchesOnePassEach(dev, plan with { Metrics = AllMetrics, TopK = 0 },
            e => HookEdit.AddVector(plan.Hook, vector.Select(x => x / norm).ToArray(), e.Amount), 2e-5);
    }

    [Fact]
    public void TheRankCoefficientsEqualTheirPairwiseDefinitions()
    {
        var rng = new System.Random(5);
        foreach (int n in new[] { 2, 3, 10, 257 })
        {
            var a = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
            var b = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
            Assert.Equal(Pearson(a, b), SteerMetrics.SpearmanOfPermutations(a, b), 10);
            Assert.Equal(KendallBrute(a, b), SteerMetrics.KendallOfPermutations(a, b), 12);
        }
        var id = Enumerable.Range(0, 50).ToArray();
        Assert.Equal(1.0, SteerMetrics.KendallOfPermutations(id, id));
        Assert.Equal(-1.0, SteerMetrics.SpearmanOfPermutations(id, id.Reverse().ToArray()), 12);
        Assert.Equal([2, 0, 1, 3], SteerMetrics.Descending([1f, 0f, 5f, 0f]));   // ties to the lower id
    }

    [Fact]
    public void BestOfScaleTakesTheLargestValueOrMagnitudeAndItsScale()
    {
        SteerMetric[] metrics = [SteerMetric.WeightedCosine, SteerMetric.Spearman];
        SteerRow[] rows =
        [
            new(0, -1, 0f, [0.5, 0.1]),
            new(0, 0, -1f, [0.4, -0.7]), new(0, 0, 1f, [0.8, 0.3]), new(0, 0, 2f, [0.8, 0.2]),
            new(0, 1, -1f, [0.2, 0.0]), new(0, 1, 1f, [0.1, 0.05]),
        ];
        var best = SteerResult.Bests(metrics, rows);
        var wc0 = best.Single(x => x.Item == 0 && x.Metric == SteerMetric.WeightedCosine);
        Assert.Equal((0.5, 0.8, 1f), (wc0.Baseline, wc0.Best, wc0.BestAmount));   // the first of equal values
        Assert.Equal(0.3, wc0.Delta, 12);
        Assert.Equal(0.6, wc0.RelativeDelta, 12);
        var sp0 = best.Single(x => x.Item == 0 && x.Metric == SteerMetric.Spearman);
        Assert.Equal((-0.7, -1f), (sp0.Best, sp0.BestAmount));
        var wc1 = best.Single(x => x.Item == 1 && x.Metric == SteerMetric.WeightedCosine);
        Assert.Equal(0.2, wc1.Best);   // below the baseline: the baseline is not a candidate
        Assert.True(wc1.Delta < 0);
    }

    public static TheoryData<string, string> BadPlans() => new()
    {
        { "zero", "vector 0 is zero" },
        { "width", "vector 0 has 3 values; the hook is 64 wide" },
        { "nan-vector", "vector 0: value 1 is NaN" },
        { "nan-scale", "--scales: NaN is not a finite number" },
        { "target", "prompt 0: target token 5000 is outside the vocabulary 0..999" },
        { "empty", "prompt 0 is empty" },
        { "long", "more than the context n_ctx" },
        { "neuron", "--neurons: coordinate 64 is outside the width" },
        { "both", "not both or neither" },
        { "hook", "cannot be edited" },
    };

    [Theory]
    [MemberData(nameof(BadPlans))]
    public void ABadPlanIsOneLine(string what, string expected)
    {
        using var m = Model.Load(Fixtures.Golden("gpt2-tiny"));
        var ok = new SteerPlan { Hook = HookName.Parse("blocks.0.hook_resid_post"), Prompts = Prompts, Vectors = [Random(64, 1)], Scales = [1f] };
        var plan = what switch
        {
            "zero" => ok with { Vectors = [new float[64]] },
            "width" => ok with { Vectors = [new float[3]] },
            "nan-vector" => ok with { Vectors = [[1f, float.NaN, .. new float[62]]] },
            "nan-scale" => ok with { Scales = [1f, float.NaN] },
            "target" => ok with { Prompts = [new([1, 2], [5000])] },
            "empty" => ok with { Prompts = [new([], [1])] },
            "long" => ok with { Prompts = [new(new int[m.Spec.NCtx + 1], [1])] },
            "neuron" => ok with { Vectors = [], Neurons = [64] },
            "both" => ok with { Neurons = [1] },
            "hook" => ok with { Hook = HookName.Parse("blocks.0.ln1.hook_scale") },
            _ => throw new ArgumentException(what),
        };
        var e = Assert.Throws<PolyEngineException>(() => SteerSweep.Collect(m, plan));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}

using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>One of a feature's top activating contexts: the whole context window (its index in the scan, its document
/// and the offset of its first corpus token there), the feature's activation at each of its tokens, and the position of
/// the maximum.</summary>
public sealed record FeatureContext(float Activation, long Window, int Position, int[] Tokens, float[] TokenActivations, long Document, long Offset);

/// <summary>The options of a feature scan.</summary>
public sealed record FeatureScanOptions : CorpusScanOptions
{
    /// <summary>Top activating context windows kept per feature.</summary>
    public int TopK { get; init; } = 10;
}

/// <summary>Per-feature statistics of one SAE over a corpus — the data Neuronpedia exports.</summary>
public sealed class FeatureStatistics
{
    readonly PriorityQueue<FeatureContext, (float, long)>[] _top;   // min-heaps: the weakest kept context on top

    public FeatureStatistics(SparseAutoencoder sae, int topK) : this(sae.Config.DSae, topK) => Sae = sae;

    /// <summary>Statistics of <paramref name="features"/> features without their SAE (a shard's, read back to merge).</summary>
    public FeatureStatistics(int features, int topK)
    {
        Sae = null!;
        TopK = topK;
        int f = features;
        FireCounts = new long[f];
        _sums = new Int128[f];
        MaxActivations = new float[f];
        _top = Enumerable.Range(0, f).Select(_ => new PriorityQueue<FeatureContext, (float, long)>()).ToArray();
    }

    public SparseAutoencoder Sae { get; }
    public int TopK { get; }
    public long Tokens { get; internal set; }
    public long[] FireCounts { get; }
    public float[] MaxActivations { get; }

    /// <summary>Activation sums in fixed point, 2⁻⁴⁰ units: every activation of 2⁻¹⁷ (7.6e−6) or more is added exactly and a
    /// smaller one to within 2⁻⁴⁰, and integer sums do not depend on order — so shards of a corpus add up to exactly the
    /// whole scan's sums (a double sum would differ in its last bits with the order of the additions).</summary>
    readonly Int128[] _sums;
    const double FixedScale = 1099511627776.0;   // 2^40

    internal static Int128 Fixed(float activation) => (Int128)(activation * FixedScale);

    /// <summary>The sum of the feature's activations where it fires (mean = sum / fire count).</summary>
    public double ActivationSum(int feature) => (double)_sums[feature] / FixedScale;

    /// <summary>Every feature's <see cref="ActivationSum"/>.</summary>
    public double[] ActivationSums => [.. Enumerable.Range(0, _sums.Length).Select(ActivationSum)];

    /// <summary>Adds another shard's statistics of the same SAE: counts, sums and token counts add, maxima take the larger.
    /// (Top contexts are merged from the shards' tables, where their windows get the whole scan's numbers.)</summary>
    public void AddCounts(FeatureStatistics other)
    {
        for (int j = 0; j < _sums.Length; j++)
        {
            FireCounts[j] += other.FireCounts[j];
            _sums[j] += other._sums[j];
            MaxActivations[j] = Math.Max(MaxActivations[j], other.MaxActivations[j]);
        }
        Tokens += other.Tokens;
    }

    /// <summary>The counts, sums, maxima and tokens alone (a shard's raw statistics, for merging).</summary>
    internal void SaveCounts(SafeTensorsWriter w, string prefix)
    {
        int f = FireCounts.Length;
        var sums = new long[2 * f];
        for (int j = 0; j < f; j++) (sums[2 * j], sums[2 * j + 1]) = ((long)(ulong)(_sums[j] & ulong.MaxValue), (long)(_sums[j] >> 64));
        w.Add(prefix + "tokens_seen", [Tokens], 1).Add(prefix + "fire_counts", FireCounts, f).Add(prefix + "activation_sums_fixed40", sums, f, 2)
         .Add(prefix + "max_activations", MaxActivations, f);
    }

    internal void RestoreCounts(SafeTensorsFile file, string prefix)
    {
        if (!file.Contains(prefix + "activation_sums_fixed40"))
            throw new PolyEngineException($"{file.Path}: holds no fixed-point activation sums (an older PolyEngine wrote it); delete it or use --overwrite");
        Tokens = file.ReadInt64(prefix + "tokens_seen")[0];
        file.ReadInt64(prefix + "fire_counts").CopyTo(FireCounts, 0);
        var sums = file.ReadInt64(prefix + "activation_sums_fixed40");
        for (int j = 0; j < _sums.Length; j++) _sums[j] = ((Int128)sums[2 * j + 1] << 64) | (Int128)(ulong)sums[2 * j];
        file.ReadFloat32(prefix + "max_activations").CopyTo(MaxActivations, 0);
    }

    internal void AddActivation(int feature, float a)
    {
        FireCounts[feature]++;
        _sums[feature] += Fixed(a);
        if (a > MaxActivations[feature]) MaxActivations[feature] = a;
    }

    /// <summary>The feature's top contexts, strongest first (ties: earlier window first).</summary>
    public IReadOnlyList<FeatureContext> TopContexts(int feature) =>
        _top[feature].UnorderedItems.Select(x => x.Element).OrderByDescending(c => c.Activation).ThenBy(c => c.Window).ToList();

    /// <summary>Writes the statistics and every kept context as tensors named <paramref name="prefix"/>* (a checkpoint).</summary>
    internal void Save(SafeTensorsWriter w, string prefix)
    {
        int f = FireCounts.Length;
        var all = Enumerable.Range(0, f).SelectMany(j => _top[j].UnorderedItems.Select(x => (Feature: j, Context: x.Element))).ToList();
        int width = all.Count == 0 ? 0 : all.Max(x => x.Context.Tokens.Length);
        var tokens = new int[all.Count * width];
        var acts = new float[all.Count * width];
        for (int n = 0; n < all.Count; n++)
        {
            all[n].Context.Tokens.CopyTo(tokens, n * width);
            all[n].Context.TokenActivations.CopyTo(acts, n * width);
        }
        SaveCounts(w, prefix);
        w.Add(prefix + "ctx_feature", all.Select(x => x.Feature).ToArray(), all.Count)
         .Add(prefix + "ctx_window", all.Select(x => x.Context.Window).ToArray(), all.Count)
         .Add(prefix + "ctx_position", all.Select(x => x.Context.Position).ToArray(), all.Count)
         .Add(prefix + "ctx_activation", all.Select(x => x.Context.Activation).ToArray(), all.Count)
         .Add(prefix + "ctx_length", all.Select(x => x.Context.Tokens.Length).ToArray(), all.Count)
         .Add(prefix + "ctx_document", all.Select(x => x.Context.Document).ToArray(), all.Count)
         .Add(prefix + "ctx_offset", all.Select(x => x.Context.Offset).ToArray(), all.Count)
         .Add(prefix + "ctx_tokens", tokens, all.Count, width)
         .Add(prefix + "ctx_acts", acts, all.Count, width);
    }

    /// <summary>Restores what <see cref="Save"/> wrote.</summary>
    internal void Restore(SafeTensorsFile file, string prefix)
    {
        RestoreCounts(file, prefix);
        var feature = file.ReadInt64(prefix + "ctx_feature");
        var window = file.ReadInt64(prefix + "ctx_window");
        var position = file.ReadInt64(prefix + "ctx_position");
        var activation = file.ReadFloat32(prefix + "ctx_activation");
        var length = file.ReadInt64(prefix + "ctx_length");
        var document = file.ReadInt64(prefix + "ctx_document");
        var offset = file.ReadInt64(prefix + "ctx_offset");
        var tokens = file.ReadInt64(prefix + "ctx_tokens");
        var acts = file.ReadFloat32(prefix + "ctx_acts");
        int width = feature.Length == 0 ? 0 : tokens.Length / feature.Length;
        for (int n = 0; n < feature.Length; n++)
        {
            int len = (int)length[n];
            var ctx = new FeatureContext(activation[n], window[n], (int)position[n],
                tokens.Skip(n * width).Take(len).Select(v => (int)v).ToArray(), acts.Skip(n * width).Take(len).ToArray(), document[n], offset[n]);
            Offer((int)feature[n], ctx.Activation, ctx.Window, () => ctx);
        }
    }

    internal void Offer(int feature, float maxAct, long window, Func<FeatureContext> make)
    {
        var heap = _top[feature];
        // Priority (activation, −window): among equal activations the later window is weaker, so earlier ones are kept.
        if (heap.Count < TopK) heap.Enqueue(make(), (maxAct, -window));
        else if (heap.TryPeek(out _, out var weakest) && (maxAct, -window).CompareTo(weakest) > 0) heap.EnqueueDequeue(make(), (maxAct, -window));
    }
}

/// <summary>
/// Firing count and frequency, mean and max activation, and the top-k activating contexts of every feature of every SAE,
/// in one streamed pass (several SAEs of one model share each forward pass, which stops after the deepest hook).
/// A context is a whole context window, ranked by the feature's maximum over it.
/// </summary>
public static class FeatureScan
{
    /// <param name="checkpoint">When given: resume from it if its key matches, and save to it every <see cref="ScanCheckpoint.Every"/>
    /// (the caller writes the outputs, then deletes it).</param>
    /// <param name="documentWindows">When given, filled with the windows each document gave (in the checkpoint too): a
    /// shard's windows get the whole scan's numbers from these when shards merge.</param>
    public static (IReadOnlyList<FeatureStatistics> Stats, long Tokens, long Windows, double Seconds) Run(Model model, IReadOnlyList<SparseAutoencoder> saes,
        Corpus corpus, FeatureScanOptions options, Action<ScanProgress>? progress = null, ScanCheckpoint? checkpoint = null, Action<long>? resumed = null,
        SortedDictionary<long, int>? documentWindows = null)
    {
        int topK = options.TopK;
        float threshold = options.Threshold;
        if (topK < 0) throw new PolyEngineException($"--top-k must be 0 or positive, got {topK}");
        var stats = saes.Select(s => new FeatureStatistics(s, topK)).ToList();
        long skip = 0, windowsDone = 0;
        double secondsBefore = 0;   // spent by the runs a resumed run continues
        if (checkpoint?.Open() is var (savedWindows, file))
            using (file)
            {
                for (int i = 0; i < stats.Count; i++) stats[i].Restore(file, $"{i}.");
                if (documentWindows is not null && file.Contains("doc_ids"))
                {
                    var (ids, counts) = (file.ReadInt64("doc_ids"), file.ReadInt64("doc_windows"));
                    for (int k = 0; k < ids.Length; k++) documentWindows[ids[k]] = (int)counts[k];
                }
                skip = windowsDone = savedWindows;
                secondsBefore = ScanCheckpoint.SecondsIn(file);
                resumed?.Invoke(skip);
            }
        // Per SAE: the running maximum and its position over the current window, for the features it touched (reset after).
        var scratch = saes.Select(s => (Max: new float[s.Config.DSae], Arg: new int[s.Config.DSae], Touched: new List<int>())).ToArray();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (tokens, windows, _, _) = SaeStream.Run(model, saes, corpus, options, b =>
        {
            for (int i = 0; i < saes.Count; i++)
            {
                var st = stats[i];
                var acts = b.Acts[i];
                var (windowMax, windowArg, touched) = (scratch[i].Max, scratch[i].Arg, scratch[i].Touched);
                for (int r = 0; r < b.Windows.Count; r++)
                {
                    int len = b.Windows[r].Tokens.Length;
                    for (int t = b.FirstPosition; t < len; t++)
                    {
                        var index = acts.Indices(r * b.Seq + t);
                        var value = acts.Values(r * b.Seq + t);
                        for (int n = 0; n < index.Length; n++)
                        {
                            int j = index[n];
                            float a = value[n];
                            if (a > threshold) st.AddActivation(j, a);
                            if (windowMax[j] == 0f) touched.Add(j);
                            if (a > windowMax[j]) { windowMax[j] = a; windowArg[j] = t; }
                        }
                    }
                    st.Tokens += len - b.FirstPosition;
                    var (cw, window) = b.Windows[r];
                    if (i == 0 && documentWindows is not null) documentWindows[cw.Document] = documentWindows.GetValueOrDefault(cw.Document) + 1;
                    var tokensOfWindow = cw.Tokens;
                    foreach (int j in touched)
                    {
                        if (topK > 0 && windowMax[j] > threshold)
                        {
                            int row0 = r * b.Seq, jj = j;
                            float max = windowMax[j];
                            int arg = windowArg[j];
                            st.Offer(j, max, window, () => new FeatureContext(max, window, arg, tokensOfWindow,
                                Enumerable.Range(0, len).Select(t => acts.At(row0 + t, jj)).ToArray(), cw.Document, cw.Offset));
                        }
                        windowMax[j] = 0f;
                    }
                    touched.Clear();
                }
            }
            windowsDone += b.Windows.Count;
            checkpoint?.MaybeSave(windowsDone, w =>
            {
                ScanCheckpoint.AddSeconds(w, secondsBefore + clock.Elapsed.TotalSeconds);
                for (int i = 0; i < stats.Count; i++) stats[i].Save(w, $"{i}.");
                if (documentWindows is not null) SaveDocuments(w, documentWindows);
            });
        }, progress, skip);
        return (stats, tokens, windows, secondsBefore + clock.Elapsed.TotalSeconds);
    }

    /// <summary>The windows per document, as <c>doc_ids</c> and <c>doc_windows</c>.</summary>
    internal static void SaveDocuments(SafeTensorsWriter w, SortedDictionary<long, int> documentWindows) =>
        w.Add("doc_ids", documentWindows.Keys.ToArray(), documentWindows.Count).Add("doc_windows", documentWindows.Values.Select(v => (long)v).ToArray(), documentWindows.Count);

    /// <summary>A shard's raw statistics (<c>stats.safetensors</c>): each SAE's counts, sums, maxima and tokens, and the
    /// windows per document — what <c>polyengine merge</c> needs besides the shard's contexts table.</summary>
    public static void SaveShard(string path, IReadOnlyList<FeatureStatistics> stats, SortedDictionary<long, int> documentWindows)
    {
        var w = new SafeTensorsWriter();
        for (int i = 0; i < stats.Count; i++) stats[i].SaveCounts(w, $"{i}.");
        SaveDocuments(w, documentWindows);
        w.Save(path);
    }

    /// <summary>Reads <see cref="SaveShard"/>'s file into statistics of the same SAEs (top contexts empty), and the windows per document.</summary>
    public static SortedDictionary<long, int> LoadShard(string path, IReadOnlyList<FeatureStatistics> into)
    {
        using var f = SafeTensorsFile.Open(path);
        for (int i = 0; i < into.Count; i++) into[i].RestoreCounts(f, $"{i}.");
        var (ids, counts) = (f.ReadInt64("doc_ids"), f.ReadInt64("doc_windows"));
        var docs = new SortedDictionary<long, int>();
        for (int k = 0; k < ids.Length; k++) docs[ids[k]] = (int)counts[k];
        return docs;
    }
}

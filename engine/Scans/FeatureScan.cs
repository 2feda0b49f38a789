using PolyEngine.Formats;
using PolyEngine.Sae;

namespace PolyEngine.Scans;

/// <summary>One of a feature's top activating contexts: the whole context window, the feature's activation at each of its
/// tokens, and the position of the maximum.</summary>
public sealed record FeatureContext(float Activation, long Window, int Position, int[] Tokens, float[] TokenActivations);

/// <summary>Per-feature statistics of one SAE over a corpus — the data Neuronpedia exports.</summary>
public sealed class FeatureStatistics
{
    readonly PriorityQueue<FeatureContext, (float, long)>[] _top;   // min-heaps: the weakest kept context on top

    public FeatureStatistics(SparseAutoencoder sae, int topK)
    {
        Sae = sae;
        TopK = topK;
        int f = sae.Config.DSae;
        FireCounts = new long[f];
        ActivationSums = new double[f];
        MaxActivations = new float[f];
        _top = Enumerable.Range(0, f).Select(_ => new PriorityQueue<FeatureContext, (float, long)>()).ToArray();
    }

    public SparseAutoencoder Sae { get; }
    public int TopK { get; }
    public long Tokens { get; internal set; }
    public long[] FireCounts { get; }
    /// <summary>Sum of the activations where the feature fires (mean = sum / fire count).</summary>
    public double[] ActivationSums { get; }
    public float[] MaxActivations { get; }

    /// <summary>The feature's top contexts, strongest first (ties: earlier window first).</summary>
    public IReadOnlyList<FeatureContext> TopContexts(int feature) =>
        _top[feature].UnorderedItems.Select(x => x.Element).OrderByDescending(c => c.Activation).ThenBy(c => c.Window).ToList();

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
    public static (IReadOnlyList<FeatureStatistics> Stats, long Tokens, long Windows, double Seconds) Run(Model model, IReadOnlyList<SparseAutoencoder> saes,
        Corpus corpus, int topK, float threshold = 0f, int? contextSize = null, int batch = 8, long? maxTokens = null, Action<long, double>? progress = null)
    {
        if (topK < 0) throw new PolyEngineException($"--top-k must be 0 or positive, got {topK}");
        var stats = saes.Select(s => new FeatureStatistics(s, topK)).ToList();
        var (tokens, windows, _, seconds) = SaeStream.Run(model, saes, corpus, contextSize, batch, maxTokens, b =>
        {
            for (int i = 0; i < saes.Count; i++)
            {
                var st = stats[i];
                int f = saes[i].Config.DSae;
                var acts = b.Acts[i];
                for (int r = 0; r < b.Windows.Count; r++)
                {
                    var windowMax = new float[f];
                    var windowArg = new int[f];
                    for (int t = b.FirstPosition; t < b.Seq; t++)
                    {
                        var row = acts.AsSpan((r * b.Seq + t) * f, f);
                        for (int j = 0; j < f; j++)
                        {
                            float a = row[j];
                            if (a > threshold)
                            {
                                st.FireCounts[j]++;
                                st.ActivationSums[j] += a;
                                if (a > st.MaxActivations[j]) st.MaxActivations[j] = a;
                            }
                            if (a > windowMax[j]) { windowMax[j] = a; windowArg[j] = t; }
                        }
                    }
                    st.Tokens += b.Seq - b.FirstPosition;
                    if (topK == 0) continue;
                    var (tokensOfWindow, _, window) = b.Windows[r];
                    for (int j = 0; j < f; j++)
                    {
                        if (windowMax[j] <= threshold) continue;
                        int rr = r, jj = j, seq = b.Seq;
                        st.Offer(j, windowMax[j], window, () => new FeatureContext(windowMax[jj], window, windowArg[jj], tokensOfWindow,
                            Enumerable.Range(0, seq).Select(t => acts[(rr * seq + t) * f + jj]).ToArray()));
                    }
                }
            }
        }, progress);
        return (stats, tokens, windows, seconds);
    }
}

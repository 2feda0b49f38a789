using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Kernels;
using PolyEngine.Sae;

namespace PolyEngine.Scans;

/// <summary>One batch of context windows with every SAE's feature activations.</summary>
/// <param name="Windows">The windows (token ids, document index, window index); a window may be shorter than
/// <paramref name="Seq"/> (right-padded in the pass): only positions below its length are real.</param>
/// <param name="Acts">Per SAE, the firing features of each of the windows·seq rows (row r·seq + t is window r, position t):
/// feature index and activation, ascending.</param>
/// <param name="FirstPosition">1 when a BOS was prepended (position 0 is not corpus text), else 0.</param>
public sealed record SaeBatch(IReadOnlyList<(int[] Tokens, long Document, long Window)> Windows, IReadOnlyList<SparseRows> Acts, int Seq, int FirstPosition);

/// <summary>
/// Streams a corpus through a model and its SAEs: context windows of the SAEs' context_size (BOS as the first SAE's
/// prepend_bos says), batched, one forward pass per batch stopping after the deepest SAE hook (no LM head), every SAE
/// encoded at its hook on the model's backend (<see cref="SparseAutoencoder.EncodeSparse"/>: on a GPU only the firing
/// features reach the host). The shared front half of every SAE scan. Windows of different lengths
/// share a batch, right-padded: attention is causal, so padding after a window's last token changes none of its
/// positions. Results do not depend on how windows are batched (each row is computed alone), so a resumed run
/// (<c>skipWindows</c>) gives identical output.
/// </summary>
public static class SaeStream
{
    public static (long Tokens, long Windows, long Documents, double Seconds) Run(Model model, IReadOnlyList<SparseAutoencoder> saes, Corpus corpus,
        int? contextSize, int batchSize, long? maxTokens, Action<SaeBatch> onBatch, Action<long, double>? progress = null, long skipWindows = 0)
    {
        if (saes.Count == 0) throw new PolyEngineException("give at least one --sae");
        if (batchSize <= 0) throw new PolyEngineException("--batch must be positive");
        foreach (var s in saes) s.CheckAgainst(model.Spec);
        var first = saes[0].Config;
        int context = Math.Min(contextSize ?? first.ContextSize ?? 128, model.Spec.NCtx);
        int? bos = first.PrependBos ? model.Spec.BosTokenId ?? throw new PolyEngineException($"{first.Folder}: prepend_bos is true but the model's config has no bos_token_id") : null;
        var hooks = saes.Select(s => s.Config.Hook).Distinct().ToArray();
        int? stop = hooks.All(h => h.IsBlock) ? hooks.Max(h => h.Layer) : null;
        long tokens = 0, windows = 0, documents = 0;
        var sw = Stopwatch.StartNew();
        var acts = new SparseRows[saes.Count];
        int passRows = 0;
        var taps = saes.Select((sae, i) => new DeviceTap(sae.Config.Hook, x => acts[i] = sae.EncodeSparse(x, passRows))).ToArray();

        void Process(List<(int[] Tokens, long Document, long Window)> batch)
        {
            if (batch.Count == 0) return;
            int seq = batch.Max(w => w.Tokens.Length);
            var ids = new int[batch.Count * seq];   // right-padded with token 0
            for (int r = 0; r < batch.Count; r++) batch[r].Tokens.CopyTo(ids, r * seq);
            passRows = batch.Count * seq;
            model.Run(ids, batch.Count, seq, new RunOptions { DeviceTaps = taps, StopAtLayer = stop, Logits = LogitsMode.None });
            int firstPos = bos is null ? 0 : 1;
            onBatch(new SaeBatch(batch, acts.ToArray(), seq, firstPos));
            tokens += batch.Sum(w => (long)(w.Tokens.Length - firstPos));
            windows += batch.Count;
            progress?.Invoke(tokens, sw.Elapsed.TotalSeconds);
        }

        var rows = new List<(int[] Tokens, long Document, long Window)>();
        long windowIndex = 0, queued = 0;
        foreach (var (w, doc) in corpus.Windows(context, bos))
        {
            long body = w.Length - (bos is null ? 0 : 1);
            if (maxTokens is long max && tokens + queued + body > max) break;
            documents = Math.Max(documents, doc + 1);
            if (windowIndex < skipWindows)
            {
                // Counted by an earlier, interrupted run (resume): read past it without running the model.
                windowIndex++;
                windows++;
                tokens += body;
                continue;
            }
            if (rows.Count == batchSize)
            {
                Process(rows);
                rows = [];
                queued = 0;
            }
            rows.Add((w, doc, windowIndex++));
            queued += body;
        }
        Process(rows);
        return (tokens, windows, documents, sw.Elapsed.TotalSeconds);
    }
}

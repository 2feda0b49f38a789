using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Kernels;

namespace PolyEngine.Scans;

/// <summary>A context window in a scan: the window as the corpus cut it, and its index in the scan's order.</summary>
public readonly record struct ScanWindow(CorpusWindow Window, long Index)
{
    public int[] Tokens => Window.Tokens;
    public long Document => Window.Document;
}

/// <summary>One batch of context windows with every SAE's feature activations.</summary>
/// <param name="Windows">The windows; a window may be shorter than <paramref name="Seq"/> (right-padded in the pass):
/// only positions below its length are real.</param>
/// <param name="Acts">Per SAE, the firing features of each of the windows·seq rows (row r·seq + t is window r, position t):
/// feature index and activation, ascending.</param>
/// <param name="FirstPosition">1 when a BOS was prepended (position 0 is not corpus text), else 0.</param>
public sealed record SaeBatch(IReadOnlyList<ScanWindow> Windows, IReadOnlyList<SparseRows> Acts, int Seq, int FirstPosition);

/// <summary>
/// Streams a corpus through a model and its SAEs: context windows of the SAEs' context_size (BOS as
/// <see cref="CorpusScanOptions.PrependBos"/> or the SAEs' prepend_bos say), batched, one forward pass per batch stopping
/// after the deepest SAE hook (no LM head), every SAE encoded at its hook on the model's backend
/// (<see cref="SparseAutoencoder.EncodeSparse"/>: on a GPU only the firing features reach the host). The shared front half
/// of every SAE scan. Windows of different lengths share a batch, right-padded: attention is causal, so padding after a
/// window's last token changes none of its positions. Results do not depend on how windows are batched (each row is
/// computed alone), so a resumed run (<c>skipWindows</c>) gives identical output.
/// </summary>
public static class SaeStream
{
    /// <summary>The BOS id the scan prepends (null: none) and why, in words.</summary>
    public static (int? Bos, string Reason) ResolveBos(Model model, IReadOnlyList<SparseAutoencoder> saes, bool? choice)
    {
        var (prepend, reason) = Tokenization.Bos.Resolve(choice, saes.Select(s => (s.Config.Folder, s.Config.PrependBos)), false, "no SAE");
        return (prepend ? model.BosTokenId : null, reason);
    }

    /// <summary>The context size the scan uses and where it comes from: --context-size (at most n_ctx), else the first SAE's
    /// context_size (cut to n_ctx, which is said), else 128 (cut likewise).</summary>
    public static (int Context, string Source) ContextSize(Model model, IReadOnlyList<SparseAutoencoder> saes, int? option)
    {
        int nCtx = model.Spec.NCtx;
        if (option is int given)
        {
            if (given < 1) throw new PolyEngineException($"--context-size {given} is too small; give at least 1 (2 with a BOS)");
            if (given > nCtx) throw new PolyEngineException($"--context-size {given} is longer than the model's context n_ctx = {nCtx}; give at most {nCtx}");
            return (given, "--context-size");
        }
        var (context, source) = saes[0].Config.ContextSize is int c ? (c, $"{saes[0].Config.Folder}/cfg.json context_size") : (128, "the default");
        if (context < 1) throw new PolyEngineException($"context size {context} from {source} is too small; give --context-size");
        return context > nCtx ? (nCtx, $"{source} is {context}, cut to the model's n_ctx") : (context, source);
    }

    public static (long Tokens, long Windows, long Documents, double Seconds) Run(Model model, IReadOnlyList<SparseAutoencoder> saes, Corpus corpus,
        CorpusScanOptions options, Action<SaeBatch> onBatch, Action<ScanProgress>? progress = null, long skipWindows = 0)
    {
        if (saes.Count == 0) throw new PolyEngineException("give at least one --sae");
        if (options.Batch <= 0) throw new PolyEngineException($"--batch must be positive, got {options.Batch}");
        foreach (var s in saes) s.CheckAgainst(model.Spec);
        int context = ContextSize(model, saes, options.ContextSize).Context;
        var (bos, _) = ResolveBos(model, saes, options.PrependBos);
        int firstPos = bos is null ? 0 : 1;
        var hooks = saes.Select(s => s.Config.Hook).Distinct().ToArray();
        int? stop = hooks.All(h => h.IsBlock) ? hooks.Max(h => h.Layer) : null;
        long tokens = 0, windows = 0, documents = 0, tokensAtStart = 0, lastDocument = -1;
        double fraction = 0, fractionAtStart = 0;
        var sw = Stopwatch.StartNew();
        var acts = new SparseRows[saes.Count];
        int passRows = 0;
        var taps = saes.Select((sae, i) => new DeviceTap(sae.Config.Hook, x => acts[i] = sae.EncodeSparse(x, passRows))).ToArray();

        int vocab = model.Spec.DVocab;
        void Process(List<ScanWindow> batch)
        {
            if (batch.Count == 0) return;
            foreach (var w in batch)   // named by corpus file and place, not by batch row
                for (int t = firstPos; t < w.Tokens.Length; t++)
                    if ((uint)w.Tokens[t] >= (uint)vocab)
                    {
                        var (file, doc) = corpus.Locate(w.Document);
                        throw new PolyEngineException($"--corpus {file}: token id {w.Tokens[t]} (document {doc}, token {w.Window.Offset + t - firstPos}) " +
                            $"is outside the vocabulary 0..{vocab - 1} of this model; the corpus was tokenized for another model");
                    }
            int seq = batch.Max(w => w.Tokens.Length);
            var ids = new int[batch.Count * seq];   // right-padded with token 0
            for (int r = 0; r < batch.Count; r++) batch[r].Tokens.CopyTo(ids, r * seq);
            passRows = batch.Count * seq;
            model.Run(ids, batch.Count, seq, new RunOptions { DeviceTaps = taps, StopAtLayer = stop, Logits = LogitsMode.None });
            onBatch(new SaeBatch(batch, acts.ToArray(), seq, firstPos));
            tokens += batch.Sum(w => (long)(w.Tokens.Length - firstPos));
            windows += batch.Count;
            fraction = Math.Max(batch[^1].Window.Progress, options.MaxTokens is long max ? tokens / (double)Math.Max(1, max) : 0);
            progress?.Invoke(new ScanProgress(tokens, windows, Math.Min(1, fraction), tokens - tokensAtStart, sw.Elapsed.TotalSeconds, fractionAtStart));
        }

        var rows = new List<ScanWindow>();
        long windowIndex = 0, queued = 0;
        var skipReport = Stopwatch.StartNew();
        foreach (var w in corpus.Windows(context, bos))
        {
            long body = w.Tokens.Length - firstPos;
            if (options.MaxTokens is long max && tokens + queued + body > max) break;
            if (w.Document != lastDocument) (documents, lastDocument) = (documents + 1, w.Document);   // documents with a window (a shard's own)
            if (windowIndex < skipWindows)
            {
                // Counted by an earlier, interrupted run (resume): read past it without running the model.
                windowIndex++;
                windows++;
                tokens += body;
                tokensAtStart = tokens;
                fractionAtStart = Math.Max(w.Progress, options.MaxTokens is long m ? tokens / (double)Math.Max(1, m) : 0);
                if (skipReport.ElapsedMilliseconds >= 500)   // reading past a long prefix (a text corpus is tokenized again) takes a while
                {
                    skipReport.Restart();
                    progress?.Invoke(new ScanProgress(tokens, windows, Math.Min(1, fractionAtStart), 0, 0, fractionAtStart, Skipping: true));
                }
                sw.Restart();   // this run's pace starts with its own first window
                continue;
            }
            if (rows.Count == options.Batch)
            {
                Process(rows);
                rows = [];
                queued = 0;
            }
            rows.Add(new ScanWindow(w, windowIndex++));
            queued += body;
        }
        Process(rows);
        return (tokens, windows, documents, sw.Elapsed.TotalSeconds);
    }
}

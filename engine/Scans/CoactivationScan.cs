using System.Diagnostics;
using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Hooks;
using PolyEngine.Sae;

namespace PolyEngine.Scans;

/// <summary>What a unit of co-occurrence is: a token, N consecutive tokens of a context window, or a whole document.</summary>
public readonly record struct CoactivationWindow(int Tokens, bool Document)
{
    public static readonly CoactivationWindow Token = new(1, false);
    public static readonly CoactivationWindow WholeDocument = new(0, true);

    public static CoactivationWindow Parse(string s) => s switch
    {
        "token" => Token,
        "document" => WholeDocument,
        _ when int.TryParse(s, out int n) && n >= 1 => new(n, false),
        _ => throw new PolyEngineException($"--window '{s}' is not token, document or a positive number of tokens"),
    };

    public override string ToString() => Document ? "document" : Tokens == 1 ? "token" : Tokens.ToString();
}

public sealed record CoactivationOptions
{
    public CoactivationWindow Window { get; init; } = CoactivationWindow.Token;
    /// <summary>A feature fires when its activation is strictly above this.</summary>
    public float Threshold { get; init; }
    /// <summary>Tokens per context window (default: the first SAE's context_size, else 128).</summary>
    public int? ContextSize { get; init; }
    public int Batch { get; init; } = 8;
    /// <summary>Stop after this many tokens (null: the whole corpus).</summary>
    public long? MaxTokens { get; init; }
}

/// <summary>The result of a scan: one counter per SAE, and what was counted.</summary>
public sealed record CoactivationResult(IReadOnlyList<(SparseAutoencoder Sae, CoactivationCounter Counter)> Counters, long Tokens, long Windows,
    long Documents, double Seconds);

/// <summary>
/// Streams a corpus through the model (stopping after the deepest SAE hook, no LM head) and every SAE, and counts
/// co-occurring features per unit. Tokens of one context window run as a batch row; a prepended BOS is not counted.
/// </summary>
public static class CoactivationScan
{
    public static CoactivationResult Run(Model model, IReadOnlyList<SparseAutoencoder> saes, Corpus corpus, CoactivationOptions options,
        Action<long, double>? progress = null)
    {
        if (saes.Count == 0) throw new PolyEngineException("give at least one --sae");
        foreach (var s in saes) s.CheckAgainst(model.Spec);
        var first = saes[0].Config;
        int context = options.ContextSize ?? first.ContextSize ?? 128;
        context = Math.Min(context, model.Spec.NCtx);
        int? bos = first.PrependBos ? model.Spec.BosTokenId ?? throw new PolyEngineException($"{first.Folder}: prepend_bos is true but the model's config has no bos_token_id") : null;
        var hooks = saes.Select(s => s.Config.Hook).Distinct().ToArray();
        int? stop = hooks.All(h => h.IsBlock) ? hooks.Max(h => h.Layer) : null;
        var counters = saes.Select(s => (s, new CoactivationCounter(s.Config.DSae))).ToList();
        var pending = saes.Select(_ => new SortedSet<int>()).ToArray();   // active set of the open unit, per SAE
        int pendingTokens = 0;
        long pendingDoc = -1, tokens = 0, windows = 0, documents = 0;
        var sw = Stopwatch.StartNew();

        void Flush()
        {
            for (int i = 0; i < counters.Count; i++)
            {
                if (pendingTokens > 0) counters[i].Item2.AddUnit(pending[i].ToArray());
                pending[i].Clear();
            }
            pendingTokens = 0;
        }

        void Process(List<(int[] Tokens, long Document)> batch)
        {
            if (batch.Count == 0) return;
            int seq = batch[0].Tokens.Length;
            var ids = batch.SelectMany(w => w.Tokens).ToArray();
            var result = model.Run(ids, batch.Count, seq, new RunOptions { Hooks = hooks, StopAtLayer = stop, Logits = LogitsMode.None });
            var acts = saes.Select(s => SaeHooks.Encode(s, result).Encoding.FeatureActs).ToArray();   // no decode: counts need acts only
            for (int r = 0; r < batch.Count; r++)
            {
                if (options.Window.Document && batch[r].Document != pendingDoc) { Flush(); pendingDoc = batch[r].Document; }
                for (int t = bos is null ? 0 : 1; t < seq; t++)
                {
                    for (int i = 0; i < saes.Count; i++)
                    {
                        int f = saes[i].Config.DSae;
                        var row = acts[i].AsSpan((r * seq + t) * f, f);
                        for (int j = 0; j < f; j++) if (row[j] > options.Threshold) pending[i].Add(j);
                    }
                    pendingTokens++;
                    tokens++;
                    if (!options.Window.Document && pendingTokens == options.Window.Tokens) Flush();
                }
                if (!options.Window.Document) Flush();   // a window of N tokens never spans two context windows
                windows++;
            }
            progress?.Invoke(tokens, sw.Elapsed.TotalSeconds);
        }

        var batchRows = new List<(int[] Tokens, long Document)>();
        foreach (var w in corpus.Windows(context, bos))
        {
            if (options.MaxTokens is long max && tokens + batchRows.Sum(b => b.Tokens.Length) >= max) break;
            documents = Math.Max(documents, w.Document + 1);
            if (batchRows.Count > 0 && (batchRows[0].Tokens.Length != w.Tokens.Length || batchRows.Count == options.Batch))
            {
                Process(batchRows);
                batchRows = [];
            }
            batchRows.Add(w);
        }
        Process(batchRows);
        Flush();
        return new CoactivationResult(counters, tokens, windows, documents, sw.Elapsed.TotalSeconds);
    }
}

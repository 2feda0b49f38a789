using System.Runtime.InteropServices;
using PolyEngine.Formats;
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
/// Counts co-occurring features per unit over a corpus streamed through the model and its SAEs (<see cref="SaeStream"/>);
/// a prepended BOS is not counted.
/// </summary>
public static class CoactivationScan
{
    /// <param name="checkpoint">When given: resume from it if its key matches, and save to it every <see cref="ScanCheckpoint.Every"/>
    /// (the caller writes the outputs, then deletes it).</param>
    public static CoactivationResult Run(Model model, IReadOnlyList<SparseAutoencoder> saes, Corpus corpus, CoactivationOptions options,
        Action<long, double>? progress = null, ScanCheckpoint? checkpoint = null, Action<long>? resumed = null)
    {
        var counters = saes.Select(s => (s, new CoactivationCounter(s.Config.DSae))).ToList();
        var pending = saes.Select(_ => new SortedSet<int>()).ToArray();   // active set of the open unit, per SAE
        int pendingTokens = 0;
        long pendingDoc = -1, skip = 0, windowsDone = 0;
        if (checkpoint?.Open() is var (savedWindows, file))
            using (file)
            {
                for (int i = 0; i < saes.Count; i++)
                {
                    int f = saes[i].Config.DSae;
                    var pairs = MemoryMarshal.Cast<byte, uint>(file.Bytes($"{i}.pairs")).ToArray();
                    if (pairs.LongLength != CoactivationCounter.PairCount(f))
                        throw new PolyEngineException($"{checkpoint.Path}: checkpoint counters do not match the SAE's width; delete it or use --overwrite");
                    counters[i] = (saes[i], CoactivationCounter.Restore(f, pairs, file.ReadInt64($"{i}.marginals").Select(v => (ulong)v).ToArray(),
                        (ulong)file.ReadInt64($"{i}.units")[0]));
                    pending[i].UnionWith(file.ReadInt64($"{i}.pending").Select(v => (int)v));
                }
                (pendingTokens, pendingDoc) = (int.Parse(file.Metadata["pending_tokens"]), long.Parse(file.Metadata["pending_document"]));
                skip = windowsDone = savedWindows;
                resumed?.Invoke(skip);
            }

        void Flush()
        {
            for (int i = 0; i < counters.Count; i++)
            {
                if (pendingTokens > 0) counters[i].Item2.AddUnit(pending[i].ToArray());
                pending[i].Clear();
            }
            pendingTokens = 0;
        }

        var (tokens, windows, documents, seconds) = SaeStream.Run(model, saes, corpus, options.ContextSize, options.Batch, options.MaxTokens, batch =>
        {
            for (int r = 0; r < batch.Windows.Count; r++)
            {
                if (options.Window.Document && batch.Windows[r].Document != pendingDoc) { Flush(); pendingDoc = batch.Windows[r].Document; }
                for (int t = batch.FirstPosition, len = batch.Windows[r].Tokens.Length; t < len; t++)
                {
                    for (int i = 0; i < saes.Count; i++)
                    {
                        int f = saes[i].Config.DSae;
                        var row = batch.Acts[i].AsSpan((r * batch.Seq + t) * f, f);
                        for (int j = 0; j < f; j++) if (row[j] > options.Threshold) pending[i].Add(j);
                    }
                    pendingTokens++;
                    if (!options.Window.Document && pendingTokens == options.Window.Tokens) Flush();
                }
                if (!options.Window.Document) Flush();   // a window of N tokens never spans two context windows
            }
            windowsDone += batch.Windows.Count;
            checkpoint?.MaybeSave(windowsDone, w =>
            {
                w.AddMetadata("pending_document", pendingDoc.ToString()).AddMetadata("pending_tokens", pendingTokens.ToString());
                for (int i = 0; i < counters.Count; i++)
                {
                    var c = counters[i].Item2;
                    var pairs = c.Pairs.ToArray();
                    w.AddRaw($"{i}.pairs", SafeTensorDType.U32, [pairs.LongLength], MemoryMarshal.AsBytes(pairs.AsSpan()).ToArray(), pairs.LongLength);
                    w.Add($"{i}.marginals", c.Marginals.ToArray().Select(v => (long)v).ToArray(), c.Features);
                    w.Add($"{i}.units", [(long)c.Units], 1);
                    w.Add($"{i}.pending", pending[i].Select(v => (long)v).ToArray(), pending[i].Count);
                }
            });
        }, progress, skip);
        Flush();
        return new CoactivationResult(counters, tokens, windows, documents, seconds);
    }
}

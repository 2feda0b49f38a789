using PolyEngine.Formats;

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

public sealed record CoactivationOptions : CorpusScanOptions
{
    public CoactivationWindow Window { get; init; } = CoactivationWindow.Token;
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
        Action<ScanProgress>? progress = null, ScanCheckpoint? checkpoint = null, Action<long>? resumed = null)
    {
        var counters = saes.Select(s => (s, new CoactivationCounter(s.Config.DSae))).ToList();
        var pending = saes.Select(s => new ActiveSet(s.Config.DSae)).ToArray();   // active set of the open unit, per SAE
        int pendingTokens = 0;
        long pendingDoc = -1, skip = 0, windowsDone = 0;
        double secondsBefore = 0;   // spent by the runs a resumed run continues
        if (checkpoint?.Open() is var (savedWindows, file))
            using (file)
            {
                for (int i = 0; i < saes.Count; i++)
                {
                    int f = saes[i].Config.DSae;
                    string name = $"{i}.pairs";
                    if (file.Info(name).ElementCount != CoactivationCounter.PairCount(f))
                        throw new PolyEngineException($"{checkpoint.Path}: checkpoint counters do not match the SAE's width; delete it or use --overwrite");
                    counters[i].Item2.Restore((first, dst) => file.CopyU32(name, first, dst),
                        file.ReadInt64($"{i}.marginals").Select(v => (ulong)v).ToArray(), (ulong)file.ReadInt64($"{i}.units")[0]);
                    foreach (long j in file.ReadInt64($"{i}.pending")) pending[i].Add((int)j);
                }
                (pendingTokens, pendingDoc) = (int.Parse(file.Metadata["pending_tokens"]), long.Parse(file.Metadata["pending_document"]));
                secondsBefore = ScanCheckpoint.SecondsIn(file);
                skip = windowsDone = savedWindows;
                resumed?.Invoke(skip);
            }

        void Flush()
        {
            for (int i = 0; i < counters.Count; i++)
            {
                if (pendingTokens > 0) counters[i].Item2.AddUnit(pending[i].Sorted());
                pending[i].Clear();
            }
            pendingTokens = 0;
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (tokens, windows, documents, _) = SaeStream.Run(model, saes, corpus, options, batch =>
        {
            for (int r = 0; r < batch.Windows.Count; r++)
            {
                if (options.Window.Document && batch.Windows[r].Document != pendingDoc) { Flush(); pendingDoc = batch.Windows[r].Document; }
                for (int t = batch.FirstPosition, len = batch.Windows[r].Tokens.Length; t < len; t++)
                {
                    for (int i = 0; i < saes.Count; i++)
                    {
                        var index = batch.Acts[i].Indices(r * batch.Seq + t);
                        var value = batch.Acts[i].Values(r * batch.Seq + t);
                        for (int n = 0; n < index.Length; n++) if (value[n] > options.Threshold) pending[i].Add(index[n]);
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
                ScanCheckpoint.AddSeconds(w, secondsBefore + clock.Elapsed.TotalSeconds);
                for (int i = 0; i < counters.Count; i++)
                {
                    var c = counters[i].Item2;
                    w.Add($"{i}.pairs", c.PairChunks, CoactivationCounter.PairCount(c.Features));
                    w.Add($"{i}.marginals", c.Marginals.ToArray().Select(v => (long)v).ToArray(), c.Features);
                    w.Add($"{i}.units", [(long)c.Units], 1);
                    var open = pending[i].Sorted();
                    w.Add($"{i}.pending", open.ToArray().Select(v => (long)v).ToArray(), open.Length);
                }
            });
        }, progress, skip);
        Flush();
        return new CoactivationResult(counters, tokens, windows, documents, secondsBefore + clock.Elapsed.TotalSeconds);
    }
}

/// <summary>The distinct features active in an open unit: a membership bitmap beside the list, so adding is O(1) and
/// clearing costs only what was added.</summary>
sealed class ActiveSet(int features)
{
    readonly bool[] _member = new bool[features];
    readonly List<int> _list = [];

    public void Add(int feature)
    {
        if (_member[feature]) return;
        _member[feature] = true;
        _list.Add(feature);
    }

    /// <summary>The members, ascending (sorted in place; valid until the next change).</summary>
    public ReadOnlySpan<int> Sorted()
    {
        _list.Sort();
        return System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_list);
    }

    public void Clear()
    {
        foreach (int j in _list) _member[j] = false;
        _list.Clear();
    }
}

using System.Runtime.InteropServices;
using System.Text.Json;
using PolyEngine.Formats;

namespace PolyEngine.Scans;

/// <summary>
/// A co-activation scan's state at a batch boundary, saved atomically to <c>checkpoint.safetensors</c> in the output folder
/// every few seconds: each SAE's counters and the open unit (document mode), how many windows were done, and a key of
/// the run's inputs and options. A rerun with the same key continues from it and ends with identical output.
/// </summary>
public sealed class CoactivationCheckpoint
{
    public required string Path { get; init; }
    public required string RunKey { get; init; }
    public TimeSpan Every { get; init; } = TimeSpan.FromSeconds(30);

    internal sealed record State(long Windows, long PendingDocument, int PendingTokens, int[][] Pending, CoactivationCounter[] Counters);

    public const string FileName = "checkpoint.safetensors";

    /// <summary>The saved key, or null when there is no checkpoint.</summary>
    public static string? KeyIn(string outDir)
    {
        string p = System.IO.Path.Combine(outDir, FileName);
        if (!File.Exists(p)) return null;
        using var f = SafeTensorsFile.Open(p);
        return f.Metadata.GetValueOrDefault("run_key");
    }

    internal void Save(State s)
    {
        var w = new SafeTensorsWriter()
            .AddMetadata("run_key", RunKey).AddMetadata("windows", s.Windows.ToString())
            .AddMetadata("pending_document", s.PendingDocument.ToString()).AddMetadata("pending_tokens", s.PendingTokens.ToString())
            .AddMetadata("pending", JsonSerializer.Serialize(s.Pending));
        for (int i = 0; i < s.Counters.Length; i++)
        {
            var c = s.Counters[i];
            var pairs = c.Pairs.ToArray();
            w.AddRaw($"{i}.pairs", SafeTensorDType.U32, [pairs.LongLength], MemoryMarshal.AsBytes(pairs.AsSpan()).ToArray(), pairs.LongLength);
            w.Add($"{i}.marginals", c.Marginals.ToArray().Select(v => (long)v).ToArray(), c.Features);
            w.Add($"{i}.units", [(long)c.Units], 1);
        }
        w.Save(Path);
    }

    internal State? Load(int[] features)
    {
        if (!File.Exists(Path)) return null;
        using var f = SafeTensorsFile.Open(Path);
        if (f.Metadata.GetValueOrDefault("run_key") != RunKey) return null;
        var counters = new CoactivationCounter[features.Length];
        for (int i = 0; i < features.Length; i++)
        {
            var pairs = MemoryMarshal.Cast<byte, uint>(f.Bytes($"{i}.pairs")).ToArray();
            if (pairs.LongLength != CoactivationCounter.PairCount(features[i]))
                throw new PolyEngineException($"{Path}: checkpoint counters do not match the SAE's width; delete it or use --overwrite");
            counters[i] = CoactivationCounter.Restore(features[i], pairs, f.ReadInt64($"{i}.marginals").Select(v => (ulong)v).ToArray(), (ulong)f.ReadInt64($"{i}.units")[0]);
        }
        return new State(long.Parse(f.Metadata["windows"]), long.Parse(f.Metadata["pending_document"]), int.Parse(f.Metadata["pending_tokens"]),
            JsonSerializer.Deserialize<int[][]>(f.Metadata["pending"])!, counters);
    }

    public void Delete()
    {
        if (File.Exists(Path)) File.Delete(Path);
    }
}

using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PolyEngine.Formats;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>One row of a pair table: an unordered feature pair (a &lt; b) of one SAE and its statistics.</summary>
public sealed class PairRow
{
    [JsonPropertyName("sae")] public string Sae { get; set; } = "";
    [JsonPropertyName("feature_a")] public int FeatureA { get; set; }
    [JsonPropertyName("feature_b")] public int FeatureB { get; set; }
    [JsonPropertyName("count_a")] public long CountA { get; set; }
    [JsonPropertyName("count_b")] public long CountB { get; set; }
    [JsonPropertyName("count_ab")] public long CountAB { get; set; }
    [JsonPropertyName("jaccard")] public double Jaccard { get; set; }
    [JsonPropertyName("pmi")] public double Pmi { get; set; }
    [JsonPropertyName("lift")] public double Lift { get; set; }
}

/// <summary>
/// Writes a co-activation scan to a folder: <c>pairs.parquet</c> (or .csv) — each feature's top-N partners by count, or
/// every co-occurring pair with <c>top = null</c> —, <c>coactivation.safetensors</c> with the full triangle per SAE
/// (<c>{sae}.pairs</c> U32 [F·(F−1)/2], index a·F − a·(a+1)/2 + (b − a − 1); <c>{sae}.marginals</c> I64 [F]) for dense
/// consumers, and <c>manifest.json</c> (inputs with hashes, options, device, timings, counts). Every file atomically.
/// </summary>
public static class CoactivationWriter
{
    /// <summary>The pair rows of one SAE, in memory (for summaries and tests; <see cref="Write"/> streams them instead):
    /// every co-occurring pair, or each feature's <paramref name="top"/> partners.</summary>
    public static IReadOnlyList<PairRow> Rows(string sae, CoactivationCounter c, int? top) =>
        Pairs(c, top).Select(p =>
        {
            var s = Stats(c, p.A, p.B);
            return new PairRow { Sae = sae, FeatureA = p.A, FeatureB = p.B, CountA = (long)s.CountA, CountB = (long)s.CountB, CountAB = (long)s.CountAB,
                Jaccard = s.Jaccard, Pmi = s.Pmi, Lift = s.Lift };
        }).ToList();

    static PairStats Stats(CoactivationCounter c, int a, int b) => PairStats.Of(a, b, c.Marginals[a], c.Marginals[b], c.Count(a, b), c.Units);

    /// <summary>True when <paramref name="top"/> keeps every partner anyway (null, or at least F − 1): the table is every
    /// co-occurring pair, streamed row by row of the triangle, with no heaps.</summary>
    static bool All(int? top, int features) => top is null || top >= features - 1;

    /// <summary>The bytes the top-N selection holds while it runs (heaps of N per feature and the chosen pairs); 0 for all pairs.</summary>
    public static long SelectionBytes(int? top, int features) => All(top, features) ? 0 : (long)features * top!.Value * (4 + 4 + 16);

    /// <summary>The pairs of the table, a &lt; b, in order: every co-occurring pair, or each feature's <paramref name="top"/>
    /// partners by count (ties: the lower id) — a pair kept by either of its features once.</summary>
    static IEnumerable<(int A, int B)> Pairs(CoactivationCounter c, int? top)
    {
        int f = c.Features;
        if (All(top, f))
        {
            var partners = new List<int>();
            for (int a = 0; a < f - 1; a++)
            {
                NonZero(c, a, partners);
                foreach (int b in partners) yield return (a, b);
            }
            yield break;
        }
        var heaps = new TopHeaps<uint>(f, top!.Value);
        for (int a = 0; a < f - 1; a++)
        {
            var row = c.Row(a);
            for (int b = a + 1; b < f; b++)
            {
                uint n = row[b - a - 1];
                if (n == 0) continue;
                if (heaps.Admits(a, n)) heaps.Offer(a, n, b);
                if (heaps.Admits(b, n)) heaps.Offer(b, n, a);
            }
        }
        var chosen = new SortedSet<(int, int)>();
        for (int a = 0; a < f; a++)
            foreach (var (b, _) in heaps.Sorted(a)) chosen.Add((Math.Min(a, b), Math.Max(a, b)));
        foreach (var p in chosen) yield return p;
    }

    /// <summary>The partners b &gt; a that co-occur with a (an iterator cannot hold the row's span across its yields).</summary>
    static void NonZero(CoactivationCounter c, int a, List<int> partners)
    {
        partners.Clear();
        var row = c.Row(a);
        for (int j = 0; j < row.Length; j++)
            if (row[j] > 0) partners.Add(a + 1 + j);
    }

    /// <summary>The pair table of every SAE as row groups of at most <paramref name="groupRows"/> rows, produced lazily.</summary>
    static IEnumerable<ColumnTable> PairGroups(IReadOnlyList<string> names, IReadOnlyList<CoactivationCounter> counters, int? top, int groupRows = 1 << 20)
    {
        ColumnTable? group = null;
        for (int i = 0; i < counters.Count; i++)
        {
            var c = counters[i];
            foreach (var (a, b) in Pairs(c, top))
            {
                group ??= NewGroup();
                var s = Stats(c, a, b);
                ((TextColumn)group.Columns[0]).Add(names[i]);
                ((TableColumn<int>)group.Columns[1]).Add(a);
                ((TableColumn<int>)group.Columns[2]).Add(b);
                ((TableColumn<long>)group.Columns[3]).Add((long)s.CountA);
                ((TableColumn<long>)group.Columns[4]).Add((long)s.CountB);
                ((TableColumn<long>)group.Columns[5]).Add((long)s.CountAB);
                ((TableColumn<double>)group.Columns[6]).Add(s.Jaccard);
                ((TableColumn<double>)group.Columns[7]).Add(s.Pmi);
                ((TableColumn<double>)group.Columns[8]).Add(s.Lift);
                if (group.Rows == groupRows) { yield return group; group = null; }
            }
        }
        if (group is not null) yield return group;
    }

    static ColumnTable NewGroup() => new(new TextColumn("sae"), new TableColumn<int>("feature_a"), new TableColumn<int>("feature_b"),
        new TableColumn<long>("count_a"), new TableColumn<long>("count_b"), new TableColumn<long>("count_ab"),
        new TableColumn<double>("jaccard"), new TableColumn<double>("pmi"), new TableColumn<double>("lift"));

    /// <summary>The files a co-activation scan in <paramref name="format"/> writes.</summary>
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) => [$"pairs{TableWriter.Extension(format)}", "coactivation.safetensors", "manifest.json"];

    /// <summary>The pair table and the triangle of named counters (a scan's, or the sum of its shards'); returns the pair
    /// table's rows. The bytes depend on the counts alone.</summary>
    public static long WriteData(string outDir, IReadOnlyList<string> names, IReadOnlyList<CoactivationCounter> counters, string window, int? top, TableFormat format)
    {
        Directory.CreateDirectory(outDir);
        long pairRows = 0;
        TableWriter.WriteColumns(Path.Combine(outDir, "pairs" + TableWriter.Extension(format)), NewGroup(),
            PairGroups(names, counters, top).Select(g => { pairRows += g.Rows; return g; }), format);
        var st = new SafeTensorsWriter().AddMetadata("units", counters[0].Units.ToString())
            .AddMetadata("window", window).AddMetadata("index", "a*F - a*(a+1)/2 + (b - a - 1), a < b");
        for (int i = 0; i < counters.Count; i++)
        {
            var c = counters[i];
            st.Add($"{names[i]}.pairs", c.PairChunks, CoactivationCounter.PairCount(c.Features));
            st.Add($"{names[i]}.marginals", c.Marginals.ToArray().Select(v => (long)v).ToArray(), c.Features);
        }
        st.Save(Path.Combine(outDir, "coactivation.safetensors"));
        return pairRows;
    }

    /// <summary>The counters a run folder's coactivation.safetensors holds, by SAE name (for merging shards).</summary>
    public static CoactivationCounter ReadCounter(SafeTensorsFile file, string name)
    {
        var marginals = file.ReadInt64($"{name}.marginals");
        var counter = new CoactivationCounter(marginals.Length);
        if (file.Info($"{name}.pairs").ElementCount != CoactivationCounter.PairCount(marginals.Length))
            throw new PolyEngineException($"{file.Path}: '{name}.pairs' does not hold {marginals.Length} features' pairs; the file is damaged");
        counter.Restore((first, dst) => file.CopyU32($"{name}.pairs", first, dst), [.. marginals.Select(v => (ulong)v)],
            ulong.Parse(file.Metadata.GetValueOrDefault("units", "0"), System.Globalization.CultureInfo.InvariantCulture));
        return counter;
    }

    /// <summary>Writes the pair table, the triangle and the manifest (naming the shard when the scan ran one); returns the
    /// names of the files written.</summary>
    public static IReadOnlyList<string> Write(string outDir, CoactivationResult result, Model model, string corpusPath, IReadOnlyList<string> corpusFiles,
        CoactivationOptions options, int? top, TableFormat format, string device, Shard? shard = null)
    {
        var names = SaeNames.Of(result.Counters.Select(c => c.Sae).ToList());
        long pairRows = WriteData(outDir, names, [.. result.Counters.Select(c => c.Counter)], options.Window.ToString(), top, format);
        var manifest = ScanManifest.Build("polyengine coactivate", model, result.Counters.Select(c => c.Sae).ToList(), names, corpusPath, corpusFiles, device,
            new JsonObject
            {
                ["window"] = options.Window.ToString(), ["threshold"] = options.Threshold, ["context_size"] = options.ContextSize,
                ["batch"] = options.Batch, ["max_tokens"] = options.MaxTokens, ["prepend_bos"] = options.PrependBos, ["top"] = top is null ? "all" : top.Value, ["format"] = format.ToString().ToLowerInvariant(),
            },
            new JsonObject
            {
                ["tokens"] = result.Tokens, ["context_windows"] = result.Windows, ["documents"] = result.Documents,
                ["seconds"] = result.Seconds, ["tokens_per_second"] = result.Tokens / Math.Max(result.Seconds, 1e-9), ["pair_rows"] = pairRows,
                ["units"] = new JsonArray(result.Counters.Select(c => (JsonNode)JsonValue.Create(c.Counter.Units)!).ToArray()),
                ["counter"] = "uint32 per pair (a count is at most the number of units, refused past 2^32 - 1)",
                ["counter_bytes"] = new JsonArray(result.Counters.Select(c => (JsonNode)JsonValue.Create(CoactivationCounter.BytesFor(c.Sae.Config.DSae))!).ToArray()),
            });
        if (shard is { Count: > 1 } s) manifest["shard"] = s.ToString();
        ScanManifest.Save(outDir, manifest);
        return PlannedFiles(format);
    }

}

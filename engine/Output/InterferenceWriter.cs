using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Scans;

namespace PolyEngine.Output;

/// <summary>
/// Writes an interference run from its per-SAE result files, one row group per SAE (memory stays one SAE's worth):
/// <list type="bullet">
/// <item><c>bins</c>: <c>sae, bin, lo, hi, pairs, fraction, fraction_below_hi</c> — the five bins over unordered pairs
/// i &lt; j (negatives in no bin), and the cumulative fraction of all pairs below the bin's top, negatives included (the
/// paper's App. F statistic, "x % of pairs &lt; 0.1");</item>
/// <item><c>histogram</c>: <c>sae, lo, hi, pairs</c> — 2,000 bins of 0.001 over [-1, 1];</item>
/// <item>with explanations: <c>similarity</c> (<c>sae, tau, pairs_below, fraction_below</c>: every pair whose explanation
/// similarity is below τ, whatever its cosine — App. F's "x % of pairs &lt; 0.15"), <c>similarity_histogram</c> (<c>sae, lo,
/// hi, pairs</c>: every pair's similarity in the 2,000 bins), <c>bins_unrelated</c> (<c>sae, tau, bin, lo, hi, pairs, fraction, fraction_of_bin</c>: the
/// bin's pairs whose explanation similarity is below τ), <c>targets</c> (<c>sae, tau, target, bin, partners</c>: each
/// qualified target's unrelated-partner count per bin) and <c>qualified</c> (<c>sae, tau, target, bin, partner, cosine,
/// similarity</c>: its strongest partners per bin, strongest first);</item>
/// <item>with <c>--top N</c>: <c>partners</c> (<c>sae, feature_a, feature_b, cosine</c> [+ similarity]: every pair in
/// some feature's top N by cosine, a &lt; b);</item>
/// <item>pair tables carry <c>logit_cosine</c> / <c>coactivation_jaccard</c> when a model / co-activation scan was given;</item>
/// <item><c>sample.json</c> with <c>--sample</c>, and <c>manifest.json</c>.</item>
/// </list>
/// Every file atomically.
/// </summary>
public static class InterferenceWriter
{
    public static List<string> Write(string outDir, IReadOnlyList<string> resultFiles, InterferenceJobOptions o, TableFormat format,
        string device, IReadOnlyList<InterferenceSource> sources)
    {
        string ext = TableWriter.Extension(format);
        var written = new List<string>();
        InterferenceResult Load(int k)
        {
            using var f = SafeTensorsFile.Open(resultFiles[k]);
            return InterferenceResult.Load(f);
        }
        IEnumerable<ColumnTable> PerSae(Func<InterferenceResult, ColumnTable> rows)
        {
            for (int k = 0; k < resultFiles.Count; k++) yield return rows(Load(k));
        }
        void Table(string name, Func<ColumnTable> schema, Func<InterferenceResult, ColumnTable> rows)
        {
            TableWriter.WriteColumns(Path.Combine(outDir, name + ext), schema(), PerSae(rows), format);
            written.Add(name + ext);
        }

        var first = Load(0);
        bool semantic = first.Semantic, top = o.Scan.TopN > 0, logit = o.Model is not null, coact = o.Coactivation is not null;
        Table("bins", BinsTable, r =>
        {
            var t = BinsTable();
            var below = r.BelowHi;
            for (int b = 0; b < InterferenceBins.Count; b++)
                Fill(t, r.Name, InterferenceBins.Keys[b], BinLo[b], BinHi[b], r.Bins[b], (double)r.Bins[b] / r.Pairs, (double)below[b] / r.Pairs);
            return t;
        });
        Table("histogram", HistogramTable, r =>
        {
            var t = HistogramTable();
            for (int i = 0; i < InterferenceBins.FineCount; i++) Fill(t, r.Name, InterferenceBins.FineLo(i), InterferenceBins.FineHi(i), r.Fine[i]);
            return t;
        });
        if (semantic)
        {
            Table("similarity", SimilarityTable, r =>
            {
                var t = SimilarityTable();
                for (int ti = 0; ti < r.Taus.Length; ti++)
                    Fill(t, r.Name, Tau(r.Taus[ti]), r.SimilarityBelow![ti], (double)r.SimilarityBelow[ti] / r.Pairs);
                return t;
            });
            Table("similarity_histogram", HistogramTable, r =>
            {
                var t = HistogramTable();
                for (int i = 0; i < InterferenceBins.FineCount; i++) Fill(t, r.Name, InterferenceBins.FineLo(i), InterferenceBins.FineHi(i), r.SimilarityFine![i]);
                return t;
            });
            Table("bins_unrelated", UnrelatedTable, r =>
            {
                var t = UnrelatedTable();
                for (int ti = 0; ti < r.Taus.Length; ti++)
                    for (int b = 0; b < InterferenceBins.Count; b++)
                    {
                        long p = r.Unrelated![ti * InterferenceBins.Count + b];
                        Fill(t, r.Name, Tau(r.Taus[ti]), InterferenceBins.Keys[b], BinLo[b], BinHi[b], p, (double)p / r.Pairs,
                            r.Bins[b] == 0 ? double.NaN : (double)p / r.Bins[b]);
                    }
                return t;
            });
            Table("targets", TargetsTable, r =>
            {
                var t = TargetsTable();
                for (int i = 0; i < r.TargetTau.Length; i++)
                    Fill(t, r.Name, Tau(r.Taus[r.TargetTau[i]]), r.TargetFeature[i], InterferenceBins.Keys[r.TargetBin[i]], r.TargetPartners[i]);
                return t;
            });
            Table("qualified", () => QualifiedTable(logit, coact), r =>
            {
                var t = QualifiedTable(logit, coact);
                for (int i = 0; i < r.QTau.Length; i++)
                    Fill(t, [r.Name, Tau(r.Taus[r.QTau[i]]), r.QTarget[i], InterferenceBins.Keys[r.QBin[i]], r.QPartner[i], r.QCosine[i], r.QSimilarity[i],
                        .. Proxies(logit, coact, r.QLogit[i], r.QJaccard[i])]);
                return t;
            });
        }
        if (top)
            Table("partners", () => PartnersTable(semantic, logit, coact), r =>
            {
                var t = PartnersTable(semantic, logit, coact);
                for (int i = 0; i < r.TopA.Length; i++)
                    Fill(t, [r.Name, r.TopA[i], r.TopB[i], r.TopCosine[i], .. semantic ? new object[] { r.TopSimilarity[i] } : [],
                        .. Proxies(logit, coact, r.TopLogit[i], r.TopJaccard[i])]);
                return t;
            });
        if (o.Sample is { } s && semantic)
        {
            var sample = new JsonObject
            {
                ["seed"] = s.Seed, ["targets_per_sae_and_tau"] = s.Targets, ["partners_per_bin"] = s.PartnersPerBin,
                ["bins"] = new JsonArray(InterferenceBins.Keys.Select(k => (JsonNode)k).ToArray()),
                ["saes"] = new JsonArray(Enumerable.Range(0, resultFiles.Count).Select(k => JsonNode.Parse(Load(k).SampleJson!)).ToArray()),
            };
            AtomicFile.WriteText(Path.Combine(outDir, "sample.json"), sample.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            written.Add("sample.json");
        }
        WriteManifest(outDir, resultFiles, o, format, device, sources, Load);
        written.Add("manifest.json");
        return written;
    }

    static readonly string[] Tables = ["bins", "histogram", "similarity", "similarity_histogram", "bins_unrelated", "targets", "qualified", "partners"];

    /// <summary>Every file an interference run in <paramref name="format"/> may write (what its run folder plans, so an
    /// --overwrite later removes them all, even after a kill).</summary>
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) =>
        [.. Tables.Select(t => t + TableWriter.Extension(format)), "sample.json", "manifest.json"];

    static readonly double[] BinLo = [0, 0.1, 0.2, 0.3, 0.4];
    static readonly double[] BinHi = [0.1, 0.2, 0.3, 0.4, 1.0];

    /// <summary>τ as the decimal the user typed (0.15, not 0.15000000596).</summary>
    static double Tau(float t) => double.Parse(t.ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture);

    static object[] Proxies(bool logit, bool coact, float logitCos, float jaccard) =>
        [.. logit ? new object[] { logitCos } : [], .. coact ? new object[] { jaccard } : []];

    static ColumnTable BinsTable() => new(new TextColumn("sae"), new TextColumn("bin"), new TableColumn<double>("lo"), new TableColumn<double>("hi"),
        new TableColumn<long>("pairs"), new TableColumn<double>("fraction"), new TableColumn<double>("fraction_below_hi"));

    static ColumnTable HistogramTable() => new(new TextColumn("sae"), new TableColumn<double>("lo"), new TableColumn<double>("hi"), new TableColumn<long>("pairs"));

    static ColumnTable SimilarityTable() => new(new TextColumn("sae"), new TableColumn<double>("tau"), new TableColumn<long>("pairs_below"),
        new TableColumn<double>("fraction_below"));

    static ColumnTable UnrelatedTable() => new(new TextColumn("sae"), new TableColumn<double>("tau"), new TextColumn("bin"), new TableColumn<double>("lo"),
        new TableColumn<double>("hi"), new TableColumn<long>("pairs"), new TableColumn<double>("fraction"), new TableColumn<double>("fraction_of_bin"));

    static ColumnTable TargetsTable() => new(new TextColumn("sae"), new TableColumn<double>("tau"), new TableColumn<int>("target"), new TextColumn("bin"),
        new TableColumn<int>("partners"));

    static ColumnTable QualifiedTable(bool logit, bool coact) => new([new TextColumn("sae"), new TableColumn<double>("tau"), new TableColumn<int>("target"),
        new TextColumn("bin"), new TableColumn<int>("partner"), new TableColumn<float>("cosine"), new TableColumn<float>("similarity"), .. ProxyColumns(logit, coact)]);

    static ColumnTable PartnersTable(bool semantic, bool logit, bool coact) => new([new TextColumn("sae"), new TableColumn<int>("feature_a"),
        new TableColumn<int>("feature_b"), new TableColumn<float>("cosine"), .. semantic ? new TableColumn[] { new TableColumn<float>("similarity") } : [],
        .. ProxyColumns(logit, coact)]);

    static TableColumn[] ProxyColumns(bool logit, bool coact) =>
        [.. logit ? new TableColumn[] { new TableColumn<float>("logit_cosine") } : [], .. coact ? new TableColumn[] { new TableColumn<float>("coactivation_jaccard") } : []];

    /// <summary>Appends one row; values in column order, of the columns' types.</summary>
    static void Fill(ColumnTable t, params object[] values)
    {
        for (int c = 0; c < values.Length; c++)
            switch (t.Columns[c], values[c])
            {
                case (TextColumn col, string v): col.Add(v); break;
                case (TableColumn<double> col, double v): col.Add(v); break;
                case (TableColumn<float> col, float v): col.Add(v); break;
                case (TableColumn<long> col, long v): col.Add(v); break;
                case (TableColumn<int> col, int v): col.Add(v); break;
                default: throw new ArgumentException($"value {values[c]} ({values[c].GetType().Name}) does not fit column '{t.Columns[c].Name}'");
            }
    }

    static JsonNode? FileEntry(string? path) => path is null ? null
        : new JsonObject { ["file"] = Path.GetFullPath(path), ["bytes"] = FileLinks.Length(path), ["sha256"] = ScanManifest.Sha256(path) };

    /// <summary>The manifest around its per-SAE entries: tool, version, inputs beyond the SAEs, options.</summary>
    static JsonObject Manifest(InterferenceJobOptions o, TableFormat format, string device, JsonArray saes) => new()
    {
        ["tool"] = "polyengine interference",
        ["version"] = typeof(Model).Assembly.GetName().Version!.ToString(),
        ["created_utc"] = DateTime.UtcNow.ToString("O"),
        ["device"] = device,
        ["saes"] = saes,
        ["model"] = o.Model is null ? null : new JsonObject { ["model"] = o.Model },
        ["coactivation"] = o.Coactivation is null ? null : FileEntry(Path.Combine(o.Coactivation, "coactivation.safetensors")),
        ["options"] = new JsonObject
        {
            ["tau"] = new JsonArray(o.Scan.Taus.Select(t => (JsonNode)Tau(t)).ToArray()), ["partners"] = o.Scan.PartnersPerBin, ["top"] = o.Scan.TopN,
            ["tile"] = o.Scan.Tile, ["strict"] = o.Strict, ["format"] = format.ToString().ToLowerInvariant(),
            ["sample"] = o.Sample is null ? null : new JsonObject { ["targets"] = o.Sample.Targets, ["partners_per_bin"] = o.Sample.PartnersPerBin, ["seed"] = o.Sample.Seed },
            ["bins"] = "[lo, hi) in float32, the last [0.4, 1.0]; cosines clamped to [-1, 1]; unordered pairs i < j; negatives in no bin",
            ["unrelated"] = "explanation-embedding cosine (mean embedding per feature) < tau",
        },
    };

    /// <summary>A shard's manifest (<c>--shard i/n</c>): the run's identity — each SAE's files and hashes, the options —
    /// the shard, and each SAE's scan seconds. Its outputs are the raw states; <c>polyengine merge</c> makes the tables.</summary>
    public static IReadOnlyList<string> WriteShard(string outDir, IReadOnlyList<string> stateFiles, InterferenceJobOptions o, TableFormat format, string device,
        IReadOnlyList<InterferenceSource> sources)
    {
        var names = SaeNames.Of(sources.Select(s => s.Folder));
        var saes = new JsonArray();
        var seconds = new JsonArray();
        for (int k = 0; k < sources.Count; k++)
        {
            var config = SaeConfig.Load(sources[k].Folder);
            saes.Add(new JsonObject
            {
                ["name"] = names[k], ["folder"] = Path.GetFullPath(sources[k].Folder), ["hook"] = config.Hook.ToString(), ["d_sae"] = config.DSae, ["d_in"] = config.DIn,
                ["cfg_sha256"] = ScanManifest.Sha256(Path.Combine(sources[k].Folder, "cfg.json")),
                ["explanations"] = FileEntry(sources[k].Explanations), ["active"] = FileEntry(sources[k].Active),
            });
            using var f = SafeTensorsFile.Open(stateFiles[k]);
            seconds.Add(double.Parse(f.Metadata.GetValueOrDefault("seconds", "0"), System.Globalization.CultureInfo.InvariantCulture));
        }
        var manifest = Manifest(o, format, device, saes);
        manifest["shard"] = o.Scan.Shard.ToString();
        manifest["results"] = new JsonObject { ["seconds"] = seconds.Sum(x => (double)x!), ["sae_seconds"] = seconds };
        ScanManifest.Save(outDir, manifest);
        return [.. stateFiles.Select(Path.GetFileName)!, "manifest.json"];
    }

    /// <summary>Every file a shard of <paramref name="saes"/> SAEs writes.</summary>
    public static IReadOnlyList<string> PlannedShardFiles(int saes) => [.. Enumerable.Range(0, saes).Select(k => $"state.{k}.safetensors"), "manifest.json"];

    static void WriteManifest(string outDir, IReadOnlyList<string> resultFiles, InterferenceJobOptions o, TableFormat format, string device,
        IReadOnlyList<InterferenceSource> sources, Func<int, InterferenceResult> load)
    {
        var saes = new JsonArray();
        for (int k = 0; k < resultFiles.Count; k++)
        {
            var r = load(k);
            saes.Add(new JsonObject
            {
                ["name"] = r.Name, ["folder"] = Path.GetFullPath(r.Folder), ["hook"] = r.Hook, ["d_sae"] = r.DSae, ["d_in"] = r.DIn,
                ["cfg_sha256"] = ScanManifest.Sha256(Path.Combine(r.Folder, "cfg.json")),
                ["explanations"] = FileEntry(sources[k].Explanations), ["active"] = FileEntry(sources[k].Active),
                ["features"] = r.Features, ["left_out"] = new JsonObject
                {
                    ["not_active"] = r.NotActive, ["without_explanation"] = r.WithoutExplanation, ["zero_decoder_row"] = r.DeadRows,
                },
                ["pairs"] = r.Pairs, ["seconds"] = r.Seconds, ["pairs_per_second"] = r.Pairs / r.Seconds,
                ["bins"] = new JsonObject(InterferenceBins.Keys.Select((key, b) => KeyValuePair.Create(key, (JsonNode?)r.Bins[b]))),
                ["negative_pairs"] = r.Pairs - r.Bins.Sum(),
                ["qualified"] = r.Semantic ? new JsonObject(r.Taus.Select((t, i) => KeyValuePair.Create(Tau(t).ToString(System.Globalization.CultureInfo.InvariantCulture), (JsonNode?)r.Qualified[i]))) : null,
            });
        }
        var manifest = Manifest(o, format, device, saes);
        ScanManifest.Save(outDir, manifest);
    }
}

using System.Text.Json.Nodes;
using PolyEngine.Experiments;

namespace PolyEngine.Output;

/// <summary>
/// Writes the neuron experiment: <c>cases</c> (one row per neuron, feature and sentence: the top-k weighted cosine and,
/// for masking and amplifying, the largest drop and increase, absolute and in percent), <c>neurons</c> (every
/// coordinate's polysemanticity degree and bucket), <c>buckets</c> (per bucket and direction, the mean and SE of each
/// tracker) and <c>manifest.json</c> last; each atomically.
/// </summary>
public static class NeuronExperimentWriter
{
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) =>
        [.. new[] { "cases", "neurons", "buckets" }.Select(t => t + TableWriter.Extension(format)), "manifest.json"];

    public static IReadOnlyList<string> Write(string outDir, IReadOnlyList<NeuronCase> cases, IReadOnlyList<NeuronConnectivity> neurons, TableFormat format, JsonObject manifest)
    {
        var files = PlannedFiles(format);
        WriteCasesAndBuckets(outDir, cases, format);
        var (nId, nDegree, nBucket) = (new TableColumn<int>("neuron"), new TableColumn<int>("degree"), new TextColumn("bucket"));
        foreach (var n in neurons) { nId.Add(n.Neuron); nDegree.Add(n.Degree); nBucket.Add(DegreeBuckets.Of(n.Degree) is int b and >= 0 ? DegreeBuckets.All[b].Name : "0"); }
        TableColumn[] neuronColumns = [nId, nDegree, nBucket];
        TableWriter.WriteColumns(Path.Combine(outDir, files[1]), new ColumnTable(neuronColumns), [new ColumnTable(neuronColumns)], format);
        ScanManifest.Save(outDir, manifest);
        return files;
    }

    /// <summary>The cases table, and the buckets table computed from it (for a run, or the merge of its shards).</summary>
    public static void WriteCasesAndBuckets(string outDir, IReadOnlyList<NeuronCase> cases, TableFormat format)
    {
        var files = PlannedFiles(format);
        var (sae, hook, bucket, neuron, degree, cluster, feature, token, tokenId, sentence, baseline) = (new TextColumn("sae"), new TextColumn("hook"), new TextColumn("bucket"),
            new TableColumn<int>("neuron"), new TableColumn<int>("degree"), new TableColumn<int>("cluster"), new TableColumn<int>("feature"), new TextColumn("token"),
            new TableColumn<int>("token_id"), new TableColumn<int>("sentence"), new TableColumn<double>("baseline"));
        string[] trackers = ["max_abs_drop", "max_pct_drop", "max_abs_increase", "max_pct_increase"];
        static double[] Values(NeuronChange c) => [c.MaxAbsDrop, c.MaxPercentDrop, c.MaxAbsIncrease, c.MaxPercentIncrease];
        var mask = trackers.Select(t => new TableColumn<double>("mask_" + t)).ToArray();
        var amp = trackers.Select(t => new TableColumn<double>("amplify_" + t)).ToArray();
        foreach (var c in cases)
        {
            sae.Add(c.Sae); hook.Add(c.Hook.ToString()); bucket.Add(c.Bucket); neuron.Add(c.Neuron); degree.Add(c.Degree); cluster.Add(c.Cluster); feature.Add(c.Feature);
            token.Add(c.Token); tokenId.Add(c.TokenId); sentence.Add(c.Sentence); baseline.Add(c.Baseline);
            for (int k = 0; k < 4; k++) { mask[k].Add(Values(c.Mask)[k]); amp[k].Add(Values(c.Amplify)[k]); }
        }
        TableColumn[] caseColumns = [sae, hook, bucket, neuron, degree, cluster, feature, token, tokenId, sentence, baseline, .. mask, .. amp];
        TableWriter.WriteColumns(Path.Combine(outDir, files[0]), new ColumnTable(caseColumns), [new ColumnTable(caseColumns)], format);

        var (bName, bDirection, bCases) = (new TextColumn("bucket"), new TextColumn("direction"), new TableColumn<int>("cases"));
        var means = trackers.Select(t => (Mean: new TableColumn<double>(t + "_mean"), Se: new TableColumn<double>(t + "_se"))).ToArray();
        foreach (var g in cases.GroupBy(c => c.Bucket))
            foreach (var (direction, pick) in new (string, Func<NeuronCase, NeuronChange>)[] { ("mask", c => c.Mask), ("amplify", c => c.Amplify) })
            {
                bName.Add(g.Key); bDirection.Add(direction); bCases.Add(g.Count());
                for (int k = 0; k < 4; k++)
                {
                    var s = Stats.MeanStats.Of(g.Select(c => Values(pick(c))[k]).Where(double.IsFinite));
                    means[k].Mean.Add(s.Mean); means[k].Se.Add(s.StdErr);
                }
            }
        TableColumn[] bucketColumns = [bName, bDirection, bCases, .. means.SelectMany(m => new TableColumn[] { m.Mean, m.Se })];
        TableWriter.WriteColumns(Path.Combine(outDir, files[2]), new ColumnTable(bucketColumns), [new ColumnTable(bucketColumns)], format);
    }
}

using System.Text.Json.Nodes;
using PolyEngine.Formats;
using PolyEngine.Interventions;

namespace PolyEngine.Output;

/// <summary>Where a sweep's vector came from (the vectors table): a row of a vector file, an SAE feature's decoder row, or
/// a seeded random direction; its norm before it was made unit-norm.</summary>
public sealed record SteerVectorSource(string Source, long Id, double Norm);

/// <summary>
/// Writes a sweep (<c>polyengine steer</c>), each file atomically:
/// <list type="bullet">
/// <item><c>rows</c>: one row per prompt and edit — <c>prompt, vector, scale</c> (or <c>prompt, neuron, factor</c>), the
/// metrics, and <c>top_1_id, top_1_p, …</c> when asked for; each prompt's baseline has vector (neuron) −1 and scale 0
/// (factor 1);</item>
/// <item><c>best</c>: per prompt and vector (neuron), each metric's <c>baseline_M</c>, <c>best_M</c>, <c>best_M_scale</c>
/// (<c>_factor</c>), <c>delta_M</c> and <c>rel_delta_M</c> (<see cref="SteerBest"/>);</item>
/// <item><c>vectors</c> (vector locus): each vector's source, id and norm;</item>
/// <item><c>manifest.json</c>: inputs, options, and <c>interventions</c>, <c>seconds</c> (the sweep, without model
/// load) and <c>interventions_per_second</c>.</item>
/// </list>
/// Parquet by default, CSV on request.
/// </summary>
public static class SteerWriter
{
    /// <summary>Rows per row group of the rows table (a merge of shards writes the same groups).</summary>
    public const int RowGroupRows = 1 << 20;

    public static IReadOnlyList<string> PlannedFiles(TableFormat format, bool neurons)
    {
        string ext = TableWriter.Extension(format);
        return neurons ? [$"rows{ext}", $"best{ext}", "manifest.json"] : [$"rows{ext}", $"best{ext}", $"vectors{ext}", "manifest.json"];
    }

    /// <summary>The <c>rows</c> table of a sweep into <paramref name="path"/> (atomically).</summary>
    public static void WriteRows(string path, SteerResult result, TableFormat format)
    {
        var plan = result.Plan;
        string item = plan.NeuronLocus ? "neuron" : "vector", amount = plan.NeuronLocus ? "factor" : "scale";
        ColumnTable RowsTable(IEnumerable<SteerRow> rows)
        {
            var (p, i, a) = (new TableColumn<int>("prompt"), new TableColumn<int>(item), new TableColumn<float>(amount));
            var metrics = plan.Metrics.Select(m => new TableColumn<double>(m.Name())).ToArray();
            var ids = Enumerable.Range(1, plan.TopK).Select(j => new TableColumn<int>($"top_{j}_id")).ToArray();
            var probs = Enumerable.Range(1, plan.TopK).Select(j => new TableColumn<float>($"top_{j}_p")).ToArray();
            foreach (var r in rows)
            {
                p.Add(r.Prompt); i.Add(r.Item); a.Add(r.Amount);
                for (int m = 0; m < metrics.Length; m++) metrics[m].Add(r.Metrics[m]);
                for (int j = 0; j < plan.TopK; j++) { ids[j].Add(r.TopIds![j]); probs[j].Add(r.TopProbabilities![j]); }
            }
            TableColumn[] columns = [p, i, a, .. metrics];
            for (int j = 0; j < plan.TopK; j++) columns = [.. columns, ids[j], probs[j]];
            return new ColumnTable(columns);
        }
        const int group = RowGroupRows;
        TableWriter.WriteColumns(path, RowsTable([]),
            Enumerable.Range(0, (result.Rows.Count + group - 1) / group).Select(g => RowsTable(result.Rows.Skip(g * group).Take(group))), format);
    }

    public static IReadOnlyList<string> Write(string outDir, SteerResult result, IReadOnlyList<SteerVectorSource>? sources, TableFormat format,
        JsonObject manifest)
    {
        var plan = result.Plan;
        string ext = TableWriter.Extension(format);
        string item = plan.NeuronLocus ? "neuron" : "vector", amount = plan.NeuronLocus ? "factor" : "scale";
        WriteRows(Path.Combine(outDir, "rows" + ext), result, format);

        var best = result.Best();
        var bp = new TableColumn<int>("prompt");
        var bi = new TableColumn<int>(item);
        var perMetric = plan.Metrics.Select(m => (
            Baseline: new TableColumn<double>($"baseline_{m.Name()}"), Best: new TableColumn<double>($"best_{m.Name()}"),
            At: new TableColumn<float>($"best_{m.Name()}_{amount}"), Delta: new TableColumn<double>($"delta_{m.Name()}"),
            Relative: new TableColumn<double>($"rel_delta_{m.Name()}"))).ToArray();
        int nm = plan.Metrics.Count;
        for (int r = 0; r < best.Count; r += nm)   // Bests lists each (prompt, item)'s metrics together, in the plan's order
        {
            bp.Add(best[r].Prompt);
            bi.Add(best[r].Item);
            for (int m = 0; m < nm; m++)
            {
                var b = best[r + m];
                perMetric[m].Baseline.Add(b.Baseline); perMetric[m].Best.Add(b.Best); perMetric[m].At.Add(b.BestAmount);
                perMetric[m].Delta.Add(b.Delta); perMetric[m].Relative.Add(b.RelativeDelta);
            }
        }
        var bestTable = new ColumnTable([bp, bi, .. perMetric.SelectMany(c => new TableColumn[] { c.Baseline, c.Best, c.At, c.Delta, c.Relative })]);
        TableWriter.WriteColumns(Path.Combine(outDir, "best" + ext), bestTable, [bestTable], format);

        if (!plan.NeuronLocus)
        {
            var (v, s, id, norm) = (new TableColumn<int>("vector"), new TextColumn("source"), new TableColumn<long>("id"), new TableColumn<double>("norm"));
            for (int k = 0; k < plan.Vectors.Count; k++)
            {
                var src = sources?[k] ?? new SteerVectorSource("library", k, System.Numerics.Tensors.TensorPrimitives.Norm(plan.Vectors[k]));
                v.Add(k); s.Add(src.Source); id.Add(src.Id); norm.Add(src.Norm);
            }
            var vectors = new ColumnTable(v, s, id, norm);
            TableWriter.WriteColumns(Path.Combine(outDir, "vectors" + ext), vectors, [vectors], format);
        }

        manifest["results"] = new JsonObject
        {
            ["prompts"] = plan.Prompts.Count, ["rows"] = result.Rows.Count, ["interventions"] = plan.Interventions,
            ["seconds"] = result.Seconds, ["interventions_per_second"] = result.InterventionsPerSecond,
        };
        ScanManifest.Save(outDir, manifest);
        return PlannedFiles(format, plan.NeuronLocus);
    }
}

using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PolyEngine.Output.Report;

/// <summary>
/// <c>polyengine report</c>: run folders in, one self-contained HTML page out (figures embedded as PNG, also written beside
/// it as PNG and SVG), with <c>summary.json</c> holding every number the page shows. A folder is recognised by its
/// manifest's <c>tool</c>. So far: the steering and prompt experiments (levels figure, level and regression tables), the
/// neuron experiment (bucket box plots) and the token-type injection (success rates with the paper's stars); other kinds
/// are listed as not reported yet.
/// </summary>
public static class RunReport
{
    /// <summary>Writes <c>index.html</c>, <c>summary.json</c> and <c>figures/</c> into <paramref name="outDir"/> (created);
    /// returns the page's path.</summary>
    public static string Write(IReadOnlyList<string> runs, string outDir)
    {
        if (runs.Count == 0) throw new PolyEngineException("report: give at least one run folder");
        Directory.CreateDirectory(Path.Combine(outDir, "figures"));
        var html = new StringBuilder();
        var summary = new JsonObject { ["runs"] = new JsonArray() };
        html.Append("<!doctype html><html><head><meta charset=\"utf-8\"><title>PolyEngine report</title><style>")
            .Append("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}")
            .Append("td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}")
            .Append("img{max-width:100%}.note{color:#a33}</style></head><body><h1>PolyEngine report</h1>");
        int figure = 0;
        foreach (var run in runs)
        {
            var manifestPath = Path.Combine(run, "manifest.json");
            if (!File.Exists(manifestPath)) throw new PolyEngineException($"report: {run} has no manifest.json; give the folder a PolyEngine run wrote (--out)");
            JsonNode manifest;
            try { manifest = JsonNode.Parse(File.ReadAllText(manifestPath))!; }
            catch (JsonException e) { throw new PolyEngineException($"report: {manifestPath} is not valid JSON ({e.Message.Split('\n')[0]})"); }
            string tool = (string?)manifest["tool"] ?? "unknown";
            var entry = new JsonObject { ["folder"] = Path.GetFullPath(run), ["tool"] = tool, ["facts"] = Facts(manifest) };
            ((JsonArray)summary["runs"]!).Add(entry);
            html.Append($"<h2>{Esc(tool)}</h2><p>{Esc(Path.GetFullPath(run))}</p>");
            html.Append(FactsTable((JsonObject)entry["facts"]!));
            if (tool is "polyengine experiment feature" or "polyengine experiment token" or "polyengine experiment prompt")
                Experiment(run, outDir, html, entry, ref figure);
            else if (tool == "polyengine inject")
                Injection(run, html, entry);
            else if (tool == "polyengine experiment neuron")
                Neuron(run, outDir, html, entry, ref figure);
            else
                html.Append("<p class=\"note\">This kind of run is not reported yet; its tables are in the folder.</p>");
        }
        html.Append("</body></html>\n");
        Formats.AtomicFile.WriteText(Path.Combine(outDir, "summary.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        string page = Path.Combine(outDir, "index.html");
        Formats.AtomicFile.WriteText(page, html.ToString());
        return page;
    }

    static JsonObject Facts(JsonNode m) => new()
    {
        ["model"] = m["model"]?["folder"]?.DeepClone(), ["device"] = m["device"]?.DeepClone(), ["created_utc"] = m["created_utc"]?.DeepClone(),
        ["options"] = m["options"]?.DeepClone(), ["results"] = m["results"]?.DeepClone(),
    };

    static string FactsTable(JsonObject facts)
    {
        var sb = new StringBuilder("<table><tr><th>fact</th><th>value</th></tr>");
        foreach (var (k, v) in facts)
        {
            if (v is JsonObject o)
                foreach (var (k2, v2) in o) sb.Append($"<tr><td>{Esc(k)}.{Esc(k2)}</td><td>{Esc(v2?.ToJsonString() ?? "")}</td></tr>");
            else sb.Append($"<tr><td>{Esc(k)}</td><td>{Esc(v?.ToJsonString() ?? "")}</td></tr>");
        }
        return sb.Append("</table>").ToString();
    }

    static void Experiment(string run, string outDir, StringBuilder html, JsonObject entry, ref int figure)
    {
        var levels = Tables.Read<Tables.LevelColumns>(run, "levels");
        var regressions = Tables.Read<Tables.RegressionColumns>(run, "regressions");
        if (levels is null) { html.Append("<p class=\"note\">The levels table is missing.</p>"); return; }
        if (levels.Rows.Count == 0) { html.Append("<p class=\"note\">The run has no cases: nothing to show.</p>"); entry["levels"] = new JsonArray(); return; }
        entry["levels"] = levels.ToJson();
        foreach (var metric in levels.Column("metric").Distinct())
        {
            var rows = levels.Rows.Where(r => r["metric"] == metric).ToList();
            string name = $"fig{++figure}-{metric}";
            Figures.LevelBars(Path.Combine(outDir, "figures", name), $"{metric}: relative change per level", rows);
            html.Append($"<h3>{Esc(metric)}</h3><img alt=\"{Esc(metric)} per level\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(Path.Combine(outDir, "figures", name + ".png")))}\">");
        }
        html.Append("<h3>Levels</h3>").Append(levels.Html());
        if (regressions is { Rows.Count: > 0 })
        {
            entry["regressions"] = regressions.ToJson();
            html.Append("<h3>Regressions (models A and B)</h3>").Append(regressions.Html());
        }
    }

    static void Injection(string run, StringBuilder html, JsonObject entry)
    {
        var summary = Tables.Read<InjectionSummaryRow>(run, "summary");
        if (summary is null) { html.Append("<p class=\"note\">The summary table is missing.</p>"); return; }
        entry["summary"] = summary.ToJson();
        var sb = new StringBuilder("<table><tr><th>type</th><th>category</th><th>trials</th><th>count rate</th><th>prob rate</th></tr>");
        foreach (var r in summary.Rows)
            sb.Append($"<tr><td>{Esc(r["type"])}</td><td>{Esc(r["category"])}</td><td>{Esc(r["trials"])}</td>" +
                      $"<td>{Percent(r["count_rate"])}{Stars(r["p_value"], r["category"])}</td><td>{Percent(r["prob_rate"])}{Stars(r["prob_p_value"], r["category"])}</td></tr>");
        html.Append("<h3>Success rates (stars: Welch's t against random, p &lt; 0.05 *, 0.01 **, 0.001 ***)</h3>").Append(sb).Append("</table>");
    }

    static void Neuron(string run, string outDir, StringBuilder html, JsonObject entry, ref int figure)
    {
        var cases = Tables.Read<Tables.NeuronCaseColumns>(run, "cases");
        if (cases is null) { html.Append("<p class=\"note\">The cases table is missing.</p>"); return; }
        if (cases.Rows.Count == 0) { html.Append("<p class=\"note\">The run has no cases: nothing to show.</p>"); entry["buckets"] = new JsonArray(); return; }
        var buckets = Figures.NeuronBoxes(Path.Combine(outDir, "figures", $"fig{++figure}-neuron"), cases.Rows);
        entry["buckets"] = buckets;
        html.Append("<h3>Masking vs amplifying per polysemanticity bucket</h3>")
            .Append($"<img alt=\"neuron buckets\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(Path.Combine(outDir, "figures", $"fig{figure}-neuron.png")))}\">");
        var sb = new StringBuilder("<table><tr><th>bucket</th><th>direction</th><th>cases</th><th>min</th><th>q1</th><th>median</th><th>q3</th><th>max</th></tr>");
        foreach (var b in buckets.Select(x => x!.AsObject()))
            sb.Append($"<tr><td>{Esc((string)b["bucket"]!)}</td><td>{Esc((string)b["direction"]!)}</td><td>{(int)b["cases"]!}</td>" +
                string.Concat(new[] { "min", "q1", "median", "q3", "max" }.Select(k => $"<td>{((double)b[k]!).ToString("G4", CultureInfo.InvariantCulture)}</td>")) + "</tr>");
        html.Append(sb).Append("</table>");
    }

    /// <summary>The paper's stars for a p-value (none for the random category itself).</summary>
    public static string Stars(string p, string category)
    {
        if (category == "random" || !double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || double.IsNaN(v)) return "";
        return v < 0.001 ? "***" : v < 0.01 ? "**" : v < 0.05 ? "*" : "";
    }

    static string Percent(string x) => double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? (100 * v).ToString("F2", CultureInfo.InvariantCulture) : Esc(x);

    internal static string Esc(string s) => WebUtility.HtmlEncode(s);
}

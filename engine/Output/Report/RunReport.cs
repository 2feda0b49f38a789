using System.Text.Json;
using System.Text.Json.Nodes;

namespace PolyEngine.Output.Report;

/// <summary>What <see cref="RunReport.Write"/> made: the page, and the remarks it put on the page that the caller should
/// also say out loud (a folder it could not report, a table it could not read).</summary>
public sealed record ReportResult(string Page, IReadOnlyList<string> Notes);

/// <summary>
/// <c>polyengine report</c>: run folders in, one self-contained HTML page out (figures embedded as PNG, also written beside
/// it as PNG and SVG; no scripts, nothing fetched), with <c>summary.json</c> holding every number the page shows. A folder
/// is recognised by its manifest's <c>tool</c>: the interference, co-activation, feature and steering scans
/// (<see cref="ScanSections"/>), the steering, neuron and injection experiments (<see cref="ExperimentSections"/>); every
/// run gets its facts (model, SAEs, device, options, results). A folder that cannot be reported — no manifest, an unknown
/// kind, a table missing or unreadable — is said so on the page and in <see cref="ReportResult.Notes"/>; it never stops
/// the others.
/// </summary>
public static class RunReport
{
    const string Style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}" +
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}" +
        "table{display:block;overflow-x:auto;max-width:100%}img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}" +
        ".note{color:#a33}.facts td,.facts th{text-align:left}details{margin:.5em 0}summary{cursor:pointer;color:#555}.tool{color:#555}";

    /// <summary>Writes <c>index.html</c>, <c>summary.json</c> and <c>figures/</c> into <paramref name="outDir"/> (created).</summary>
    public static ReportResult Write(IReadOnlyList<string> runs, string outDir, string title = "PolyEngine report")
    {
        if (runs.Count == 0) throw new PolyEngineException("report: give at least one run folder");
        foreach (var run in runs)
            if (!Directory.Exists(run)) throw new PolyEngineException($"report: run folder {run} does not exist; give the --out folder of a PolyEngine run");
        var page = new ReportPage(outDir);
        Writable(outDir, page.FiguresDir);
        var notes = new List<string>();
        var summary = new JsonObject { ["title"] = title, ["version"] = Version, ["runs"] = new JsonArray() };
        page.Append($"<!doctype html><html><head><meta charset=\"utf-8\"><title>{ReportPage.Esc(title)}</title><style>{Style}</style></head><body>")
            .Heading(1, title)
            .Append("<ol>" + string.Concat(runs.Select((run, i) => $"<li><a href=\"#run{i + 1}\">{ReportPage.Esc(Name(run))}</a></li>")) + "</ol>");
        for (int i = 0; i < runs.Count; i++)
        {
            string run = runs[i];
            var entry = new JsonObject { ["folder"] = Path.GetFullPath(run) };
            ((JsonArray)summary["runs"]!).Add(entry);
            page.Append($"<h2 id=\"run{i + 1}\">{ReportPage.Esc(Name(run))}</h2>");
            try { Section(run, page, entry); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // One folder that cannot be shown never stops the others: what went wrong is said on the page.
                string message = e is PolyEngineException ? e.Message
                    : $"report: {run} cannot be shown ({e.GetType().Name}: {e.Message.Split('\n')[0]}); its tables may be damaged or from another version";
                page.Note(message);
                entry["error"] = message;
                notes.Add(message);
            }
        }
        page.Append("</body></html>\n");
        Formats.AtomicFile.WriteText(Path.Combine(outDir, "summary.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        string path = Path.Combine(outDir, "index.html");
        Formats.AtomicFile.WriteText(path, page.ToString());
        return new ReportResult(path, notes);
    }

    static string Version => typeof(Model).Assembly.GetName().Version!.ToString();

    /// <summary>A run's title: its folder's name.</summary>
    static string Name(string run) => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(run)));

    /// <summary>The output folder exists and takes files, or a one-line error before any work.</summary>
    static void Writable(string outDir, string figures)
    {
        try
        {
            Directory.CreateDirectory(figures);
            string probe = Path.Combine(outDir, $".write-test-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolyEngineException($"report --out {outDir}: cannot write there ({e.Message.Split('\n')[0]}); give a folder you can write to");
        }
    }

    static void Section(string run, ReportPage page, JsonObject entry)
    {
        var manifestPath = Path.Combine(run, "manifest.json");
        if (!File.Exists(manifestPath)) throw new PolyEngineException($"report: {run} has no manifest.json; it is not a PolyEngine run folder, or its run did not finish");
        JsonNode manifest;
        try { manifest = JsonNode.Parse(File.ReadAllText(manifestPath)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new PolyEngineException($"report: {manifestPath} is not valid JSON ({e.Message.Split('\n')[0]})"); }
        string tool = (string?)manifest["tool"] ?? "unknown";
        entry["tool"] = tool;
        entry["facts"] = Facts(manifest);
        page.Append($"<p class=\"tool\">{ReportPage.Esc(tool)}: {ReportPage.Esc(Path.GetFullPath(run))}</p>");
        if ((string?)manifest["version"] is not { } version)
            page.Note("The manifest has no version: an older PolyEngine wrote it; tables are read by column name and what is missing is said below.");
        else if (version != Version)
            page.Paragraph($"Written by PolyEngine {version} (this is {Version}); tables are read by column name.");
        page.Append(FactsTable((JsonObject)entry["facts"]!));
        switch (tool)
        {
            case "polyengine experiment feature" or "polyengine experiment token" or "polyengine experiment prompt": ExperimentSections.Steering(run, page, entry); break;
            case "polyengine experiment neuron": ExperimentSections.Neuron(run, page, entry); break;
            case "polyengine inject": ExperimentSections.Injection(run, page, entry); break;
            case "polyengine interference": ScanSections.Interference(run, manifest, page, entry); break;
            case "polyengine coactivate": ScanSections.Coactivation(run, manifest, page, entry); break;
            case "polyengine features": ScanSections.Features(run, page, entry); break;
            case "polyengine steer": ScanSections.Steer(run, page, entry); break;
            default: throw new PolyEngineException($"report: {run} is a '{tool}' run, which the report does not show; its files are in the folder");
        }
    }

    /// <summary>The facts every run shows: where the model and SAEs came from, the device, when, and its options and results.</summary>
    static JsonObject Facts(JsonNode m) => new()
    {
        ["model"] = m["model"]?["folder"]?.DeepClone(), ["version"] = m["version"]?.DeepClone(), ["device"] = m["device"]?.DeepClone(),
        ["created_utc"] = m["created_utc"]?.DeepClone(),
        ["saes"] = m["saes"] is JsonArray saes ? new JsonArray([.. saes.Select(s => (JsonNode?)$"{(string?)s?["name"]} ({(string?)s?["hook"]}, d_sae {s?["d_sae"]})")]) : null,
        ["options"] = m["options"]?.DeepClone(), ["results"] = m["results"]?.DeepClone(),
    };

    /// <summary>The facts as rows of dotted names (options.readings.t_f) and values; lists of plain values joined by commas.</summary>
    static string FactsTable(JsonObject facts)
    {
        var rows = new List<IReadOnlyList<string>>();
        void Add(string name, JsonNode? v)
        {
            if (v is null) return;
            if (v is JsonObject o) { foreach (var (k, x) in o) Add($"{name}.{k}", x); return; }
            if (v is JsonArray a && a.All(x => x is JsonValue)) { rows.Add([name, string.Join(", ", a.Select(Text))]); return; }
            rows.Add([name, Text(v)]);
        }
        foreach (var (k, v) in facts) Add(k, v);
        return new ReportPage("").Append("<details class=\"facts\"><summary>run facts: model, SAEs, device, options (with the code-vs-paper readings), results</summary>")
            .Table(["fact", "value"], rows).Append("</details>").ToString();

        static string Text(JsonNode? v) => v is JsonValue x && x.TryGetValue(out string? s) ? s : v?.ToJsonString() ?? "";
    }
}

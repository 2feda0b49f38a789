using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PolyEngine.Interventions;

namespace PolyEngine.Output;

/// <summary>One trial of a token-type injection (trials table).</summary>
public sealed class InjectionTrialRow
{
    [JsonPropertyName("type")] public string Type { get; set; } = "";
    [JsonPropertyName("category")] public string Category { get; set; } = "";
    [JsonPropertyName("sentence")] public int Sentence { get; set; }
    [JsonPropertyName("trial")] public int Trial { get; set; }
    /// <summary>The injected prompt's ids as run (BOS included when prepended).</summary>
    [JsonPropertyName("prompt_ids")] public int[] PromptIds { get; set; } = [];
    /// <summary>The plain sentence's ids as run.</summary>
    [JsonPropertyName("base_ids")] public int[] BaseIds { get; set; } = [];
    [JsonPropertyName("count_base")] public int CountBase { get; set; }
    [JsonPropertyName("count_injected")] public int CountInjected { get; set; }
    [JsonPropertyName("mass_base")] public double MassBase { get; set; }
    [JsonPropertyName("mass_injected")] public double MassInjected { get; set; }
    [JsonPropertyName("count_increase")] public bool CountIncrease { get; set; }
    [JsonPropertyName("prob_increase")] public bool ProbIncrease { get; set; }
}

/// <summary>Per type and category (summary table): success rates and Welch's t against the random category.</summary>
public sealed class InjectionSummaryRow
{
    [JsonPropertyName("type")] public string Type { get; set; } = "";
    [JsonPropertyName("category")] public string Category { get; set; } = "";
    [JsonPropertyName("trials")] public int Trials { get; set; }
    [JsonPropertyName("count_rate")] public double CountRate { get; set; }
    [JsonPropertyName("prob_rate")] public double ProbRate { get; set; }
    [JsonPropertyName("welch_t")] public double WelchT { get; set; }
    [JsonPropertyName("p_value")] public double PValue { get; set; }
    [JsonPropertyName("prob_welch_t")] public double ProbWelchT { get; set; }
    [JsonPropertyName("prob_p_value")] public double ProbPValue { get; set; }
}

/// <summary>Writes an injection run: <c>trials</c> and <c>summary</c> tables (Parquet or CSV) and <c>manifest.json</c>
/// (inputs, options, skipped types, trials, seconds), each atomically, the manifest last.</summary>
public static class InjectionWriter
{
    public static IReadOnlyList<string> PlannedFiles(TableFormat format) =>
        [$"trials{TableWriter.Extension(format)}", $"summary{TableWriter.Extension(format)}", "manifest.json"];

    public static IReadOnlyList<string> Write(string outDir, InjectionResult result, TableFormat format, JsonObject manifest)
    {
        var files = WriteTables(outDir, result.Trials, format);
        manifest["results"] = new JsonObject
        {
            ["trials"] = result.Trials.Count, ["seconds"] = result.Seconds, ["trials_per_second"] = result.Trials.Count / Math.Max(result.Seconds, 1e-9),
            ["skipped"] = new JsonArray(result.Plan.Skipped().Select(s => (JsonNode)s).ToArray()),
        };
        ScanManifest.Save(outDir, manifest);
        return files;
    }

    /// <summary>The trials table, and the summary computed from it; returns the planned file names (the manifest last).</summary>
    public static IReadOnlyList<string> WriteTables(string outDir, IReadOnlyList<InjectionTrial> result, TableFormat format)
    {
        var trials = result.Select(t => new InjectionTrialRow
        {
            Type = t.Type, Category = InjectionInputs.Name(t.Category), Sentence = t.Sentence, Trial = t.Trial, PromptIds = t.PromptIds, BaseIds = t.BaseIds,
            CountBase = t.CountBase, CountInjected = t.CountInjected, MassBase = t.MassBase, MassInjected = t.MassInjected,
            CountIncrease = t.CountIncrease, ProbIncrease = t.ProbIncrease,
        }).ToList();
        var summary = PromptInjection.Summarize(result).Select(s => new InjectionSummaryRow
        {
            Type = s.Type, Category = InjectionInputs.Name(s.Category), Trials = s.Trials, CountRate = s.CountRate, ProbRate = s.ProbRate,
            WelchT = s.Count.T, PValue = s.Count.P, ProbWelchT = s.Prob.T, ProbPValue = s.Prob.P,
        }).ToList();
        var files = PlannedFiles(format);
        TableWriter.Write(Path.Combine(outDir, files[0]), trials, format);
        TableWriter.Write(Path.Combine(outDir, files[1]), summary, format);
        return files;
    }

    /// <summary>The trials of a trials table (as <see cref="WriteTables"/> wrote them).</summary>
    public static List<InjectionTrial> ReadTrials(string path) =>
        [.. TableReader.Read<InjectionTrialRow>(path).Select(r => new InjectionTrial(r.Type,
            Enum.GetValues<InjectionCategory>().FirstOrDefault(c => InjectionInputs.Name(c) == r.Category, (InjectionCategory)(-1)) is var c && (int)c >= 0 ? c
                : throw new PolyEngineException($"{path}: category '{r.Category}' is not one of target, high, medium, random"),
            r.Sentence, r.Trial, r.PromptIds, r.BaseIds, r.CountBase, r.CountInjected, r.MassBase, r.MassInjected))];
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Output;

/// <summary>The <c>manifest.json</c> every scan writes: tool and version, device, inputs with hashes (model config, SAE
/// cfgs, corpus files), options, and results (counts, timings).</summary>
public static class ScanManifest
{
    /// <summary>What every manifest starts with — tool, version, time, device and the model (folder, config hash) — then
    /// the entries of <paramref name="rest"/> (moved over, in order).</summary>
    public static JsonObject Header(string tool, Model model, string device, JsonObject? rest = null) => Header(tool, ModelEntry(model), device, rest);

    /// <summary>The manifest's <c>model</c> entry: the folder and its config's hash.</summary>
    public static JsonObject ModelEntry(Model model) => new() { ["folder"] = model.Folder, ["config_sha256"] = Sha256(Path.Combine(model.Folder, "config.json")) };

    /// <summary>The header with any <c>model</c> entry (a served model: its endpoint and name).</summary>
    public static JsonObject Header(string tool, JsonObject model, string device, JsonObject? rest = null)
    {
        var m = new JsonObject
        {
            ["tool"] = tool,
            ["version"] = typeof(Model).Assembly.GetName().Version!.ToString(),
            ["created_utc"] = DateTime.UtcNow.ToString("O"),
            ["device"] = device,
            ["model"] = model,
        };
        foreach (var key in rest?.Select(x => x.Key).ToList() ?? [])
        {
            var value = rest![key];
            rest.Remove(key);
            m[key] = value;
        }
        return m;
    }

    public static JsonObject Build(string tool, Model model, IReadOnlyList<SparseAutoencoder> saes, IReadOnlyList<string> names, string corpusPath,
        IReadOnlyList<string> corpusFiles, string device, JsonObject options, JsonObject results)
    {
        var m = Header(tool, model, device);
        m["saes"] = new JsonArray(saes.Select((s, i) => (JsonNode)new JsonObject
        {
            ["name"] = names[i], ["folder"] = s.Config.Folder, ["format"] = s.Config.Format, ["hook"] = s.Config.Hook.ToString(),
            ["d_sae"] = s.Config.DSae, ["architecture"] = s.Config.Architecture.ToString(), ["processing"] = s.Processing,
            ["cfg_sha256"] = Sha256(Path.Combine(s.Config.Folder, "cfg.json")),
        }).ToArray());
        m["corpus"] = new JsonObject
        {
            ["path"] = corpusPath,
            ["files"] = new JsonArray(corpusFiles.Select(f => (JsonNode)new JsonObject { ["file"] = f, ["bytes"] = FileLinks.Length(f), ["sha256"] = Sha256(f) }).ToArray()),
        };
        m["options"] = options;
        m["results"] = results;
        return m;
    }

    public static void Save(string outDir, JsonObject manifest) =>
        AtomicFile.WriteText(Path.Combine(outDir, "manifest.json"), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    public static string Sha256(string file)
    {
        using var s = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using PolyEngine.Formats;

namespace PolyEngine.Output;

/// <summary>The <c>manifest.json</c> every scan writes: tool and version, device, inputs with hashes (model config, SAE
/// cfgs, corpus files), options, and results (counts, timings).</summary>
public static class ScanManifest
{
    public static JsonObject Build(string tool, Model model, IReadOnlyList<SparseAutoencoder> saes, IReadOnlyList<string> names, string corpusPath,
        IReadOnlyList<string> corpusFiles, string device, JsonObject options, JsonObject results) => new()
    {
        ["tool"] = tool,
        ["version"] = typeof(Model).Assembly.GetName().Version!.ToString(),
        ["created_utc"] = DateTime.UtcNow.ToString("O"),
        ["device"] = device,
        ["model"] = new JsonObject { ["folder"] = model.Folder, ["config_sha256"] = Sha256(Path.Combine(model.Folder, "config.json")) },
        ["saes"] = new JsonArray(saes.Select((s, i) => (JsonNode)new JsonObject
        {
            ["name"] = names[i], ["folder"] = s.Config.Folder, ["format"] = s.Config.Format, ["hook"] = s.Config.Hook.ToString(),
            ["d_sae"] = s.Config.DSae, ["architecture"] = s.Config.Architecture.ToString(), ["processing"] = s.Processing,
            ["cfg_sha256"] = Sha256(Path.Combine(s.Config.Folder, "cfg.json")),
        }).ToArray()),
        ["corpus"] = new JsonObject
        {
            ["path"] = corpusPath,
            ["files"] = new JsonArray(corpusFiles.Select(f => (JsonNode)new JsonObject { ["file"] = f, ["bytes"] = FileLinks.Length(f), ["sha256"] = Sha256(f) }).ToArray()),
        },
        ["options"] = options,
        ["results"] = results,
    };

    public static void Save(string outDir, JsonObject manifest) =>
        AtomicFile.WriteText(Path.Combine(outDir, "manifest.json"), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    public static string Sha256(string file)
    {
        using var s = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}

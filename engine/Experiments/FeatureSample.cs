using System.Text.Json;

namespace PolyEngine.Experiments;

/// <summary>A sampled partner of a target in one interference bin: its feature, the pair's decoder cosine (interference)
/// and explanation similarity.</summary>
public sealed record SamplePartner(int Feature, double Interference, double Similarity);

/// <summary>A sampled target under one τ, with its partners per bin (in the bins' order, <see cref="Scans.InterferenceBins.Keys"/>).</summary>
public sealed record SampleTarget(int Feature, double Tau, IReadOnlyList<IReadOnlyList<SamplePartner>> Bins);

/// <summary>One SAE's sample: where the SAE is, its hook and width, and its targets.</summary>
public sealed record SaeSample(string Name, string Folder, HookName Hook, int DSae, IReadOnlyList<SampleTarget> Targets);

/// <summary>Reads the interference scan's <c>sample.json</c> (<c>polyengine interference --sample</c>).</summary>
public static class FeatureSample
{
    public static IReadOnlyList<SaeSample> Load(string path)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--sample {path}: file not found; run polyengine interference with --sample to make it");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            var bins = root.GetProperty("bins").EnumerateArray().Select(b => b.GetString()!).ToArray();
            if (!bins.SequenceEqual(Scans.InterferenceBins.Keys))
                throw new PolyEngineException($"--sample {path}: its bins {string.Join(", ", bins)} are not this version's {string.Join(", ", Scans.InterferenceBins.Keys)}");
            return root.GetProperty("saes").EnumerateArray().Select(s => new SaeSample(
                s.GetProperty("sae").GetString()!, s.GetProperty("folder").GetString()!, HookName.Parse(s.GetProperty("hook").GetString()!), s.GetProperty("d_sae").GetInt32(),
                s.GetProperty("taus").EnumerateArray().SelectMany(t => t.GetProperty("targets").EnumerateArray().Select(x => new SampleTarget(
                    x.GetProperty("feature").GetInt32(), t.GetProperty("tau").GetDouble(),
                    bins.Select(b => (IReadOnlyList<SamplePartner>)x.GetProperty("bins").GetProperty(b).GetProperty("partners").EnumerateArray()
                        .Select(p => new SamplePartner(p.GetProperty("feature").GetInt32(), p.GetProperty("cosine").GetDouble(), p.GetProperty("similarity").GetDouble())).ToList()).ToList()))).ToList()))
                .ToList();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new PolyEngineException($"--sample {path}: not an interference sample ({e.Message.Split('\n')[0]}); make it with polyengine interference --sample");
        }
    }
}

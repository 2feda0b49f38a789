using System.Globalization;
using System.Text;
using System.Text.Json;
using PolyEngine.Formats;
using PolyEngine.Models;
using PolyEngine.Tokenization;
using PolyEngine.Toys;

namespace PolyEngine.Toys;

/// <summary>
/// A synthetic explanation export for an SAE, in the Neuronpedia JSONL layout <see cref="Explanations"/> reads, for the
/// demo and tests: feature j belongs to one of <c>topics</c> topics and its embedding is the topic's direction plus
/// noise (so features of one topic are related, others mostly not); every tenth feature has no explanation and every
/// seventh has two (averaged on load). Deterministic per seed.
/// </summary>
public static class ToyExplanations
{
    public static void Write(string path, int dSae, int dim = 32, int topics = 8, ulong seed = 0)
    {
        var rng = new Rng(seed);
        var centres = rng.Normals([topics, dim], 1f);
        AtomicFile.Write(path, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
            for (int j = 0; j < dSae; j++)
            {
                if (j % 10 == 9) continue;
                int topic = (int)(rng.NextU64() % (ulong)topics);
                for (int copy = 0; copy < (j % 7 == 3 ? 2 : 1); copy++)
                {
                    var noise = rng.Normals([dim], 0.6f);
                    var e = Enumerable.Range(0, dim).Select(i => centres[topic * dim + i] + noise[i]).ToArray();
                    w.Write(JsonSerializer.Serialize(new Dictionary<string, object>
                    {
                        ["modelId"] = "toy", ["index"] = j.ToString(CultureInfo.InvariantCulture),
                        ["description"] = $"toy feature {j}, topic {topic}", ["embedding"] = e,
                    }));
                    w.Write('\n');
                }
            }
        });
    }
}

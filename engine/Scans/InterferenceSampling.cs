using System.Numerics.Tensors;
using System.Text.Json.Nodes;

namespace PolyEngine.Scans;

/// <summary>The paper's target sampling (docs/METHOD.md §2.6): targets per SAE and τ, partners per bin, and the seed.</summary>
public sealed record InterferenceSampleOptions(int Targets, int PartnersPerBin = 3, ulong Seed = 0);

/// <summary>
/// The paper's seeded sampling of targets and partners (docs/METHOD.md §2.6), reproducible from a seed: per SAE and τ, draw
/// n targets from the qualified set (ascending feature order, a partial Fisher–Yates shuffle); for each target and bin,
/// its full list of unrelated partners (ascending feature order) is rebuilt from the decoder and embedding rows, a start
/// is drawn uniformly, and the list is walked circularly for the first k partners — as the authors' sampler does, with
/// SplitMix64 seeded from (seed, SAE name, τ) instead of Python's generator, so the same seed gives the same sample on
/// every machine but not the authors' exact draw.
/// </summary>
public static class InterferenceSampling
{
    public static JsonObject Draw(InterferenceInputs inp, InterferenceState st, float[] taus, InterferenceSampleOptions o,
        LogitLens? lens = null, CoactivationLookup? coactivation = null)
    {
        int n = inp.N, d = inp.D, e = inp.EmbedDim;
        var f = inp.Features;
        var perTau = new JsonArray();
        for (int t = 0; t < taus.Length; t++)
        {
            var rng = new Rng(Mix(o.Seed, inp.Name, t));
            var pool = Enumerable.Range(0, n).Where(a => st.Qualified(t, a)).ToArray();
            int take = Math.Min(o.Targets, pool.Length);
            for (int i = 0; i < take; i++)   // partial Fisher–Yates: pool[0..take) is the draw, in draw order
            {
                int j = i + (int)(rng.NextU64() % (ulong)(pool.Length - i));
                (pool[i], pool[j]) = (pool[j], pool[i]);
            }
            var targets = new JsonArray();
            var cos = new float[n];
            var sim = new float[n];
            foreach (int a in pool.Take(take))
            {
                Parallel.For(0, n, b =>
                {
                    cos[b] = InterferenceBins.Clamp(TensorPrimitives.Dot(inp.Unit.AsSpan(a * d, d), inp.Unit.AsSpan(b * d, d)));
                    sim[b] = TensorPrimitives.Dot(inp.Embed.AsSpan(a * e, e), inp.Embed.AsSpan(b * e, e));
                });
                var bins = new JsonObject();
                for (int bin = 0; bin < InterferenceBins.Count; bin++)
                {
                    var list = Enumerable.Range(0, n).Where(b => b != a && InterferenceBins.Of(cos[b]) == bin && sim[b] < taus[t]).ToArray();
                    var chosen = new JsonArray();
                    if (list.Length > 0)
                    {
                        int start = (int)(rng.NextU64() % (ulong)list.Length);
                        for (int k = 0; k < Math.Min(o.PartnersPerBin, list.Length); k++)
                        {
                            int p = list[(start + k) % list.Length];
                            var partner = new JsonObject { ["feature"] = f[p], ["cosine"] = cos[p], ["similarity"] = sim[p] };
                            if (lens is not null) partner["logit_cosine"] = Finite(lens.Cosine(a, p));
                            if (coactivation is not null) partner["coactivation_jaccard"] = Finite(coactivation.Jaccard(f[a], f[p]));
                            chosen.Add(partner);
                        }
                    }
                    bins[InterferenceBins.Keys[bin]] = new JsonObject { ["candidates"] = list.Length, ["partners"] = chosen };
                }
                var entry = new JsonObject { ["feature"] = f[a] };
                if (inp.Explanations?.Description(f[a]) is { } text) entry["explanation"] = text;
                entry["bins"] = bins;
                targets.Add(entry);
            }
            perTau.Add(new JsonObject { ["tau"] = taus[t], ["qualified"] = pool.Length, ["targets"] = targets });
        }
        return new JsonObject
        {
            ["sae"] = inp.Name, ["folder"] = Path.GetFullPath(inp.Config.Folder), ["hook"] = inp.Config.Hook.ToString(), ["d_sae"] = inp.Config.DSae,
            ["taus"] = perTau,
        };
    }

    /// <summary>JSON has no NaN: an undefined proxy (no logit effect, never fired) is null.</summary>
    static JsonNode? Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;

    static JsonNode? Finite(float v) => float.IsFinite(v) ? JsonValue.Create(v) : null;

    /// <summary>A generator seed from the run's seed, the SAE's name (FNV-1a) and the τ's position.</summary>
    static ulong Mix(ulong seed, string name, int tau)
    {
        ulong h = 0xcbf29ce484222325UL;
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(name)) h = (h ^ b) * 0x100000001b3UL;
        return seed ^ h ^ ((ulong)(tau + 1) * 0x9E3779B97F4A7C15UL);
    }
}

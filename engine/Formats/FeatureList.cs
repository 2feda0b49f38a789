using System.Globalization;
using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>
/// A list of feature indices of one SAE (e.g. the paper's "active" features): a <c>.json</c> array of integers, or
/// text with integers separated by commas, spaces or newlines (<c>#</c> starts a comment; <c>np.savetxt</c> output
/// reads as is). Returned sorted and distinct; an index outside 0..d_sae−1 is an error naming its line.
/// </summary>
public static class FeatureList
{
    public static int[] Load(string path, int dSae)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--active {path}: file not found");
        var found = new SortedSet<int>();
        void Add(long value, string where)
        {
            if (value < 0 || value >= dSae)
                throw new PolyEngineException($"--active {where}: feature {value} is outside 0..{dSae - 1} of this SAE; the list belongs to another SAE (check the order of --active against --sae)");
            found.Add((int)value);
        }
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(FileLinks.ReadAllText(path)); }
            catch (JsonException e) { throw new PolyEngineException($"--active {path}: not valid JSON ({e.Message.Split('.')[0]})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new PolyEngineException($"--active {path}: expected a JSON array of feature indices");
                int i = 0;
                foreach (var v in doc.RootElement.EnumerateArray())
                {
                    if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
                        throw new PolyEngineException($"--active {path}: element {i} is not an integer");
                    Add(x, $"{path} element {i}");
                    i++;
                }
            }
        }
        else
        {
            int lineNo = 0;
            foreach (var raw in File.ReadLines(FileLinks.Resolve(path)))
            {
                lineNo++;
                string line = raw.Split('#')[0];
                foreach (var token in line.Split([',', ' ', '\t', ';'], StringSplitOptions.RemoveEmptyEntries))
                {
                    if (!double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) || x != Math.Floor(x) || double.IsInfinity(x))
                        throw new PolyEngineException($"--active {path}:{lineNo}: '{token}' is not a feature index (an integer)");
                    Add((long)x, $"{path}:{lineNo}");
                }
            }
        }
        if (found.Count == 0) throw new PolyEngineException($"--active {path}: the list is empty; give at least two feature indices");
        return found.ToArray();
    }
}

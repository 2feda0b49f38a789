using System.Text.Json;

namespace PolyEngine.Tokenization;

/// <summary>Parses token-id inputs: <c>"1,2,3;4,5"</c> (rows separated by ';') or a JSON file holding an array of rows;
/// rows may differ in length (a run right-pads them).</summary>
public static class TokenIds
{
    public static int[][] ParseList(string text)
    {
        var rows = new List<int[]>();
        foreach (var (row, r) in text.Split(';', StringSplitOptions.TrimEntries).Select((x, i) => (x, i)))
        {
            if (row.Length == 0) throw new PolyEngineException($"--ids: row {r} is empty; write rows as \"1,2,3;4,5,6\"");
            rows.Add(row.Split(',', StringSplitOptions.TrimEntries).Select((x, i) =>
                int.TryParse(x, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int v) ? v
                : throw new PolyEngineException($"--ids: '{x}' (row {r}, position {i}) is not an integer token id")).ToArray());
        }
        return CheckRows(rows, "--ids");
    }

    public static int[][] ParseJsonFile(string path)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--ids-file {path}: file not found");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Formats.FileLinks.ReadAllText(path)); }
        catch (JsonException e) { throw new PolyEngineException($"--ids-file {path}: not valid JSON ({e.Message.Split('\n')[0]}); expected [[1,2,3],[4,5,6]]"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new PolyEngineException($"--ids-file {path}: expected a JSON array of rows like [[1,2,3],[4,5,6]]");
            var rows = new List<int[]>();
            int r = 0;
            foreach (var row in doc.RootElement.EnumerateArray())
            {
                if (row.ValueKind != JsonValueKind.Array) throw new PolyEngineException($"--ids-file {path}: row {r} is not an array of token ids");
                rows.Add(row.EnumerateArray().Select((x, i) => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int v) ? v
                    : throw new PolyEngineException($"--ids-file {path}: row {r}, position {i}: '{x}' is not an integer token id")).ToArray());
                r++;
            }
            return CheckRows(rows, $"--ids-file {path}");
        }
    }

    static int[][] CheckRows(List<int[]> rows, string what)
    {
        if (rows.Count == 0) throw new PolyEngineException($"{what}: no token ids given");
        for (int r = 0; r < rows.Count; r++)
            if (rows[r].Length == 0) throw new PolyEngineException($"{what}: row {r} is empty; give at least one token id per row");
        return rows.ToArray();
    }
}

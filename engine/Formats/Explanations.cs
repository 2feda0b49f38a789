using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>
/// Feature explanation embeddings as Neuronpedia exports them: JSONL (optionally gzipped, <c>.gz</c>), one explanation
/// per line with <c>index</c> (the feature, an integer or a string of one), <c>description</c> and <c>embedding</c>
/// (an array of numbers); other fields are ignored. Several explanations of one feature are averaged, as the paper's
/// code does. Read streaming, line by line. A line without an embedding (absent or null) leaves its feature without one;
/// a malformed line (not a JSON object, no integer index, an embedding that is not an array of numbers) is skipped and
/// reported, or fails the load with its line number when <c>strict</c>. An index outside 0..d_sae−1 and an embedding
/// whose length differs from the first one are always errors.
/// </summary>
public sealed class Explanations
{
    float[]? _sum;              // [features, dim]: the sum of a feature's embeddings (null once released)
    readonly int[] _count;      // embeddings per feature
    readonly string?[] _description;

    Explanations(string path, int features, int dim, float[] sum, int[] count, string?[] description)
    {
        Path = path;
        Features = features;
        Dim = dim;
        _sum = sum;
        _count = count;
        _description = description;
    }

    public string Path { get; }
    public int Features { get; }
    /// <summary>Embedding width (e.g. 3072 for text-embedding-3-large).</summary>
    public int Dim { get; }
    /// <summary>Lines read, lines that had an embedding, malformed lines skipped (first few line numbers kept).</summary>
    public long Lines { get; private init; }
    public long Embedded { get; private init; }
    public long Skipped { get; private init; }
    public IReadOnlyList<long> SkippedLines { get; private init; } = [];

    public bool Has(int feature) => _count[feature] > 0;
    public int CountFor(int feature) => _count[feature];
    public string? Description(int feature) => _description[feature];

    /// <summary>The feature's mean embedding scaled to unit length, written into <paramref name="dst"/>; false when the
    /// feature has no embedding or its mean is zero.</summary>
    public bool UnitMean(int feature, Span<float> dst)
    {
        if (_count[feature] == 0) return false;
        if (_sum is null) throw new InvalidOperationException("the embeddings were released");
        var sum = _sum.AsSpan(feature * Dim, Dim);
        double ss = 0;
        foreach (var v in sum) ss += (double)v * v;
        if (ss == 0) return false;
        float inv = (float)(1 / Math.Sqrt(ss));
        for (int i = 0; i < Dim; i++) dst[i] = sum[i] * inv;
        return true;
    }

    /// <summary>Frees the embedding sums (d_sae × dim floats) once the unit means are taken; counts and descriptions stay.</summary>
    public void ReleaseEmbeddings() => _sum = null;

    public static Explanations Load(string path, int dSae, bool strict)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"--explanations {path}: file not found");
        using Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? CheckedGzip.Open(path, $"--explanations {path}") : FileLinks.OpenRead(path);
        using var reader = new StreamReader(stream, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true, 1 << 16);
        int dim = 0;
        float[]? sum = null;
        var count = new int[dSae];
        var description = new string?[dSae];
        long lineNo = 0, embedded = 0, skipped = 0;
        var skippedLines = new List<long>();
        string? line;
        try
        {
            while ((line = reader.ReadLine()) is not null)
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                string? problem = Parse(line, out int index, out string? desc, out JsonElement embedding, out JsonDocument? doc);
                using (doc)
                {
                    if (problem is null && (uint)index >= (uint)dSae)
                        throw new PolyEngineException($"--explanations {path}:{lineNo}: feature index {index} is outside 0..{dSae - 1} of this SAE; the file belongs to another SAE (check the order of --explanations against --sae)");
                    if (problem is null && embedding.ValueKind == JsonValueKind.Array)
                    {
                        int len = embedding.GetArrayLength();
                        if (dim == 0)
                        {
                            if (len == 0) problem = "its embedding is empty";
                            else { dim = len; sum = new float[checked((long)dSae * dim)]; }
                        }
                        else if (len != dim)
                            throw new PolyEngineException($"--explanations {path}:{lineNo}: embedding has {len} values, earlier lines have {dim}; all embeddings must come from one embedding model");
                        if (problem is null)
                        {
                            var dst = sum.AsSpan(index * dim, dim);
                            var values = new float[dim];
                            int k = 0;
                            foreach (var v in embedding.EnumerateArray())
                            {
                                if (v.ValueKind != JsonValueKind.Number || !v.TryGetSingle(out float f) || !float.IsFinite(f)) { problem = $"embedding value {k} is not a finite number"; break; }
                                values[k++] = f;
                            }
                            if (problem is null)
                            {
                                for (int i = 0; i < dim; i++)
                                {
                                    dst[i] += values[i];
                                    if (!float.IsFinite(dst[i]))
                                        throw new PolyEngineException($"--explanations {path}:{lineNo}: the embeddings of feature {index} add up past float32's range " +
                                            $"(a value of {values[i]:g3}); explanation embeddings are unit vectors — check the file");
                                }
                                count[index]++;
                                embedded++;
                            }
                        }
                    }
                    if (problem is null && desc is not null) description[index] ??= desc;
                }
                if (problem is null) continue;
                if (strict) throw new PolyEngineException($"--explanations {path}:{lineNo}: {problem}; fix the line, or drop --strict to skip malformed lines");
                skipped++;
                if (skippedLines.Count < 10) skippedLines.Add(lineNo);
            }
        }
        catch (InvalidDataException e)
        {
            throw new PolyEngineException($"--explanations {path}: not a readable gzip file ({e.Message})");
        }
        if (embedded == 0)
            throw new PolyEngineException($"--explanations {path}: no line carries an embedding ({lineNo} lines, {skipped} malformed); give a Neuronpedia explanation export with embeddings");
        return new Explanations(path, dSae, dim, sum!, count, description)
        {
            Lines = lineNo, Embedded = embedded, Skipped = skipped, SkippedLines = skippedLines,
        };
    }

    /// <summary>Null when the line is well-formed (embedding: Undefined/Null when absent), else what is wrong with it.</summary>
    static string? Parse(string line, out int index, out string? description, out JsonElement embedding, out JsonDocument? doc)
    {
        index = -1;
        description = null;
        embedding = default;
        doc = null;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { return $"not valid JSON ({e.Message.Split('.')[0]})"; }
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) return "not a JSON object";
        if (!root.TryGetProperty("index", out var idx)) return "no 'index' field";
        if (idx.ValueKind == JsonValueKind.Number ? !idx.TryGetInt32(out index)
            : idx.ValueKind != JsonValueKind.String || !int.TryParse(idx.GetString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out index))
            return "'index' is not a non-negative integer";
        if (root.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String) description = d.GetString();
        if (root.TryGetProperty("embedding", out embedding) && embedding.ValueKind is not (JsonValueKind.Array or JsonValueKind.Null))
            return "'embedding' is not an array of numbers";
        return null;
    }
}

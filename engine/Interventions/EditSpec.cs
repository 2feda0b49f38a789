using System.Text.Json;
using PolyEngine.Formats;
using PolyEngine.Models;

namespace PolyEngine.Interventions;

/// <summary>
/// One edit as a user writes it (the objects of <c>polyengine run --edits FILE.json</c>), resolved against a model and a
/// batch into a <see cref="HookEdit"/> (<see cref="Resolve"/>):
/// <list type="bullet">
/// <item><c>{"hook": H, "add": [width floats], "scale": s}</c>: x += s·add (the float32 product formed first; s defaults to 1);</item>
/// <item><c>{"hook": H, "coordinate": i, "factor": f}</c>: x[..., i] *= f; <c>{"hook": H, "coordinate": i, "value": v}</c>: x[..., i] = v;</item>
/// </list>
/// each optionally limited to <c>"rows": [batch rows]</c> and to <c>"positions": [positions]</c> or <c>"from": p</c>
/// (default: every row and position). The hook is a TransformerLens name, <c>hook_embed</c> included.
/// </summary>
public sealed record EditSpec(HookName Hook)
{
    public float[]? Add { get; init; }
    public float Scale { get; init; } = 1f;
    public int? Coordinate { get; init; }
    public float? Factor { get; init; }
    public float? Value { get; init; }
    /// <summary>Batch rows edited; null: all.</summary>
    public int[]? Rows { get; init; }
    /// <summary>Positions edited; null: all (or from <see cref="From"/>).</summary>
    public int[]? Positions { get; init; }
    /// <summary>The first position edited; null: 0.</summary>
    public int? From { get; init; }

    /// <summary>x += scale·vector at every position (feature steering).</summary>
    public static EditSpec Steer(HookName hook, float[] vector, float scale = 1f) => new(hook) { Add = vector, Scale = scale };

    /// <summary>x[..., coordinate] *= factor (neuron scaling; 0 ablates).</summary>
    public static EditSpec ScaleCoordinate(HookName hook, int coordinate, float factor) => new(hook) { Coordinate = coordinate, Factor = factor };

    /// <summary>This edit for <paramref name="spec"/>'s model and a batch [<paramref name="batch"/>, <paramref name="seq"/>]; a
    /// one-line error (starting with <paramref name="where"/>) for anything that does not fit.</summary>
    public HookEdit Resolve(ModelSpec spec, int batch, int seq, string where = "edit")
    {
        string at = $"{where} ({Hook})";
        if (!HookName.AllFor(spec).Contains(Hook)) throw new PolyEngineException($"{at}: this {spec.Architecture} model has no hook {Hook}");
        try { HookEdit.CheckEditable(Hook); }
        catch (PolyEngineException e) { throw new PolyEngineException($"{where}: {e.Message}"); }
        int width = Hook.WidthFor(spec);
        bool vector = Add is not null, coordinate = Coordinate is not null;
        if (vector == coordinate) throw new PolyEngineException($"{at}: give either \"add\" (a vector) or \"coordinate\" (with \"factor\" or \"value\")");
        if (coordinate && (Factor is null) == (Value is null)) throw new PolyEngineException($"{at}: a \"coordinate\" edit needs one of \"factor\" or \"value\"");
        if (vector && (Factor is not null || Value is not null)) throw new PolyEngineException($"{at}: \"factor\" and \"value\" go with \"coordinate\", not with \"add\"");
        if (Positions is not null && From is not null) throw new PolyEngineException($"{at}: give \"positions\" or \"from\", not both");
        if (!float.IsFinite(Scale)) throw new PolyEngineException($"{at}: \"scale\" is {Scale}; give a finite number");

        // The edit of one position: x·mul + add over [width] (null mul: 1, null add: 0).
        float[]? mul = null, add = null;
        if (vector)
        {
            if (Add!.Length != width) throw new PolyEngineException($"{at}: \"add\" has {Add.Length} values; the hook is {width} wide");
            int bad = Array.FindIndex(Add, v => !float.IsFinite(v));
            if (bad >= 0) throw new PolyEngineException($"{at}: \"add\"[{bad}] is {Add[bad]}; give finite numbers");
            add = new float[width];
            for (int i = 0; i < width; i++) add[i] = Scale * Add[i];   // float32, as `out + (scale * v)`
            int overflow = Array.FindIndex(add, v => !float.IsFinite(v));
            if (overflow >= 0) throw new PolyEngineException($"{at}: \"scale\" × \"add\"[{overflow}] overflows float32; give a smaller scale");
        }
        else
        {
            int c = Coordinate!.Value;
            if (c < 0 || c >= width) throw new PolyEngineException($"{at}: coordinate {c} is outside the hook's width 0..{width - 1}");
            float f = Factor ?? 0f;
            if (!float.IsFinite(f) || Value is float v && !float.IsFinite(v)) throw new PolyEngineException($"{at}: \"factor\"/\"value\" must be finite numbers");
            mul = Enumerable.Repeat(1f, width).ToArray();
            mul[c] = f;
            if (Value is float value)
            {
                add = new float[width];
                add[c] = value;
            }
        }

        var rows = Rows ?? Enumerable.Range(0, batch).ToArray();
        foreach (int r in rows)
            if (r < 0 || r >= batch) throw new PolyEngineException($"{at}: row {r} does not exist; the input has rows 0..{batch - 1}");
        if (From is int from0 && (from0 < 0 || from0 >= seq)) throw new PolyEngineException($"{at}: \"from\" {from0} is outside the input's positions 0..{seq - 1}");
        foreach (int p in Positions ?? [])
            if (p < 0 || p >= seq) throw new PolyEngineException($"{at}: position {p} is outside the input's positions 0..{seq - 1}");
        var selected = new HashSet<int>(rows);
        if (Positions is null)   // every position from `from` on, in the selected rows (others start past the end)
            return new HookEdit(Hook)
            {
                Mul = mul, Add = add,
                From = Enumerable.Range(0, batch).Select(b => selected.Contains(b) ? From ?? 0 : seq).ToArray(),
            };
        // Listed positions: per-position Mul and Add, the identity (1, 0) elsewhere.
        var mulAll = Enumerable.Repeat(1f, batch * seq * width).ToArray();
        var addAll = new float[batch * seq * width];
        foreach (int b in selected)
            foreach (int p in Positions.Distinct())
            {
                int o = (b * seq + p) * width;
                mul?.CopyTo(mulAll, o);
                add?.CopyTo(addAll, o);
            }
        return new HookEdit(Hook) { Mul = mul is null ? null : mulAll, Add = add is null ? null : addAll };
    }

    /// <summary>The edits of a JSON file: an array of edit objects (or <c>{"edits": [...]}</c>), in the order they apply.</summary>
    public static IReadOnlyList<EditSpec> Load(string path)
    {
        string text;
        try { text = FileLinks.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolyEngineException($"--edits {path}: cannot be read ({e.Message}); give a JSON file of edits");
        }
        return Parse(text, $"--edits {path}");
    }

    /// <summary>The edits of a JSON text (<see cref="Load"/>); errors start with <paramref name="source"/>.</summary>
    public static IReadOnlyList<EditSpec> Parse(string json, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e)
        {
            throw new PolyEngineException($"{source}: not valid JSON at line {e.LineNumber + 1} ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("edits", out var inner)) root = inner;
            if (root.ValueKind != JsonValueKind.Array)
                throw new PolyEngineException($"{source}: expected an array of edits, e.g. [{{\"hook\": \"blocks.1.hook_resid_post\", \"add\": [...], \"scale\": 4}}]");
            return root.EnumerateArray().Select((e, i) => ParseOne(e, $"{source}: edit {i}")).ToList();
        }
    }

    static readonly HashSet<string> Fields = ["hook", "add", "scale", "coordinate", "factor", "value", "rows", "positions", "from"];

    static EditSpec ParseOne(JsonElement e, string where)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"{where}: not a JSON object");
        foreach (var p in e.EnumerateObject())
            if (!Fields.Contains(p.Name)) throw new PolyEngineException($"{where}: unknown field \"{p.Name}\"; the fields are {string.Join(", ", Fields)}");
        if (!e.TryGetProperty("hook", out var hook) || hook.ValueKind != JsonValueKind.String)
            throw new PolyEngineException($"{where}: \"hook\" is missing; give a TransformerLens hook name, e.g. \"blocks.1.hook_resid_post\"");
        HookName name;
        try { name = HookName.Parse(hook.GetString()!); }
        catch (PolyEngineException ex) { throw new PolyEngineException($"{where}: {ex.Message}"); }
        float Number(JsonElement x, string field) => x.ValueKind == JsonValueKind.Number && x.TryGetSingle(out float f) && float.IsFinite(f) ? f
            : throw new PolyEngineException($"{where}: \"{field}\" must be a finite number, got {x.GetRawText()}");
        int Int(JsonElement x, string field) => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int i) ? i
            : throw new PolyEngineException($"{where}: \"{field}\" must be an integer, got {x.GetRawText()}");
        T[] List<T>(string field, Func<JsonElement, string, T> item) =>
            e.GetProperty(field) is { ValueKind: JsonValueKind.Array } a ? a.EnumerateArray().Select((x, i) => item(x, $"{field}[{i}]")).ToArray()
            : throw new PolyEngineException($"{where}: \"{field}\" must be an array");
        bool Has(string field) => e.TryGetProperty(field, out _);
        return new EditSpec(name)
        {
            Add = Has("add") ? List("add", Number) : null,
            Scale = Has("scale") ? Number(e.GetProperty("scale"), "scale") : 1f,
            Coordinate = Has("coordinate") ? Int(e.GetProperty("coordinate"), "coordinate") : null,
            Factor = Has("factor") ? Number(e.GetProperty("factor"), "factor") : null,
            Value = Has("value") ? Number(e.GetProperty("value"), "value") : null,
            Rows = Has("rows") ? List("rows", Int) : null,
            Positions = Has("positions") ? List("positions", Int) : null,
            From = Has("from") ? Int(e.GetProperty("from"), "from") : null,
        };
    }
}

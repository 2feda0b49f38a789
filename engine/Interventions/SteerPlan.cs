using System.Numerics.Tensors;
using PolyEngine.Models;

namespace PolyEngine.Interventions;

/// <summary>A prompt of a sweep: its token ids (run as given: prepend BOS yourself if you want one) and its target tokens
/// (duplicates ignored; the first is the rank metrics' test token).</summary>
public sealed record SteerPrompt(int[] Ids, int[] Targets);

/// <summary>The scale and factor grids of the paper.</summary>
public static class SteerGrids
{
    /// <summary>±{0.5, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 20}: 32 scales, negative first (the authors' order).</summary>
    public static readonly float[] PaperScales =
        [.. new float[] { 0.5f, 1, 1.5f, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 20 }.Reverse().Select(x => -x),
         0.5f, 1, 1.5f, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 20];

    /// <summary>The neuron locus's factors {0, 0.1, 0.2, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 15, 18, 20}.</summary>
    public static readonly float[] NeuronPaperFactors = [0, 0.1f, 0.2f, 0.5f, 0.75f, 1, 1.5f, 2, 2.5f, 3, 4, 5, 6, 8, 10, 12, 15, 18, 20];

    /// <summary>Parses an index list such as <c>12,40-43,7</c> (ranges inclusive), each index in 0..<paramref name="bound"/>−1;
    /// kept in the order given, duplicates dropped.</summary>
    public static int[] ParseIndices(string? text, string option, int bound, string what)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new PolyEngineException($"{option} is empty; give {what} indices like 12,40-43");
        var result = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var ends = part.Split('-', 2);
            if (!int.TryParse(ends[0], out int a) || !int.TryParse(ends[^1], out int b) || a > b)
                throw new PolyEngineException($"{option}: '{part}' is not an index or a range like 40-43");
            for (int i = a; i <= b; i++)
            {
                if (i < 0 || i >= bound) throw new PolyEngineException($"{option}: {what} {i} is outside 0..{bound - 1}");
                if (!result.Contains(i)) result.Add(i);
            }
        }
        return result.ToArray();
    }

    /// <summary>Parses a grid option: <paramref name="paperName"/> (the paper's grid) or comma-separated finite numbers.</summary>
    public static float[] Parse(string? text, string option, string paperName, float[] paper)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Trim() == paperName) return paper;
        var values = new List<float>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!float.TryParse(part, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
                throw new PolyEngineException($"{option}: '{part}' is not a finite number; give '{paperName}' or numbers like 0.5,1,-2");
            values.Add(v);
        }
        if (values.Count == 0) throw new PolyEngineException($"{option} is empty; give '{paperName}' or a list of numbers");
        return values.ToArray();
    }
}

/// <summary>
/// A steering sweep (<see cref="SteerSweep"/>): every prompt × every edit at one hook, plus one baseline row per prompt.
/// The feature locus adds scale·v̂ at every position for each unit vector v̂ (<see cref="Vectors"/>, made unit-norm here:
/// the paper's dir/‖dir‖) and scale; the neuron locus multiplies coordinate i of the hook by each factor
/// (<see cref="Neurons"/>, <see cref="Factors"/>). Give vectors or neurons, not both.
/// </summary>
public sealed record SteerPlan
{
    public required HookName Hook { get; init; }
    public required IReadOnlyList<SteerPrompt> Prompts { get; init; }
    /// <summary>[n][width] directions; each is divided by its norm (float32) before use.</summary>
    public IReadOnlyList<float[]> Vectors { get; init; } = [];
    public IReadOnlyList<float> Scales { get; init; } = SteerGrids.PaperScales;
    /// <summary>Coordinates of the hook scaled by the neuron locus.</summary>
    public IReadOnlyList<int> Neurons { get; init; } = [];
    public IReadOnlyList<float> Factors { get; init; } = SteerGrids.NeuronPaperFactors;
    public IReadOnlyList<SteerMetric> Metrics { get; init; } = SteerMetrics.Default;
    /// <summary>Cosines on TransformerLens's mean-centred W_E instead of HF's.</summary>
    public bool CenterEmbeddings { get; init; }
    /// <summary>When positive, each row's k most likely next tokens and their probabilities.</summary>
    public int TopK { get; init; }
    /// <summary>The first position edited: null edits every position (the paper's steering); p ≥ 0 edits positions p and
    /// after; negative counts from each prompt's end (−1: its last token only). Positions before the first edited one are
    /// not recomputed: the edited passes run from there on, over the clean pass's keys and values (<see cref="KvPrefix"/>).</summary>
    public int? From { get; init; }
    /// <summary>Token positions (rows × padded length) one pass may hold: bounds memory, whatever the sweep's size.</summary>
    public int RowsBudget { get; init; } = DefaultRowsBudget;

    public const int DefaultRowsBudget = 8192;

    public bool NeuronLocus => Neurons.Count > 0;

    /// <summary>What one row edits: (vector or neuron index, scale or factor), in output order (items outer, amounts inner).</summary>
    public IReadOnlyList<(int Item, float Amount)> EditRows() => NeuronLocus
        ? Neurons.Select((_, i) => i).SelectMany(i => Factors.Select(f => (i, f))).ToList()
        : Vectors.Select((_, i) => i).SelectMany(i => Scales.Select(s => (i, s))).ToList();

    /// <summary>Interventions in the sweep (edited rows; the baselines not counted).</summary>
    public long Interventions => (long)Prompts.Count * EditRows().Count;

    /// <summary>A one-line error for anything in the plan that does not fit <paramref name="spec"/>'s model (checked again
    /// when the sweep starts; call it to fail before other work).</summary>
    public void Validate(ModelSpec spec) => Check(spec);

    /// <summary>One-line errors for a plan that does not fit <paramref name="spec"/>; the unit vectors when it does.</summary>
    internal float[][] Check(ModelSpec spec)
    {
        if (!HookName.AllFor(spec).Contains(Hook)) throw new PolyEngineException($"--hook {Hook}: this {spec.Architecture} model has no such hook");
        try { HookEdit.CheckEditable(Hook); }
        catch (PolyEngineException e) { throw new PolyEngineException($"--hook: {e.Message}"); }
        int width = Hook.WidthFor(spec);
        if (Prompts.Count == 0) throw new PolyEngineException("the sweep has no prompts; give at least one");
        for (int p = 0; p < Prompts.Count; p++)
        {
            var (ids, targets) = (Prompts[p].Ids, Prompts[p].Targets);
            if (ids.Length == 0) throw new PolyEngineException($"prompt {p} is empty; give at least one token");
            if (ids.Length > spec.NCtx) throw new PolyEngineException($"prompt {p} has {ids.Length} tokens, more than the context n_ctx = {spec.NCtx}; shorten it");
            if (ids.FirstOrDefault(i => (uint)i >= (uint)spec.DVocab, -1) is int bad && bad != -1)
                throw new PolyEngineException($"prompt {p}: token id {bad} is outside the vocabulary 0..{spec.DVocab - 1}");
            if (targets.Length == 0) throw new PolyEngineException($"prompt {p} has no targets; give at least one target token");
            if (targets.FirstOrDefault(i => (uint)i >= (uint)spec.DVocab, -1) is int badT && badT != -1)
                throw new PolyEngineException($"prompt {p}: target token {badT} is outside the vocabulary 0..{spec.DVocab - 1}");
        }
        if (NeuronLocus == (Vectors.Count > 0)) throw new PolyEngineException("give steering vectors or neurons (one locus per sweep), not both or neither");
        var amounts = NeuronLocus ? Factors : Scales;
        if (amounts.Count == 0) throw new PolyEngineException(NeuronLocus ? "--factors is empty" : "--scales is empty");
        if (amounts.FirstOrDefault(a => !float.IsFinite(a), 0f) is float nan && !float.IsFinite(nan))
            throw new PolyEngineException($"{(NeuronLocus ? "--factors" : "--scales")}: {nan} is not a finite number");
        foreach (int n in Neurons)
            if (n < 0 || n >= width) throw new PolyEngineException($"--neurons: coordinate {n} is outside the width of {Hook}, 0..{width - 1}");
        if (Metrics.Count == 0) throw new PolyEngineException("--metrics is empty; give at least one metric");
        if (TopK < 0 || TopK > spec.DVocab) throw new PolyEngineException($"--top {TopK} is not between 0 and d_vocab = {spec.DVocab}");
        if (RowsBudget < 1) throw new PolyEngineException($"--rows-budget must be positive, got {RowsBudget}");
        if (From is int from)
            for (int p = 0; p < Prompts.Count; p++)
                if (FirstEdited(p) is < 0 || FirstEdited(p) >= Prompts[p].Ids.Length)
                    throw new PolyEngineException($"--from {from}: prompt {p} has {Prompts[p].Ids.Length} tokens, so it has no position {from}; " +
                        "give a position every prompt has, or a negative one counted from each prompt's end (-1: the last token)");
        return Vectors.Select((v, i) => Unit(v, i, width)).ToArray();
    }

    /// <summary>Prompt <paramref name="prompt"/>'s first edited position (<see cref="From"/> resolved against its length; 0 when
    /// every position is edited).</summary>
    public int FirstEdited(int prompt) => From switch
    {
        null => 0,
        >= 0 and var p => p,
        var back => Prompts[prompt].Ids.Length + back.Value,
    };

    static float[] Unit(float[] v, int index, int width)
    {
        if (v.Length != width) throw new PolyEngineException($"vector {index} has {v.Length} values; the hook is {width} wide");
        int bad = Array.FindIndex(v, x => !float.IsFinite(x));
        if (bad >= 0) throw new PolyEngineException($"vector {index}: value {bad} is {v[bad]}; give finite numbers");
        float norm = TensorPrimitives.Norm(v);
        if (norm == 0f) throw new PolyEngineException($"vector {index} is zero, so it has no direction; drop it");
        var unit = new float[width];
        TensorPrimitives.Divide(v, norm, unit);
        return unit;
    }
}

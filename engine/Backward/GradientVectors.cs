using System.Text;
using PolyEngine.Formats;

namespace PolyEngine.Backward;

/// <summary>The two ways the authors' code turns a feature's activation record into a token-locus vector.</summary>
public enum GradientRecipe
{
    /// <summary>TransformerLens: every sub-token position whose activation is ≥ ratio·max, one backward each, the
    /// gradient at that position summed over the positions (skipping non-finite ones and norms &lt; 1e-8), then normalised.</summary>
    TransformerLens,
    /// <summary>HuggingFace: the first sub-token of the record's strongest token, one backward, normalised.</summary>
    HuggingFace,
}

/// <summary>How <see cref="GradientVectors.FromRecords"/> runs.</summary>
public sealed record GradientVectorOptions
{
    public GradientRecipe Recipe { get; init; } = GradientRecipe.TransformerLens;
    /// <summary>The TL recipe's threshold r: positions with activation ≥ r·max (the authors pass 0.8).</summary>
    public float Ratio { get; init; } = 0.8f;
    /// <summary>The objective's direction v at the hook (null: all ones, the authors' Σ_d a[p, d]).</summary>
    public float[]? Direction { get; init; }
    /// <summary>Gradients below this norm are skipped by the TL recipe, as in the authors' code.</summary>
    public double MinNorm { get; init; } = 1e-8;
}

/// <summary>One record's vector: unit [d_model], or null with <see cref="Note"/> saying why there is none; the positions
/// (in the row that ran) whose gradients went in, how many were skipped, and the norm of the sum before normalising.</summary>
public sealed record GradientVector(ActivationRecord Record, float[]? Vector, int[] Positions, int Skipped, double Norm, string? Note);

/// <summary>
/// The paper's token-locus vectors ĝ = g/‖g‖, g = ∂⟨a[p], v⟩/∂e[p] (the gradient at the same position p, with respect to
/// the token embedding only), from a feature's activation records, by either recipe of the authors' code. A record's
/// text runs as given when it carries ids (a features run's contexts); a Neuronpedia record's tokens are joined and
/// re-tokenised without BOS, each record token mapping to the sub-tokens whose character spans overlap it. All
/// records' positions go through one forward and one batched backward (<see cref="Gradient.Run"/>).
/// </summary>
public static class GradientVectors
{
    public static IReadOnlyList<GradientVector> FromRecords(Model model, IReadOnlyList<ActivationRecord> records, HookName hook, GradientVectorOptions options)
    {
        if (records.Count == 0) throw new PolyEngineException("no activation records to take gradient vectors from");
        if (!(options.Ratio > 0 && options.Ratio <= 1)) throw new PolyEngineException($"--ratio {options.Ratio}: give a number in (0, 1]; the authors use 0.8");
        int d = model.Spec.DModel;
        var rows = new List<int[]>();
        var chosen = new List<(int[] Positions, string? Note)>();
        foreach (var r in records)
        {
            var (ids, positionsOf) = Tokenise(model, r);
            rows.Add(ids);
            chosen.Add(Choose(r, positionsOf, options));
        }
        var seeds = new List<GradientSeed>();
        for (int i = 0; i < records.Count; i++)
            foreach (int p in chosen[i].Positions) seeds.Add(new GradientSeed(i, hook, p, options.Direction));
        var grads = seeds.Count == 0 ? [] : Gradient.Run(model, rows, seeds);

        var result = new List<GradientVector>();
        int k = 0;
        for (int i = 0; i < records.Count; i++)
        {
            var sum = new double[d];
            var used = new List<int>();
            int skipped = 0;
            foreach (int p in chosen[i].Positions)
            {
                var g = grads[k++].Gradient.AsSpan(p * d, d);
                double n2 = 0;
                bool finite = true;
                foreach (float x in g) { finite &= float.IsFinite(x); n2 += (double)x * x; }
                if (!finite || Math.Sqrt(n2) < options.MinNorm) { skipped++; continue; }
                for (int j = 0; j < d; j++) sum[j] += g[j];
                used.Add(p);
            }
            double norm = Math.Sqrt(sum.Sum(x => x * x));
            string? note = chosen[i].Note ?? (used.Count == 0 ? $"every gradient was non-finite or below {options.MinNorm:G2}" : norm == 0 ? "the gradients summed to zero" : null);
            var vector = note is null ? sum.Select(x => (float)(x / norm)).ToArray() : null;
            result.Add(new GradientVector(records[i], vector, [.. used], skipped, norm, note));
        }
        return result;
    }

    /// <summary>The positions whose gradients a record contributes, by the recipe.</summary>
    static (int[] Positions, string? Note) Choose(ActivationRecord r, int[][] positionsOf, GradientVectorOptions options)
    {
        if (options.Recipe == GradientRecipe.HuggingFace)
        {
            int t = r.MaxValueTokenIndex;
            return (positionsOf[t].Length > 0 ? [positionsOf[t][0]] : throw NoPosition(r, t), null);
        }
        float max = r.Values.Where(float.IsFinite).DefaultIfEmpty(0f).Max();
        if (!(max > 0)) return ([], "no positive activation in the record");
        var positions = new SortedSet<int>();
        for (int t = 0; t < r.Values.Length; t++)
        {
            if (!(r.Values[t] >= options.Ratio * max)) continue;
            if (positionsOf[t].Length == 0) throw NoPosition(r, t);
            positions.UnionWith(positionsOf[t]);
        }
        return ([.. positions], null);
    }

    static PolyEngineException NoPosition(ActivationRecord r, int t) =>
        new($"{r.Source}, token {t} ('{r.Tokens.ElementAtOrDefault(t)}'): it does not re-tokenise to any position of the record's text; fix or drop that record");

    /// <summary>The row a record runs as, and for each record token its positions in that row.</summary>
    static (int[] Ids, int[][] PositionsOf) Tokenise(Model model, ActivationRecord r)
    {
        int[] ids;
        int[][] positionsOf;
        if (r.Ids is { } given)
        {
            if (given.Length != r.Values.Length) throw new PolyEngineException($"{r.Source}: {given.Length} token ids but {r.Values.Length} activations");
            ids = given;
            positionsOf = [.. Enumerable.Range(0, ids.Length).Select(i => new[] { i })];
        }
        else
        {
            string text = string.Concat(r.Tokens);
            var encoded = model.Tokenizer.EncodeWithOffsets(text, out string seen);
            // Each record token's character span in the text the tokenizer saw (NFC may have changed it).
            var pieces = seen == text ? r.Tokens : r.Tokens.Select(t => t.Normalize(NormalizationForm.FormC)).ToArray();
            if (string.Concat(pieces) != seen)
                throw new PolyEngineException($"{r.Source}: the tokenizer's normalisation changes the text across token boundaries, so its tokens cannot be mapped to positions; fix or drop that record");
            ids = encoded.Select(e => e.Id).ToArray();
            positionsOf = new int[r.Tokens.Length][];
            int start = 0;
            for (int t = 0; t < pieces.Length; t++)
            {
                int end = start + pieces[t].Length;
                positionsOf[t] = [.. Enumerable.Range(0, encoded.Length).Where(j => encoded[j].Start < end && encoded[j].End > start && end > start)];
                start = end;
            }
        }
        if (ids.Length == 0) throw new PolyEngineException($"{r.Source}: its text tokenises to nothing");
        if (ids.Length > model.Spec.NCtx) throw new PolyEngineException($"{r.Source}: {ids.Length} tokens, past the model's context of {model.Spec.NCtx}; shorten the record");
        try { model.ValidateIds(ids, 1, ids.Length); }
        catch (PolyEngineException e) { throw new PolyEngineException($"{r.Source}: {e.Message}"); }
        return (ids, positionsOf);
    }
}

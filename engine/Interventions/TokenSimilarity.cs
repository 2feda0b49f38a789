using System.Numerics.Tensors;

namespace PolyEngine.Interventions;

/// <summary>
/// Cosines between tokens in the model's input embedding W_E [d_vocab, d_model], as the metrics use them: rows L2-normalised
/// (x / max(‖x‖, 1e-12), torch's F.normalize), optionally mean-centred along d_model first (TransformerLens's
/// <c>center_writing_weights</c>, which the authors' TransformerLens runs had).
/// </summary>
public sealed class TokenSimilarity
{
    readonly float[] _unit;   // [d_vocab, d_model], unit rows

    public TokenSimilarity(Tensor wE, bool center = false)
    {
        if (wE.Shape.Length != 2) throw new ArgumentException($"W_E must be [d_vocab, d_model], got {wE.ShapeText}");
        Vocab = (int)wE.Shape[0];
        DModel = (int)wE.Shape[1];
        Centered = center;
        _unit = (float[])wE.Data.Clone();
        Parallel.For(0, Vocab, t =>
        {
            var row = _unit.AsSpan(t * DModel, DModel);
            if (center) TensorPrimitives.Subtract(row, TensorPrimitives.Sum(row) / DModel, row);
            float norm = TensorPrimitives.Norm(row);
            TensorPrimitives.Divide(row, MathF.Max(norm, 1e-12f), row);
        });
    }

    public int Vocab { get; }
    public int DModel { get; }
    public bool Centered { get; }

    /// <summary>[d_vocab]: max over the targets u of cos(E_t, E_u), for every token t (the weighted cosine's weights).</summary>
    public float[] MaxCosine(IReadOnlyCollection<int> targets)
    {
        var ts = targets.Distinct().ToArray();
        foreach (int u in ts)
            if ((uint)u >= (uint)Vocab) throw new PolyEngineException($"target token {u} is outside the vocabulary 0..{Vocab - 1}");
        if (ts.Length == 0) throw new PolyEngineException("a prompt needs at least one target token");
        var best = new float[Vocab];
        Parallel.For(0, Vocab, t =>
        {
            var row = _unit.AsSpan(t * DModel, DModel);
            float m = float.NegativeInfinity;
            foreach (int u in ts) m = MathF.Max(m, TensorPrimitives.Dot(row, _unit.AsSpan(u * DModel, DModel)));
            best[t] = m;
        });
        return best;
    }

    /// <summary>Every token id sorted by cosine to <paramref name="token"/>, descending (ties to the lower id): the rank
    /// metrics' similarity order.</summary>
    public int[] Order(int token)
    {
        if ((uint)token >= (uint)Vocab) throw new PolyEngineException($"test token {token} is outside the vocabulary 0..{Vocab - 1}");
        var cos = new float[Vocab];
        var u = _unit.AsSpan(token * DModel, DModel).ToArray();
        Parallel.For(0, Vocab, t => cos[t] = TensorPrimitives.Dot(_unit.AsSpan(t * DModel, DModel), u));
        return SteerMetrics.Descending(cos);
    }
}

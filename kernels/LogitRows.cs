namespace PolyEngine.Kernels;

/// <summary>
/// The logits-side reduction of <see cref="IReductionOps.TopLogits"/>: per row of logits [rows, vocab], the k largest logits
/// (descending; ties to the lower id) and the row's log-sum-exp, so log-probabilities are logit − lse — what leaves the
/// device instead of the [rows, vocab] tensor.
/// </summary>
public sealed record TopLogitRows(int Rows, int K, int[] Ids, float[] Logits, float[] LogSumExp)
{
    /// <summary>Row r's j-th candidate: id, logit and probability.</summary>
    public (int Id, float Logit, float Probability) At(int r, int j) =>
        (Ids[r * K + j], Logits[r * K + j], MathF.Exp(Logits[r * K + j] - LogSumExp[r]));
}

/// <summary>
/// The row metrics of <see cref="IReductionOps.RowMetrics"/> for logits [rows, vocab]: each row's log-sum-exp, its
/// expectations [rows, weights] = Σ_t softmax(row)_t·w_j[t] under its group's weight rows, and KL(reference ‖ row) (natural
/// log; null without a reference).
/// </summary>
public sealed record LogitRowMetrics(int Rows, int Weights, float[] LogSumExp, float[] Expectations, float[]? Kl)
{
    /// <summary>Row r's expectation under weight row j.</summary>
    public float Expectation(int r, int j) => Expectations[r * Weights + j];
}

/// <summary>
/// The exact integer statistics of <see cref="IReductionOps.RankStats"/> that the rank correlations are made of, per row of
/// logits [rows, vocab] against its group's similarity order S (every token id, most similar first): with P the ids sorted
/// by logit (descending; ties to the lower id), rankP and rankS each token's position in P and S,
/// <see cref="Products"/>[r] = Σ_i P[i]·S[i], <see cref="RankProducts"/>[r] = Σ_t rankP(t)·rankS(t),
/// <see cref="Discordant"/>[r] = #{i &lt; j : (P[i] − P[j])·(S[i] − S[j]) &lt; 0} and
/// <see cref="RankDiscordant"/>[r] = #{t &lt; u : (rankP(t) − rankP(u))·(rankS(t) − rankS(u)) &lt; 0}.
/// </summary>
public sealed record RankRows(int Rows, int Vocab, long[] Products, long[] RankProducts, long[] Discordant, long[] RankDiscordant);

/// <summary>The argument checks of <see cref="IReductionOps.RankStats"/> every backend makes.</summary>
static class RankStatsCheck
{
    public static void Check(int[] group, int rows, int vocab, long logits, int[][] orders)
    {
        if (group.Length < rows) throw new ArgumentException($"RankStats: {group.Length} group indices for {rows} rows");
        if ((long)rows * vocab > logits) throw new ArgumentException($"RankStats: logits hold {logits} floats, {rows}×{vocab} needed");
        for (int r = 0; r < rows; r++)
            if ((uint)group[r] >= (uint)orders.Length) throw new ArgumentException($"RankStats: row {r} has group {group[r]}, but there are {orders.Length} orders");
        foreach (var order in orders)
        {
            if (order.Length != vocab) throw new ArgumentException($"RankStats: a similarity order has {order.Length} ids, the rows {vocab}");
            var seen = new bool[vocab];
            foreach (int t in order)
                if ((uint)t >= (uint)vocab || seen[t]) throw new ArgumentException("RankStats: a similarity order is not a permutation of the token ids");
                else seen[t] = true;
        }
    }
}

/// <summary>The argument checks of <see cref="IReductionOps.RowMetrics"/> every backend makes before it reduces.</summary>
static class RowMetricsCheck
{
    /// <summary>The number of groups (1 + the largest group index); an <see cref="ArgumentException"/> for anything that does not fit.</summary>
    public static int Groups(int[] group, int rows, int vocab, long logits, long weights, int nWeights, long? reference)
    {
        if (group.Length < rows) throw new ArgumentException($"RowMetrics: {group.Length} group indices for {rows} rows");
        if ((long)rows * vocab > logits) throw new ArgumentException($"RowMetrics: logits hold {logits} floats, {rows}×{vocab} needed");
        if (nWeights < 0 || (nWeights > 0) != (weights > 0)) throw new ArgumentException($"RowMetrics: {nWeights} weight rows but a weights buffer of {weights} floats");
        int groups = 0;
        for (int r = 0; r < rows; r++)
        {
            if (group[r] < 0) throw new ArgumentException($"RowMetrics: row {r} has group {group[r]}");
            groups = Math.Max(groups, group[r] + 1);
        }
        if ((long)groups * nWeights * vocab > weights && nWeights > 0)
            throw new ArgumentException($"RowMetrics: weights hold {weights} floats, {groups}×{nWeights}×{vocab} needed");
        if (reference is long refs && (long)groups * vocab > refs)
            throw new ArgumentException($"RowMetrics: reference holds {refs} floats, {groups}×{vocab} needed");
        return groups;
    }
}

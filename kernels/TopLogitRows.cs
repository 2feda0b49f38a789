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

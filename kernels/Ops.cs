namespace PolyEngine.Kernels;

// The op families of IBackend. Each family keeps its forward ops and, beside them, the backward ops of the backward pass
// (input gradients; no weight gradients): the linear input gradient, the layer norm's, the activations', causal attention's
// (through the softmax, over a whole sequence) and the rotary's. A new op is one method here, its implementation in each backend's family class,
// its scalar reference in Reference/, and nothing else — profiling and checks find it by itself.

/// <summary>Linear layers: y = x·W + b on weights packed at load (<see cref="IBackend.PackWeight"/>), and the input
/// gradient dx = dy·Wᵀ (no weight gradients).</summary>
public interface ILinearOps
{
    /// <summary>y[rows, N] = x[rows, K] · W + bias (bias may be null).</summary>
    void Forward(DeviceBuffer x, PackedWeight w, DeviceBuffer? bias, DeviceBuffer y, int rows);

    /// <summary>dx[rows, K] = dy[rows, N] · Wᵀ (dx must not alias dy).</summary>
    void Backward(DeviceBuffer dy, PackedWeight w, DeviceBuffer dx, int rows);
}

/// <summary>Layer norms, and their backward from the saved statistics (<c>scale</c> = √(var + eps), the normalised rows).</summary>
public interface INormOps
{
    /// <summary>y[rows, d] = (x − mean)/√(var + eps)·gamma + beta (biased variance). Optional taps: <paramref name="normalized"/>
    /// [rows, d] before gain/bias, <paramref name="scale"/> [rows] = √(var + eps).</summary>
    void LayerNorm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d, float eps,
        DeviceBuffer? normalized = null, DeviceBuffer? scale = null);

    /// <summary>The residual add fused with the layer norm that reads it: sum = a + b (sum may alias a or b), then
    /// y = LayerNorm(sum) with the same taps as <see cref="LayerNorm"/>. One pass over the rows instead of two.</summary>
    void AddLayerNorm(DeviceBuffer a, DeviceBuffer b, DeviceBuffer sum, DeviceBuffer gamma, DeviceBuffer beta, DeviceBuffer y, int rows, int d,
        float eps, DeviceBuffer? normalized = null, DeviceBuffer? scale = null);

    /// <summary>The input gradient of <see cref="LayerNorm"/> from its saved taps: with n̂ = <paramref name="normalized"/>
    /// [rows, d], s = <paramref name="scale"/> [rows] and g = dy ⊙ gamma, dx = (g − mean(g) − n̂·mean(g ⊙ n̂)) / s per row
    /// (dx may alias dy).</summary>
    void LayerNormBackward(DeviceBuffer dy, DeviceBuffer normalized, DeviceBuffer scale, DeviceBuffer gamma, DeviceBuffer dx, int rows, int d);
}

/// <summary>Element-wise activations and their backward.</summary>
public interface IActivationOps
{
    /// <summary>y[i] = act(x[i]) for i &lt; n (y may alias x).</summary>
    void Forward(DeviceBuffer x, DeviceBuffer y, long n, Activation activation);

    /// <summary>dx[i] = dy[i]·act′(x[i]) for i &lt; n, x the activation's input (dx may alias dy).</summary>
    void Backward(DeviceBuffer x, DeviceBuffer dy, DeviceBuffer dx, long n, Activation activation);
}

/// <summary>Attention: rotary embedding and causal attention, for a whole sequence or for its last positions against keys
/// kept from before (a pass resumed at a position); and their backward, through the softmax and the rotary.</summary>
public interface IAttentionOps
{
    /// <summary>How attention runs on this backend, for reports ("cpu", "gemm", "fused").</summary>
    string Variant { get; }

    /// <summary>Rotary embedding (rotate-half convention) on the first <paramref name="rotaryDim"/> dims of every head:
    /// y[b, t, h, :] from x[b, t, h, :] at position <paramref name="positionOffset"/> + t (y may alias x).</summary>
    void Rotary(DeviceBuffer x, DeviceBuffer y, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0);

    /// <summary>Causal attention per (batch, head) of <paramref name="seq"/> queries at positions [keys − seq, keys) over
    /// <paramref name="keys"/> keys at positions [0, keys) (null: keys = seq, the whole sequence):
    /// z[b, t, h, :] = Σ_{s ≤ keys − seq + t} softmax_s(scale·q[b, t, h]·k[b, s, h])·v[b, s, h, :].
    /// q, z are [batch, seq, nHeads, dHead], k, v [batch, keys, nHeads, dHead]; <paramref name="pattern"/>
    /// [batch, nHeads, seq, keys] is written when not null.</summary>
    void Causal(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer z, int batch, int seq, int nHeads, int dHead,
        float scale, DeviceBuffer? pattern = null, int? keys = null);

    /// <summary>The rotary's backward: dx = Rᵀ·dy, a rotation by the negative angle at the same positions (dx may alias dy).</summary>
    void RotaryBackward(DeviceBuffer dy, DeviceBuffer dx, int batch, int seq, int nHeads, int dHead, int rotaryDim, float rotaryBase, int positionOffset = 0);

    /// <summary>The gradients of <see cref="Causal"/> over a whole sequence (keys = seq): dq, dk, dv [batch, seq, heads,
    /// d_head] from dz, the softmax recomputed from q and k: with P the pattern and dP = dz·vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
    /// dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dz.</summary>
    void CausalBackward(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer dz, DeviceBuffer dq, DeviceBuffer dk, DeviceBuffer dv,
        int batch, int seq, int nHeads, int dHead, float scale);
}

/// <summary>Row operations: gathers, copies, fan-out, residual adds and the in-place hook edit.</summary>
public interface IRowOps
{
    /// <summary>y[r, :] = table[ids[r], :] for each of ids.Length rows of width d.</summary>
    void Gather(int[] ids, DeviceBuffer table, int d, DeviceBuffer y);

    /// <summary>Copies columns [colOffset, colOffset + width) of src[rows, srcWidth] into columns [dstOffset, dstOffset + width)
    /// of dst[rows, dstWidth] (dstWidth 0: dst is [rows, width]).</summary>
    void CopyColumns(DeviceBuffer src, int rows, int srcWidth, int colOffset, int width, DeviceBuffer dst, int dstWidth = 0, int dstOffset = 0);

    /// <summary>dst [copies·n] = src [n] repeated <paramref name="copies"/> times (one row set fanned out to many).</summary>
    void Broadcast(DeviceBuffer src, long n, int copies, DeviceBuffer dst);

    /// <summary>y[i] = a[i] + b[i] for i &lt; n (y may alias a or b).</summary>
    void Add(DeviceBuffer a, DeviceBuffer b, DeviceBuffer y, long n);

    /// <summary>Applies <paramref name="edit"/> in place to x [batch, seq, width] (a hook's activation).</summary>
    void Edit(DeviceBuffer x, int batch, int seq, int width, RowEdit edit);
}

/// <summary>The argument checks every backend's row ops share.</summary>
static class RowsCheck
{
    public static void Columns(int colOffset, int width, int srcWidth, int dstOffset, int dstWidth)
    {
        if (colOffset < 0 || width < 0 || colOffset + width > srcWidth)
            throw new ArgumentException($"CopyColumns: columns [{colOffset}, {colOffset + width}) outside a width of {srcWidth}");
        if (dstOffset < 0 || dstOffset + width > dstWidth)
            throw new ArgumentException($"CopyColumns: destination columns [{dstOffset}, {dstOffset + width}) outside a width of {dstWidth}");
    }
}

/// <summary>Reductions of rows to what leaves the device: the top-k logits and log-sum-exp, and row metrics against the
/// rows of a group (the intervention metrics).</summary>
public interface IReductionOps
{
    /// <summary>The k largest logits of each row of logits [rows, vocab] and the rows' log-sum-exp (<see cref="TopLogitRows"/>).</summary>
    TopLogitRows TopLogits(DeviceBuffer logits, int rows, int vocab, int k);

    /// <summary>Each row of logits [rows, vocab] against the rows of its group g = <paramref name="group"/>[r], with
    /// P = softmax(row): the log-sum-exp, the expectations Σ_t P_t·weights[g, j, t] for j &lt; <paramref name="nWeights"/>
    /// (weights [groups, nWeights, vocab]), and KL(softmax(reference[g]) ‖ P) when <paramref name="reference"/> [groups,
    /// vocab] logits are given (<see cref="LogitRowMetrics"/>).</summary>
    LogitRowMetrics RowMetrics(DeviceBuffer logits, int rows, int vocab, int[] group, DeviceBuffer? weights, int nWeights, DeviceBuffer? reference);

    /// <summary>The rank statistics (<see cref="RankRows"/>) of each row of logits [rows, vocab] against the similarity order
    /// of its group g = <paramref name="group"/>[r] (<paramref name="orders"/>[g]: every token id, most similar first).</summary>
    RankRows RankStats(DeviceBuffer logits, int rows, int vocab, int[] group, int[][] orders);
}

/// <summary>An SAE encoder's row operations around its GEMM.</summary>
public interface ISaeOps
{
    /// <summary>An SAE's input processing, per row of x[rows, d]: centre (x − mean) when <paramref name="center"/>, then
    /// <paramref name="norm"/>, then subtract <paramref name="subtract"/> [d] when not null; y may alias x.</summary>
    void NormalizeRows(DeviceBuffer x, DeviceBuffer y, int rows, int d, RowNormalization norm, bool center, DeviceBuffer? subtract);

    /// <summary>Applies <paramref name="rule"/> to pre[rows, width] and returns the nonzeros, per row in ascending column order:
    /// the only part of an SAE encoding that reaches the host on a device.</summary>
    SparseRows Sparsify(DeviceBuffer pre, int rows, int width, SparseRule rule);
}

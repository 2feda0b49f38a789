using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>
/// One forward pass as a walk over its hook points, in the order <see cref="HookName.AllFor"/> lists them:
/// <see cref="Step"/> runs one hook point (its edits, taps and replacements through <see cref="HookDispatch"/>) and then the
/// ops up to the next hook point, and returns that point (null after the last). Every value a step reads lives in the
/// <see cref="Workspace"/> or in <see cref="NormedReady"/>, so a pass can stop before any hook point and another can start
/// there from a copy of the workspace (<see cref="ForwardState"/>).
/// Both families share the steps: the QKV output is [Q | K | V] (NeoX is de-interleaved at load), rotary only when
/// <see cref="ModelSpec.RotaryDim"/> &gt; 0, and the residual is sequential or parallel per the spec. Every residual add is
/// fused with the layer norm that reads its result (AddLayerNorm): resid_mid with ln2 (sequential blocks), resid_post with
/// the next block's ln1 or with ln_final.
/// </summary>
sealed class Pass(IBackend b, ModelSpec s, ModelWeights w, Workspace ws, HookDispatch hooks, int lastLayer, bool withHead, Pass.KvWindow? window = null,
    bool lastPositionOnly = false)
{
    int _rows = ws.Batch * ws.Seq;   // rows the ops run on: batch × seq, or batch once the last layer keeps only the last position
    readonly int _d = s.DModel;

    /// <summary>Positions per row from here on: the workspace's, or 1 once the last layer's attention kept only each row's
    /// last position (<c>lastPositionOnly</c>: nothing reads the other positions there — the caller checked).</summary>
    public int Seq { get; private set; } = ws.Seq;
    readonly int _positionOffset = window?.From ?? 0;   // the absolute position of the workspace's position 0

    /// <summary>A windowed pass: the workspace holds positions [<see cref="From"/>, <see cref="Keys"/>) of each row; attention
    /// reads the keys and values of earlier positions from <see cref="Prefix"/> (its rows fanned out to <see cref="Copies"/>).</summary>
    public sealed record KvWindow(int From, int Keys, int Copies, KvPrefix Prefix);

    /// <summary>ws.Normed (and the norm taps in ws.Tmp / ws.Scale) already hold the output of the next layer norm, fused
    /// with the residual add before it — unless an edit changed the residual since; then the norm runs again.</summary>
    public bool NormedReady;

    /// <summary>The first hook point of every pass.</summary>
    public static readonly HookName First = new(HookPoint.Embed);

    /// <summary>The pass's start, before <see cref="First"/>: resid = W_E[ids] for ids [batch, seq].</summary>
    public void Embed(int[] ids) => b.Rows.Gather(ids, w.Embed, _d, ws.Resid);

    /// <summary>The workspace buffer that holds hook <paramref name="h"/>'s value when the pass reaches it.</summary>
    public DeviceBuffer BufferOf(HookName h) => h.Point switch
    {
        HookPoint.Embed or HookPoint.ResidPre or HookPoint.ResidPost => ws.Resid,
        HookPoint.PosEmbed or HookPoint.Ln1Normalized or HookPoint.Ln2Normalized or HookPoint.LnFinalNormalized => ws.Tmp,
        HookPoint.Ln1Scale or HookPoint.Ln2Scale or HookPoint.LnFinalScale => ws.Scale,
        HookPoint.AttnQ or HookPoint.AttnRotQ => ws.Q,
        HookPoint.AttnK or HookPoint.AttnRotK => ws.K,
        HookPoint.AttnV => ws.V,
        HookPoint.AttnPattern => ws.Pattern,
        HookPoint.AttnZ => ws.Z,
        HookPoint.AttnOut => ws.AttnOut,
        HookPoint.ResidMid => ws.Mid,
        HookPoint.MlpPre or HookPoint.MlpPost => ws.MlpHidden,
        HookPoint.MlpOut => ws.MlpOut,
        _ => throw new ArgumentOutOfRangeException(nameof(h)),
    };

    /// <summary>Runs hook point <paramref name="at"/> and the ops after it; returns the next hook point, or null when the
    /// walk is over (after ln_final's taps, or after the stop layer's resid_post when there is no head).</summary>
    public HookName? Step(HookName at)
    {
        int l = at.Layer;
        var x = at.Point == HookPoint.AttnPattern ? null! : BufferOf(at);   // the pattern is allocated only when read
        switch (at.Point)
        {
            case HookPoint.Embed:
                hooks.Edit(at, x);
                if (w.PosEmbed is null) return new(HookPoint.ResidPre, 0);
                var positions = new int[_rows];
                for (int r = 0; r < _rows; r++) positions[r] = _positionOffset + r % ws.Seq;
                b.Rows.Gather(positions, w.PosEmbed, _d, ws.Tmp);
                return new(HookPoint.PosEmbed);
            case HookPoint.PosEmbed:
                hooks.Edit(at, x);
                b.Rows.Add(ws.Resid, ws.Tmp, ws.Resid, (long)_rows * _d);
                return new(HookPoint.ResidPre, 0);

            // Attention: normed = LN1(resid); qkv = normed·W_qkv + b; z = attn(q, k, v); attn_out = z·W_O + b_O
            case HookPoint.ResidPre:
                if (hooks.Edit(at, x)) NormedReady = false;
                if (!NormedReady) Norm(ws.Resid, w.Blocks[l].Ln1W, w.Blocks[l].Ln1B, new(HookPoint.Ln1Normalized, l), new(HookPoint.Ln1Scale, l));
                return new(HookPoint.Ln1Scale, l);
            case HookPoint.Ln1Scale:
                hooks.Tap(at, x);
                return new(HookPoint.Ln1Normalized, l);
            case HookPoint.Ln1Normalized:
                hooks.Tap(at, x);
                b.Linear.Forward(ws.Normed, w.Blocks[l].Qkv, w.Blocks[l].QkvB, ws.Qkv, _rows);
                b.Rows.CopyColumns(ws.Qkv, _rows, 3 * _d, 0, _d, ws.Q);
                b.Rows.CopyColumns(ws.Qkv, _rows, 3 * _d, _d, _d, ws.K);
                b.Rows.CopyColumns(ws.Qkv, _rows, 3 * _d, 2 * _d, _d, ws.V);
                return new(HookPoint.AttnQ, l);
            case HookPoint.AttnQ:
                hooks.Edit(at, x);
                return new(HookPoint.AttnK, l);
            case HookPoint.AttnK:
                hooks.Edit(at, x);
                return new(HookPoint.AttnV, l);
            case HookPoint.AttnV:
                hooks.Edit(at, x);
                if (s.RotaryDim == 0) return Attend(l);
                b.Attention.Rotary(ws.Q, ws.Q, ws.Batch, ws.Seq, s.NHeads, s.DHead, s.RotaryDim, s.RotaryBase, _positionOffset);
                b.Attention.Rotary(ws.K, ws.K, ws.Batch, ws.Seq, s.NHeads, s.DHead, s.RotaryDim, s.RotaryBase, _positionOffset);
                return new(HookPoint.AttnRotQ, l);
            case HookPoint.AttnRotQ:
                hooks.Edit(at, x);
                return new(HookPoint.AttnRotK, l);
            case HookPoint.AttnRotK:
                hooks.Edit(at, x);
                return Attend(l);
            case HookPoint.AttnPattern:
                if (hooks.Wants(at)) hooks.Tap(at, ws.Pattern);
                return new(HookPoint.AttnZ, l);
            case HookPoint.AttnZ:
                hooks.Edit(at, x);
                b.Linear.Forward(ws.Z, w.Blocks[l].AttnOut, w.Blocks[l].AttnOutB, ws.AttnOut, _rows);
                return new(HookPoint.AttnOut, l);

            // MLP input: sequential reads LN2(resid_mid = resid_pre + attn_out); parallel reads LN2(resid_pre).
            case HookPoint.AttnOut:
                hooks.Edit(at, x);
                if (s.ParallelResidual)
                {
                    Norm(ws.Resid, w.Blocks[l].Ln2W, w.Blocks[l].Ln2B, new(HookPoint.Ln2Normalized, l), new(HookPoint.Ln2Scale, l));
                    return new(HookPoint.Ln2Scale, l);
                }
                b.Norm.AddLayerNorm(ws.Resid, ws.AttnOut, ws.Mid, w.Blocks[l].Ln2W, w.Blocks[l].Ln2B, ws.Normed, _rows, _d, s.LnEps,
                    Tap(new(HookPoint.Ln2Normalized, l), ws.Tmp), Tap(new(HookPoint.Ln2Scale, l), ws.Scale));
                return new(HookPoint.ResidMid, l);
            case HookPoint.ResidMid:
                if (hooks.Edit(at, x)) Norm(ws.Mid, w.Blocks[l].Ln2W, w.Blocks[l].Ln2B, new(HookPoint.Ln2Normalized, l), new(HookPoint.Ln2Scale, l));
                return new(HookPoint.Ln2Scale, l);
            case HookPoint.Ln2Scale:
                hooks.Tap(at, x);
                return new(HookPoint.Ln2Normalized, l);
            case HookPoint.Ln2Normalized:
                hooks.Tap(at, x);
                b.Linear.Forward(ws.Normed, w.Blocks[l].MlpIn, w.Blocks[l].MlpInB, ws.MlpHidden, _rows);
                return new(HookPoint.MlpPre, l);
            case HookPoint.MlpPre:
                hooks.Edit(at, x);
                b.Activations.Forward(ws.MlpHidden, ws.MlpHidden, (long)_rows * s.DMlp, s.Act);
                return new(HookPoint.MlpPost, l);
            case HookPoint.MlpPost:
                hooks.Edit(at, x);
                b.Linear.Forward(ws.MlpHidden, w.Blocks[l].MlpOut, w.Blocks[l].MlpOutB, ws.MlpOut, _rows);
                return new(HookPoint.MlpOut, l);
            case HookPoint.MlpOut:
                hooks.Edit(at, x);
                ResidPost(l);
                return new(HookPoint.ResidPost, l);
            case HookPoint.ResidPost:
                if (hooks.Edit(at, x)) NormedReady = false;
                if (l < lastLayer) return new(HookPoint.ResidPre, l + 1);
                if (!withHead) return null;
                if (!NormedReady) Norm(ws.Resid, w.LnFinalW, w.LnFinalB, new(HookPoint.LnFinalNormalized), new(HookPoint.LnFinalScale));
                return new(HookPoint.LnFinalScale);

            case HookPoint.LnFinalScale:
                hooks.Tap(at, x);
                return new(HookPoint.LnFinalNormalized);
            case HookPoint.LnFinalNormalized:
                hooks.Tap(at, x);
                return null;
        }
        throw new ArgumentOutOfRangeException(nameof(at), $"no step for hook point {at}");
    }

    /// <summary>z = causal attention of the hooked q, k, v (the pattern written only when someone reads it).</summary>
    HookName Attend(int l)
    {
        var pattern = new HookName(HookPoint.AttnPattern, l);
        float scale = 1f / MathF.Sqrt(s.DHead);
        DeviceBuffer k = ws.K, v = ws.V;
        int? keys = null;
        if (window is { } kv)
        {
            // Keys and values of every position: the prefix's (fanned out) with the window's own written over positions ≥ From.
            (k, v) = ws.Memory.Keys((long)ws.Batch * kv.Keys * _d);
            foreach (var (all, own, clean) in new[] { (k, ws.K, kv.Prefix.K[l]!), (v, ws.V, kv.Prefix.V[l]!) })
            {
                long cleanLength = (long)ws.Batch / kv.Copies * kv.Keys * _d;
                b.Rows.Broadcast(clean, cleanLength, kv.Copies, all);
                b.Rows.CopyColumns(own, ws.Batch, ws.Seq * _d, 0, ws.Seq * _d, all, kv.Keys * _d, kv.From * _d);
            }
            keys = kv.Keys;
        }
        if (l == lastLayer && lastPositionOnly)
        {
            // Only the LM head reads this layer's output, at each row's last position (every row is seq long here): the rest of
            // the layer runs on those rows alone. Their queries go to AttnOut and their residual to Mid (both written again
            // before they are read), the residual then to the front of Resid; attention reads the keys of every position.
            long n = (long)ws.Batch * _d;
            var last = Enumerable.Range(0, ws.Batch).Select(r => r * ws.Seq + ws.Seq - 1).ToArray();
            b.Rows.Gather(last, ws.Q, _d, ws.AttnOut);
            b.Rows.Gather(last, ws.Resid, _d, ws.Mid);
            using (var front = ws.Resid.Slice(0, n))
            using (var gathered = ws.Mid.Slice(0, n))
                b.Copy(gathered, front);
            b.Attention.Causal(ws.AttnOut, k, v, ws.Z, ws.Batch, 1, s.NHeads, s.DHead, scale, null, keys ?? ws.Seq);
            (_rows, Seq) = (ws.Batch, 1);
            return pattern;
        }
        b.Attention.Causal(ws.Q, k, v, ws.Z, ws.Batch, ws.Seq, s.NHeads, s.DHead, scale, window is null && hooks.Wants(pattern) ? ws.Pattern : null, keys);
        return pattern;
    }

    /// <summary>resid_post: parallel = (mlp_out + attn_out) + resid_pre (HF's association); sequential = resid_mid + mlp_out;
    /// fused with the norm that reads it next (the next block's ln1, or ln_final after the last block when there is a head).</summary>
    void ResidPost(int l)
    {
        DeviceBuffer addA = ws.Mid, addB = ws.MlpOut;
        if (s.ParallelResidual)
        {
            b.Rows.Add(ws.MlpOut, ws.AttnOut, ws.Mid, (long)_rows * _d);
            addB = ws.Resid;
        }
        (DeviceBuffer W, DeviceBuffer B, HookName Normalized, HookName Scale)? next =
            l < lastLayer ? (w.Blocks[l + 1].Ln1W, w.Blocks[l + 1].Ln1B, new(HookPoint.Ln1Normalized, l + 1), new(HookPoint.Ln1Scale, l + 1))
            : withHead ? (w.LnFinalW, w.LnFinalB, new(HookPoint.LnFinalNormalized), new(HookPoint.LnFinalScale))
            : null;
        if (next is { } n)
            b.Norm.AddLayerNorm(addA, addB, ws.Resid, n.W, n.B, ws.Normed, _rows, _d, s.LnEps, Tap(n.Normalized, ws.Tmp), Tap(n.Scale, ws.Scale));
        else b.Rows.Add(addA, addB, ws.Resid, (long)_rows * _d);
        NormedReady = next is not null;
    }

    /// <summary>normed = LayerNorm(x), its taps filled when read.</summary>
    void Norm(DeviceBuffer x, DeviceBuffer gamma, DeviceBuffer beta, HookName normalized, HookName scale) =>
        b.Norm.LayerNorm(x, gamma, beta, ws.Normed, _rows, _d, s.LnEps, Tap(normalized, ws.Tmp), Tap(scale, ws.Scale));

    /// <summary>The tap buffer for a norm's output when hook <paramref name="h"/> is read, else null (not computed).</summary>
    DeviceBuffer? Tap(HookName h, DeviceBuffer buffer) => hooks.Wants(h) ? buffer : null;
}

using PolyEngine.Forward;
using PolyEngine.Kernels;

namespace PolyEngine.Backward;

/// <summary>
/// The reverse walk of <see cref="Gradient.Run"/> for a batch of seeds, one slot each ([slots, seq, ·] buffers): the
/// gradient flowing down the residual stream, with each seed's cotangent added where its hook sits — the walk is linear,
/// so seeds at different hooks, rows and positions share every GEMM. Slot k reads the kept forward state of its seed's
/// row (gathered per layer when the slots are not the rows themselves). A null gradient is an exact zero (no seed at or
/// above that point), so nothing runs for it. The buffers a layer makes go back to the model's pool of spare buffers
/// when the walk leaves it, and the next layer (and the next call) rents them again.
/// </summary>
sealed class GradientWalk : IDisposable
{
    readonly IBackend _b;
    readonly Models.ModelSpec _s;
    readonly ModelWeights _w;
    readonly ForwardState _state;
    readonly IReadOnlyList<GradientSeed> _seeds;
    readonly HookName _to;
    readonly int _slots, _seq;
    readonly int[]? _rowOf;   // slot → row of the state, null when slot k is row k
    readonly BufferPool _spare;
    readonly List<DeviceBuffer> _made = [];   // rented in this layer
    int[]? _gather;           // slot position → state position, for Kept

    GradientWalk(Model model, ForwardState state, IReadOnlyList<GradientSeed> seeds, HookName to)
    {
        _b = model.Backend; _s = model.Spec; _w = model.Weights; _spare = model.Spare; _state = state; _seeds = seeds; _to = to;
        _slots = seeds.Count; _seq = state.Seq;
        bool identity = seeds.Count == state.Batch && seeds.Select((s, k) => s.Row == k).All(x => x);
        _rowOf = identity ? null : seeds.Select(s => s.Row).ToArray();
    }

    /// <summary>The gradient of every seed with respect to <paramref name="to"/>: [seeds, state.Seq, d_model].</summary>
    public static float[] Run(Model model, ForwardState state, IReadOnlyList<GradientSeed> seeds, HookName to)
    {
        using var walk = new GradientWalk(model, state, seeds, to);
        var g = walk.Walk();
        var result = new float[(long)seeds.Count * state.Seq * model.Spec.DModel];
        if (g is not null) model.Backend.Download(g, result);
        return result;
    }

    long Rows => (long)_slots * _seq;
    int D => _s.DModel;

    DeviceBuffer? Walk()
    {
        int top = _seeds.Max(s => s.Hook.IsBlock ? s.Hook.Layer : -1);
        DeviceBuffer? g = null;   // d(resid_post of layer l)
        for (int l = top; l >= 0; l--)
        {
            g = Plus(g, Seed(HookPoint.ResidPost, l));
            if (At(HookPoint.ResidPost, l)) return g;
            if (_s.ParallelResidual)
            {
                var dAttn = Plus(g, Seed(HookPoint.AttnOut, l));
                if (At(HookPoint.AttnOut, l)) return dAttn;
                var dMlp = Plus(g, Seed(HookPoint.MlpOut, l));
                if (At(HookPoint.MlpOut, l)) return dMlp;
                g = Plus(Plus(g, Attention(l, dAttn)), Mlp(l, dMlp));   // resid_post = resid_pre + attn_out + mlp_out
            }
            else
            {
                var dMlp = Plus(g, Seed(HookPoint.MlpOut, l));
                if (At(HookPoint.MlpOut, l)) return dMlp;
                var mid = Plus(Plus(g, Mlp(l, dMlp)), Seed(HookPoint.ResidMid, l));
                if (At(HookPoint.ResidMid, l)) return mid;
                var dAttn = Plus(mid, Seed(HookPoint.AttnOut, l));
                if (At(HookPoint.AttnOut, l)) return dAttn;
                g = Plus(mid, Attention(l, dAttn));
            }
            g = Plus(g, Seed(HookPoint.ResidPre, l));
            if (At(HookPoint.ResidPre, l)) return g;
            g = Keep(g);
        }
        return Plus(g, Seed(HookPoint.Embed, -1));   // resid_pre 0 = embed (+ pos_embed, which no seed reaches)
    }

    bool At(HookPoint point, int layer) => _to == new HookName(point, layer);

    /// <summary>d(the MLP's input residual) from d(mlp_out) and the seeds at hook_post / hook_pre: W_out, the activation,
    /// W_in and ln2.</summary>
    DeviceBuffer? Mlp(int l, DeviceBuffer? dOut)
    {
        var block = _w.Blocks[l];
        DeviceBuffer? post = null;
        if (dOut is not null) { post = Make(Rows * _s.DMlp); _b.Linear.Backward(dOut, block.MlpOut, post, (int)Rows); }
        post = Plus(post, Seed(HookPoint.MlpPost, l));
        DeviceBuffer? pre = null;
        if (post is not null) { pre = Make(Rows * _s.DMlp); _b.Activations.Backward(Kept(HookPoint.MlpPre, l), post, pre, Rows * _s.DMlp, _s.Act); }
        pre = Plus(pre, Seed(HookPoint.MlpPre, l));
        if (pre is null) return null;
        var normed = Make(Rows * D);
        _b.Linear.Backward(pre, block.MlpIn, normed, (int)Rows);
        _b.Norm.LayerNormBackward(normed, Kept(HookPoint.Ln2Normalized, l), Kept(HookPoint.Ln2Scale, l), block.Ln2W, normed, (int)Rows, D);
        return normed;
    }

    /// <summary>d(resid_pre) through the attention from d(attn_out) and the seeds at hook_z, hook_q/k/v and hook_rot_q/k:
    /// W_O, the softmax, rotary, W_QKV and ln1.</summary>
    DeviceBuffer? Attention(int l, DeviceBuffer? dOut)
    {
        var block = _w.Blocks[l];
        bool rotary = _s.RotaryDim > 0;
        DeviceBuffer? dz = null;
        if (dOut is not null) { dz = Make(Rows * D); _b.Linear.Backward(dOut, block.AttnOut, dz, (int)Rows); }
        dz = Plus(dz, Seed(HookPoint.AttnZ, l));
        DeviceBuffer? dq = null, dk = null, dv = null;
        if (dz is not null)
        {
            (dq, dk, dv) = (Make(Rows * D), Make(Rows * D), Make(Rows * D));
            _b.Attention.CausalBackward(Kept(rotary ? HookPoint.AttnRotQ : HookPoint.AttnQ, l), Kept(rotary ? HookPoint.AttnRotK : HookPoint.AttnK, l),
                Kept(HookPoint.AttnV, l), dz, dq, dk, dv, _slots, _seq, _s.NHeads, _s.DHead, 1f / MathF.Sqrt(_s.DHead));
        }
        if (rotary)
        {
            dq = Plus(dq, Seed(HookPoint.AttnRotQ, l));
            dk = Plus(dk, Seed(HookPoint.AttnRotK, l));
            if (dq is not null) _b.Attention.RotaryBackward(dq, dq, _slots, _seq, _s.NHeads, _s.DHead, _s.RotaryDim, _s.RotaryBase);
            if (dk is not null) _b.Attention.RotaryBackward(dk, dk, _slots, _seq, _s.NHeads, _s.DHead, _s.RotaryDim, _s.RotaryBase);
        }
        dq = Plus(dq, Seed(HookPoint.AttnQ, l));
        dk = Plus(dk, Seed(HookPoint.AttnK, l));
        dv = Plus(dv, Seed(HookPoint.AttnV, l));
        if (dq is null && dk is null && dv is null) return null;
        var qkv = dq is null || dk is null || dv is null ? Zeros(Rows * 3 * D) : Make(Rows * 3 * D);
        if (dq is not null) _b.Rows.CopyColumns(dq, (int)Rows, D, 0, D, qkv, 3 * D, 0);
        if (dk is not null) _b.Rows.CopyColumns(dk, (int)Rows, D, 0, D, qkv, 3 * D, D);
        if (dv is not null) _b.Rows.CopyColumns(dv, (int)Rows, D, 0, D, qkv, 3 * D, 2 * D);
        var normed = Make(Rows * D);
        _b.Linear.Backward(qkv, block.Qkv, normed, (int)Rows);
        _b.Norm.LayerNormBackward(normed, Kept(HookPoint.Ln1Normalized, l), Kept(HookPoint.Ln1Scale, l), block.Ln1W, normed, (int)Rows, D);
        return normed;
    }

    /// <summary>The seeds' cotangents at one hook, [slots, seq, width] (one nonzero row per seed there), or null when no seed
    /// is at it.</summary>
    DeviceBuffer? Seed(HookPoint point, int layer)
    {
        var hook = new HookName(point, layer);
        if (!_seeds.Any(s => s.Hook == hook)) return null;
        int width = hook.WidthFor(_s);
        var host = new float[Rows * width];
        for (int k = 0; k < _slots; k++)
        {
            var s = _seeds[k];
            if (s.Hook != hook) continue;
            var row = host.AsSpan((int)(((long)k * _seq + s.Position) * width), width);
            if (s.Direction is { } v) v.CopyTo(row); else row.Fill(1f);
        }
        var b = _b.Upload(host);
        _made.Add(b);
        return b;
    }

    /// <summary>A kept forward buffer of the layer for every slot: the state's own when slot k is row k, else its rows
    /// gathered (freed with the layer).</summary>
    DeviceBuffer Kept(HookPoint point, int layer)
    {
        var src = _state.Buffer(new HookName(point, layer));
        if (_rowOf is null) return src;
        int width = (int)(src.Length / ((long)_state.Batch * _seq));
        if (_gather is null)
        {
            _gather = new int[Rows];
            for (int k = 0; k < _slots; k++)
                for (int t = 0; t < _seq; t++) _gather[(long)k * _seq + t] = _rowOf[k] * _seq + t;
        }
        var y = Make(Rows * width);
        _b.Rows.Gather(_gather, src, width, y);
        return y;
    }

    /// <summary>a + b (a null is zero), into a new buffer when both are there.</summary>
    DeviceBuffer? Plus(DeviceBuffer? a, DeviceBuffer? b)
    {
        if (a is null) return b;
        if (b is null) return a;
        var y = Make(a.Length);
        _b.Rows.Add(a, b, y, a.Length);
        return y;
    }

    /// <summary>A buffer of <paramref name="n"/> floats whose contents the caller overwrites.</summary>
    DeviceBuffer Make(long n) { var b = _spare.Rent(n); _made.Add(b); return b; }

    /// <summary>A zero-filled buffer of <paramref name="n"/> floats.</summary>
    DeviceBuffer Zeros(long n) { var b = _b.Allocate(n); _made.Add(b); return b; }

    /// <summary>Returns everything the layer made but <paramref name="g"/>, which flows on, to the pool (a device runs the
    /// queued kernels in order, so the next layer's writes come after this layer's reads).</summary>
    DeviceBuffer? Keep(DeviceBuffer? g)
    {
        foreach (var b in _made) if (!ReferenceEquals(b, g)) _spare.Return(b);
        _made.Clear();
        if (g is not null) _made.Add(g);
        return g;
    }

    public void Dispose()
    {
        _b.Synchronize();
        foreach (var b in _made) _spare.Return(b);
    }
}

using PolyEngine.Forward;
using PolyEngine.Kernels;

namespace PolyEngine.Backward;

/// <summary>
/// The backward pass (a vector-Jacobian product), hand-written like the forward: for an objective ⟨a[p], v⟩ at a hook a
/// of one row — v all ones by default, the authors' Σ_d a[p, d] — the gradient with respect to the token embeddings e
/// (<c>hook_embed</c>'s value) at every position of the row, [seq, d_model]. A forward pass keeps what the backward reads
/// (<see cref="RunOptions.KeepForBackward"/>: per layer the layer norms' taps, q/k (after rotary), v and the MLP's
/// pre-activation); the blocks are then walked in reverse from the hook's layer, with the backend's backward ops. Only
/// input gradients are formed, no weight gradients. Positions after p get exactly 0 (attention is causal).
/// Hooks so far: <c>hook_embed</c>, and per layer <c>hook_resid_pre</c>, <c>hook_attn_out</c>, <c>hook_resid_mid</c>
/// (sequential blocks), <c>hook_mlp_out</c> and <c>hook_resid_post</c>.
/// </summary>
public static class Gradient
{
    /// <summary>∂⟨a[p], v⟩/∂e for the hook a on the single row <paramref name="ids"/>: [ids.Length, d_model].</summary>
    public static float[] ToEmbeddings(Model model, int[] ids, HookName hook, int position, float[]? direction = null) =>
        Compute(model, ids, hook, position, direction).Gradient;

    /// <summary>The gradient of <see cref="ToEmbeddings"/>, and the hook's value a[p] [width] from the same forward pass
    /// (which runs only up to the hook's layer).</summary>
    public static (float[] Gradient, float[] Activation) Compute(Model model, int[] ids, HookName hook, int position, float[]? direction = null)
    {
        var spec = model.Spec;
        int seq = ids.Length, d = spec.DModel;
        if (position < 0 || position >= seq) throw new PolyEngineException($"position {position} is outside the row's 0..{seq - 1}");
        if (!HookName.AllFor(spec).Contains(hook)) throw new PolyEngineException($"hook '{hook}' does not exist in this {spec.Architecture} model");
        int width = hook.WidthFor(spec);
        if (direction is not null && direction.Length != width)
            throw new PolyEngineException($"the objective vector has {direction.Length} values; the hook '{hook}' is {width} wide");
        if (direction is not null && direction.All(x => x == 0f)) throw new PolyEngineException("the objective vector is all zeros, so every gradient is 0; give a nonzero vector");
        if (direction is not null && direction.Any(x => !float.IsFinite(x))) throw new PolyEngineException("the objective vector holds NaN or infinity; give finite numbers");
        bool supported = hook.Point is HookPoint.Embed or HookPoint.ResidPre or HookPoint.AttnOut or HookPoint.MlpOut or HookPoint.ResidPost
            || (hook.Point == HookPoint.ResidMid && !spec.ParallelResidual);
        if (!supported)
            throw new PolyEngineException($"the gradient from '{hook}' is not implemented yet; use hook_embed, or a layer's hook_resid_pre, hook_attn_out, hook_mlp_out or hook_resid_post");

        int layer = hook.IsBlock ? hook.Layer : -1;
        var forward = model.Run([ids], new RunOptions { KeepForBackward = true, Hooks = [hook], StopAtLayer = Math.Max(layer, 0) });
        var activation = forward.Cache[hook].Data.AsSpan(position * width, width).ToArray();
        using var state = forward.State!;
        using var walk = new Walk(model, state, seq);   // frees every buffer it made, also when a step fails
        var seed = new float[(long)seq * d];
        for (int i = 0; i < d; i++) seed[(long)position * d + i] = direction?[i] ?? 1f;
        var g = walk.Upload(seed);
        DeviceBuffer pre = hook.Point switch
        {
            HookPoint.Embed or HookPoint.ResidPre => g,
            HookPoint.ResidPost => walk.Layer(layer, g),
            HookPoint.AttnOut => walk.Attention(layer, g),
            HookPoint.ResidMid => walk.Add(g, walk.Attention(layer, g)),
            HookPoint.MlpOut when spec.ParallelResidual => walk.Mlp(layer, g),
            HookPoint.MlpOut => walk.Sequential(layer, walk.Mlp(layer, g)),
            _ => throw new InvalidOperationException(),
        };
        for (int l = (hook.Point == HookPoint.Embed ? 0 : layer) - 1; l >= 0; l--) pre = walk.Layer(l, pre);
        var result = new float[(long)seq * d];
        model.Backend.Download(pre, result);
        return (result, activation);
    }

    /// <summary>The reverse walk's steps over one row's kept state; every buffer it makes is freed with it.</summary>
    sealed class Walk(Model model, ForwardState state, int seq) : IDisposable
    {
        readonly IBackend _b = model.Backend;
        readonly Models.ModelSpec _s = model.Spec;
        readonly ModelWeights _w = model.Weights;
        readonly List<DeviceBuffer> _made = [];

        public DeviceBuffer Upload(float[] data) { var b = _b.Upload(data); _made.Add(b); return b; }
        DeviceBuffer Make(long n) { var b = _b.Allocate(n); _made.Add(b); return b; }
        DeviceBuffer Kept(HookPoint point, int layer) => state.Buffer(new HookName(point, layer));

        /// <summary>a + b into a new buffer.</summary>
        public DeviceBuffer Add(DeviceBuffer a, DeviceBuffer b)
        {
            var y = Make((long)seq * _s.DModel);
            _b.Rows.Add(a, b, y, (long)seq * _s.DModel);
            return y;
        }

        /// <summary>A whole block: from d(resid_post) to d(resid_pre).</summary>
        public DeviceBuffer Layer(int l, DeviceBuffer post) => _s.ParallelResidual
            ? Add(Add(post, Attention(l, post)), Mlp(l, post))   // resid_post = resid_pre + attn_out + mlp_out, both read resid_pre
            : Sequential(l, Add(post, Mlp(l, post)));             // d(resid_mid) = d(post) + the MLP's

        /// <summary>A sequential block from d(resid_mid): d(resid_pre) = d(resid_mid) + the attention's.</summary>
        public DeviceBuffer Sequential(int l, DeviceBuffer mid) => Add(mid, Attention(l, mid));

        /// <summary>d(the MLP's input residual) from d(mlp_out): through W_out, the activation, W_in and ln2.</summary>
        public DeviceBuffer Mlp(int l, DeviceBuffer dOut)
        {
            int d = _s.DModel;
            var block = _w.Blocks[l];
            var hidden = Make((long)seq * _s.DMlp);
            _b.Linear.Backward(dOut, block.MlpOut, hidden, seq);
            _b.Activations.Backward(Kept(HookPoint.MlpPre, l), hidden, hidden, (long)seq * _s.DMlp, _s.Act);
            var normed = Make((long)seq * d);
            _b.Linear.Backward(hidden, block.MlpIn, normed, seq);
            _b.Norm.LayerNormBackward(normed, Kept(HookPoint.Ln2Normalized, l), Kept(HookPoint.Ln2Scale, l), block.Ln2W, normed, seq, d);
            return normed;
        }

        /// <summary>d(resid_pre) through the attention from d(attn_out): W_O, the softmax, rotary, W_QKV and ln1.</summary>
        public DeviceBuffer Attention(int l, DeviceBuffer dOut)
        {
            int d = _s.DModel;
            var block = _w.Blocks[l];
            bool rotary = _s.RotaryDim > 0;
            var dz = Make((long)seq * d);
            _b.Linear.Backward(dOut, block.AttnOut, dz, seq);
            var (dq, dk, dv) = (Make((long)seq * d), Make((long)seq * d), Make((long)seq * d));
            _b.Attention.CausalBackward(Kept(rotary ? HookPoint.AttnRotQ : HookPoint.AttnQ, l), Kept(rotary ? HookPoint.AttnRotK : HookPoint.AttnK, l),
                Kept(HookPoint.AttnV, l), dz, dq, dk, dv, 1, seq, _s.NHeads, _s.DHead, 1f / MathF.Sqrt(_s.DHead));
            if (rotary)
            {
                _b.Attention.RotaryBackward(dq, dq, 1, seq, _s.NHeads, _s.DHead, _s.RotaryDim, _s.RotaryBase);
                _b.Attention.RotaryBackward(dk, dk, 1, seq, _s.NHeads, _s.DHead, _s.RotaryDim, _s.RotaryBase);
            }
            var qkv = Make((long)seq * 3 * d);
            _b.Rows.CopyColumns(dq, seq, d, 0, d, qkv, 3 * d, 0);
            _b.Rows.CopyColumns(dk, seq, d, 0, d, qkv, 3 * d, d);
            _b.Rows.CopyColumns(dv, seq, d, 0, d, qkv, 3 * d, 2 * d);
            var normed = Make((long)seq * d);
            _b.Linear.Backward(qkv, block.Qkv, normed, seq);
            _b.Norm.LayerNormBackward(normed, Kept(HookPoint.Ln1Normalized, l), Kept(HookPoint.Ln1Scale, l), block.Ln1W, normed, seq, d);
            return normed;
        }

        public void Dispose()
        {
            _b.Synchronize();
            foreach (var b in _made) b.Dispose();
        }
    }
}

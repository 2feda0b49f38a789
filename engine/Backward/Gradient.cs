using PolyEngine.Forward;

namespace PolyEngine.Backward;

/// <summary>One objective of a batched gradient: ⟨a[p], v⟩ for the hook a of row <paramref name="Row"/> (an index into
/// the rows given to <see cref="Gradient.Run"/>) at <paramref name="Position"/>, v = <paramref name="Direction"/> [hook
/// width] or all ones when null (the authors' Σ_d a[p, d]).</summary>
public sealed record GradientSeed(int Row, HookName Hook, int Position, float[]? Direction = null);

/// <summary>A seed's result: the gradient [row length, d_model] with respect to the <c>to</c> hook of
/// <see cref="Gradient.Run"/>, and the hook's value a[p] [hook width] from the same forward pass.</summary>
public sealed record GradientResult(float[] Gradient, float[] Activation);

/// <summary>
/// The backward pass (a vector-Jacobian product), hand-written like the forward: for objectives ⟨a[p], v⟩ at hooks a of
/// rows — v all ones by default, the authors' Σ_d a[p, d] — the gradient with respect to the token embeddings e
/// (<c>hook_embed</c>'s value) or any earlier residual-space hook, at every position of the row, [seq, d_model]. One
/// forward pass keeps what the backward reads (<see cref="RunOptions.KeepForBackward"/>: per layer the layer norms' taps,
/// q/k (after rotary), v and the MLP's pre-activation), up to the deepest seed's layer; then every seed walks the blocks
/// in reverse together, one batch slot each (<see cref="GradientWalk"/>), with the backend's backward ops. Only input
/// gradients are formed, no weight gradients. Positions after p get exactly 0 (attention is causal).
/// Objectives: <c>hook_embed</c> and every block hook but the layer norms' taps and the attention pattern.
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
        var r = Run(model, [ids], [new GradientSeed(0, hook, position, direction)])[0];
        return (r.Gradient, r.Activation);
    }

    /// <summary>Every seed's gradient with respect to <paramref name="to"/> (<c>hook_embed</c> by default; else a layer's
    /// hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out or hook_resid_post at or before every seed's hook), in
    /// one forward over the distinct <paramref name="rows"/> (ragged rows are padded) and batched backward walks.</summary>
    public static GradientResult[] Run(Model model, IReadOnlyList<int[]> rows, IReadOnlyList<GradientSeed> seeds, HookName? to = null)
    {
        var spec = model.Spec;
        var target = to ?? new HookName(HookPoint.Embed);
        if (rows.Count == 0) throw new PolyEngineException("no rows to take gradients on");
        if (seeds.Count == 0) return [];
        CheckTarget(spec, target);
        for (int i = 0; i < seeds.Count; i++) CheckSeed(spec, rows, seeds[i], target, seeds.Count == 1 ? "" : $"seed {i}: ");

        // Only positions up to a row's last seed matter (attention is causal: later ones get exactly 0), so each row runs
        // up to there, and rows without seeds do not run.
        var used = seeds.Select(s => s.Row).Distinct().Order().ToArray();
        var slotOf = used.Select((r, i) => (r, i)).ToDictionary(x => x.r, x => x.i);
        var trimmed = used.Select(r => rows[r][..(seeds.Where(s => s.Row == r).Max(s => s.Position) + 1)]).ToArray();
        var local = seeds.Select(s => s with { Row = slotOf[s.Row] }).ToList();

        var hooks = seeds.Select(s => s.Hook).Distinct().ToList();
        int stop = Math.Max(0, seeds.Max(s => s.Hook.IsBlock ? s.Hook.Layer : 0));
        var forward = model.Run(trimmed, new RunOptions { KeepForBackward = true, Hooks = hooks, StopAtLayer = stop });
        using var state = forward.State!;
        int seq = state.Seq, d = spec.DModel;
        var results = new GradientResult[seeds.Count];
        // Slots per walk: as many seeds as keep the walk's widest buffers near 256 MiB.
        int slots = (int)Math.Clamp((1L << 26) / ((long)seq * Math.Max(3 * d, spec.DMlp)), 1, seeds.Count);
        for (int start = 0; start < seeds.Count; start += slots)
        {
            var chunk = local.Skip(start).Take(slots).ToList();
            var grads = GradientWalk.Run(model, state, chunk, target);   // [chunk, seq, d]
            for (int k = 0; k < chunk.Count; k++)
            {
                var s = chunk[k];
                int width = s.Hook.WidthFor(spec);
                var g = new float[(long)rows[seeds[start + k].Row].Length * d];   // positions past the trimmed row: 0
                grads.AsSpan((int)((long)k * seq * d), trimmed[s.Row].Length * d).CopyTo(g);
                var a = forward.Cache[s.Hook].Data.AsSpan((int)(((long)s.Row * seq + s.Position) * width), width).ToArray();
                results[start + k] = new GradientResult(g, a);
            }
        }
        return results;
    }

    /// <summary>The hooks a gradient can be taken with respect to.</summary>
    static void CheckTarget(Models.ModelSpec spec, HookName to)
    {
        bool ok = to.Point is HookPoint.Embed or HookPoint.ResidPre or HookPoint.AttnOut or HookPoint.MlpOut or HookPoint.ResidPost
            || (to.Point == HookPoint.ResidMid && !spec.ParallelResidual);
        if (!ok || !HookName.AllFor(spec).Contains(to))
            throw new PolyEngineException($"gradients are taken with respect to hook_embed or a layer's hook_resid_pre, hook_attn_out, hook_mlp_out, hook_resid_post" +
                $"{(spec.ParallelResidual ? "" : " or hook_resid_mid")}, not '{to}'");
    }

    static void CheckSeed(Models.ModelSpec spec, IReadOnlyList<int[]> rows, GradientSeed s, HookName to, string where)
    {
        if (s.Row < 0 || s.Row >= rows.Count) throw new PolyEngineException($"{where}row {s.Row} is outside the rows 0..{rows.Count - 1}");
        int seq = rows[s.Row].Length;
        if (s.Position < 0 || s.Position >= seq) throw new PolyEngineException($"{where}position {s.Position} is outside the row's 0..{seq - 1}");
        var hook = s.Hook;
        if (!HookName.AllFor(spec).Contains(hook)) throw new PolyEngineException($"{where}hook '{hook}' does not exist in this {spec.Architecture} model");
        if (hook.Point is HookPoint.LnFinalScale or HookPoint.LnFinalNormalized)
            throw new PolyEngineException($"{where}'{hook}' is on the LM head side; take the gradient from hook_embed or a block's hook (e.g. blocks.{spec.NLayers - 1}.hook_resid_post)");
        if (hook.Point == HookPoint.PosEmbed)
            throw new PolyEngineException($"{where}hook_pos_embed does not depend on the token embeddings, so nothing flows back; use hook_embed or a block's hook");
        if (hook.Point is HookPoint.Ln1Scale or HookPoint.Ln1Normalized or HookPoint.Ln2Scale or HookPoint.Ln2Normalized or HookPoint.AttnPattern)
            throw new PolyEngineException($"{where}the gradient from '{hook}' is not implemented; use the block's hook_resid_pre, attention (hook_q/k/v/z, hook_attn_out), MLP (hook_pre/post, hook_mlp_out) or residual hooks");
        if (hook.CompareTo(to) < 0)
            throw new PolyEngineException($"{where}'{hook}' comes before '{to}' in the forward pass, so nothing flows back from it to '{to}'; take the gradient with respect to an earlier hook");
        int width = hook.WidthFor(spec);
        if (s.Direction is not { } v) return;
        if (v.Length != width) throw new PolyEngineException($"{where}the objective vector has {v.Length} values; the hook '{hook}' is {width} wide");
        if (v.Any(x => !float.IsFinite(x))) throw new PolyEngineException($"{where}the objective vector holds NaN or infinity; give finite numbers");
        if (v.All(x => x == 0f)) throw new PolyEngineException($"{where}the objective vector is all zeros, so every gradient is 0; give a nonzero vector");
    }
}

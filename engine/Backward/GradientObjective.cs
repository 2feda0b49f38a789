using PolyEngine.Formats;

namespace PolyEngine.Backward;

/// <summary>
/// What a gradient is of, at a hook and position: the hook's activation a[p] read along a direction v — all ones (the
/// authors' Σ_d a[p, d]), a vector from a file, or an SAE feature's pre-activation. An SAE's pre-activation is affine in
/// a[p] when its input processing is (b_dec subtracted, centring, no row norm): then it is ⟨a[p], v⟩ + c with v its
/// encoder column as the SAE computes it and c its value at 0, found by encoding the zero and basis vectors once.
/// The objective's value is <see cref="Offset"/> + ⟨a[p], v⟩ (v all ones when <see cref="Direction"/> is null).
/// </summary>
public sealed record GradientObjective(string Description, float[]? Direction, double Offset = 0)
{
    /// <summary>The objective's value at the hook's value <paramref name="a"/>.</summary>
    public double Value(float[] a)
    {
        double s = Offset;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * (Direction?[i] ?? 1f);
        return s;
    }

    /// <summary>
    /// The objective as the authors' TransformerLens runs computed it, on processed weights. <c>center_writing_weights</c>
    /// centres W_O, b_O, W_out and b_out along d_model, so there hook_attn_out and hook_mlp_out are C·a with C = I − 11ᵀ/d
    /// (the layer norms make every block blind to the stream's mean, so nothing else changes); ⟨C·a, v⟩ = ⟨a, C·v⟩, so the
    /// gradient is this engine's on HF weights with v centred. With v all ones C·v = 0: the objective is degenerate (the
    /// authors' TL gradient is round-off), and this says so instead of returning noise.
    /// </summary>
    public GradientObjective UnderTransformerLensWeights(HookName hook, int width)
    {
        if (hook.Point is not (HookPoint.AttnOut or HookPoint.MlpOut))
            throw new PolyEngineException($"--weights tl models TransformerLens's processing for hook_attn_out and hook_mlp_out objectives (the authors' TL sites), not '{hook}'; use --weights hf");
        var v = Direction ?? [.. Enumerable.Repeat(1f, width)];
        double mean = v.Average(x => (double)x);
        var centred = v.Select(x => (float)(x - mean)).ToArray();
        if (centred.Max(MathF.Abs) <= 1e-6 * v.Max(MathF.Abs))
            throw new PolyEngineException($"--weights tl: TransformerLens's center_writing_weights makes {hook} sum to exactly 0 over d_model, so the objective {Description} is degenerate there " +
                "(the authors' TL gradient was round-off); use HF weights (--weights hf, the default) or a non-constant --objective");
        return new($"{Description} on TransformerLens-processed weights (v centred)", centred, Offset);
    }

    /// <summary>Parses <c>sum</c>, <c>FILE.npy</c> / <c>FILE.safetensors[:NAME]</c> (one vector) or <c>sae:DIR:FEATURE</c> for
    /// <paramref name="hook"/> of <paramref name="model"/>.</summary>
    public static GradientObjective Parse(string text, Model model, HookName hook)
    {
        int width = hook.WidthFor(model.Spec);
        if (text == "sum") return new("Σ_d a[p, d]", null);
        if (text.StartsWith("sae:", StringComparison.Ordinal))
        {
            int colon = text.LastIndexOf(':');
            if (colon <= 4 || !int.TryParse(text[(colon + 1)..], out int feature))
                throw new PolyEngineException($"--objective {text}: give sae:DIR:FEATURE, e.g. sae:./saes/blocks.1.hook_resid_post:12");
            string folder = text[4..colon];
            using var sae = SparseAutoencoder.Load(folder, model.Backend);
            sae.CheckAgainst(model.Spec);
            if (sae.Config.Hook != hook) throw new PolyEngineException($"--objective: the SAE reads {sae.Config.Hook}, not --hook {hook}; give its own hook");
            if (feature < 0 || feature >= sae.Config.DSae) throw new PolyEngineException($"--objective: feature {feature} is outside the SAE's 0..{sae.Config.DSae - 1}");
            if (sae.Config.Normalization != Kernels.RowNormalization.None)
                throw new PolyEngineException($"--objective: this SAE normalises its input ({sae.Config.Normalization}), so its pre-activation is not linear in the hook; the gradient through that is not implemented yet");
            // Rows: the zero vector, then each basis vector; pre_f(e_i) − pre_f(0) is the direction.
            var basis = new float[(long)(width + 1) * width];
            for (int i = 0; i < width; i++) basis[(long)(i + 1) * width + i] = 1f;
            var pre = sae.Encode(basis, width + 1).HiddenPre;
            var v = new float[width];
            for (int i = 0; i < width; i++) v[i] = pre[(long)(i + 1) * sae.Config.DSae + feature] - pre[feature];
            if (v.All(x => x == 0f)) throw new PolyEngineException($"--objective: feature {feature}'s encoder column is zero, so every gradient is 0");
            double offset = pre[feature];   // pre_f(0): the pre-activation is offset + ⟨a, v⟩
            return new($"feature {feature}'s pre-activation of {Path.GetFileName(folder.TrimEnd('/'))}", v, offset);
        }
        var vectors = VectorFile.Load(text, "--objective");
        if (vectors.Length != 1) throw new PolyEngineException($"--objective {text}: holds {vectors.Length} vectors; give one [{width}] vector");
        var dir = vectors[0];
        if (dir.Length != width) throw new PolyEngineException($"--objective {text}: the vector has {dir.Length} values; the hook {hook} is {width} wide");
        return new($"⟨a[p], v⟩ with v from {Path.GetFileName(VectorFile.Split(text).File)}", dir);
    }
}

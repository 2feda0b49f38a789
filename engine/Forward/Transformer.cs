using PolyEngine.Kernels;
using PolyEngine.Models;

namespace PolyEngine.Forward;

/// <summary>
/// The layer loop for both families on any <see cref="IBackend"/>: weights uploaded and packed once, activations in
/// backend buffers reused across calls, a hook read only when requested (a tap is one copy to the host).
/// Both families share one path: the QKV output is [Q | K | V] (NeoX is de-interleaved at load), rotary only when
/// <see cref="ModelSpec.RotaryDim"/> &gt; 0, and the residual is sequential or parallel per the spec.
/// </summary>
public sealed class Transformer : IDisposable
{
    sealed class Block
    {
        public required DeviceBuffer Ln1W, Ln1B, Ln2W, Ln2B, QkvB, AttnOutB, MlpInB, MlpOutB;
        public required PackedWeight Qkv, AttnOut, MlpIn, MlpOut;
    }

    readonly IBackend _backend;
    readonly ModelSpec _spec;
    readonly DeviceBuffer _embed;          // [d_vocab, d_model]
    readonly DeviceBuffer? _posEmbed;      // [n_ctx, d_model]
    readonly Block[] _blocks;
    readonly DeviceBuffer _lnFinalW, _lnFinalB;
    readonly PackedWeight _unembed;        // d_model → d_vocab
    Workspace? _ws;

    public Transformer(IBackend backend, ModelSpec spec, ModelParams p)
    {
        _backend = backend;
        _spec = spec;
        _embed = backend.Upload(p.Embed);
        _posEmbed = p.PosEmbed is null ? null : backend.Upload(p.PosEmbed);
        PackedWeight Pack(Matrix m) => backend.PackWeight(m.Data, m.In, m.Out, m.Layout);
        _blocks = p.Blocks.Select(b => new Block
        {
            Ln1W = backend.Upload(b.Ln1W), Ln1B = backend.Upload(b.Ln1B), Ln2W = backend.Upload(b.Ln2W), Ln2B = backend.Upload(b.Ln2B),
            Qkv = Pack(b.Qkv), QkvB = backend.Upload(b.QkvB), AttnOut = Pack(b.AttnOut), AttnOutB = backend.Upload(b.AttnOutB),
            MlpIn = Pack(b.MlpIn), MlpInB = backend.Upload(b.MlpInB), MlpOut = Pack(b.MlpOut), MlpOutB = backend.Upload(b.MlpOutB),
        }).ToArray();
        _lnFinalW = backend.Upload(p.LnFinalW);
        _lnFinalB = backend.Upload(p.LnFinalB);
        _unembed = Pack(p.Unembed);
    }

    /// <summary>Activation buffers for one rows count, kept between calls of the same shape.</summary>
    sealed class Workspace(IBackend b, ModelSpec s, int batch, int seq) : IDisposable
    {
        public readonly int Batch = batch, Seq = seq;
        public readonly DeviceBuffer Resid = b.Allocate((long)batch * seq * s.DModel);     // [rows, d_model]
        public readonly DeviceBuffer Mid = b.Allocate((long)batch * seq * s.DModel);       // [rows, d_model]
        public readonly DeviceBuffer Normed = b.Allocate((long)batch * seq * s.DModel);    // [rows, d_model]
        public readonly DeviceBuffer Tmp = b.Allocate((long)batch * seq * s.DModel);       // [rows, d_model] (pos embed, taps)
        public readonly DeviceBuffer Scale = b.Allocate((long)batch * seq);                // [rows]
        public readonly DeviceBuffer Qkv = b.Allocate((long)batch * seq * 3 * s.DModel);   // [rows, 3·d_model]
        public readonly DeviceBuffer Q = b.Allocate((long)batch * seq * s.DModel);         // [rows, n_heads, d_head]
        public readonly DeviceBuffer K = b.Allocate((long)batch * seq * s.DModel);
        public readonly DeviceBuffer V = b.Allocate((long)batch * seq * s.DModel);
        public readonly DeviceBuffer Z = b.Allocate((long)batch * seq * s.DModel);
        public readonly DeviceBuffer AttnOut = b.Allocate((long)batch * seq * s.DModel);
        public readonly DeviceBuffer MlpHidden = b.Allocate((long)batch * seq * s.DMlp);   // [rows, d_mlp]
        public readonly DeviceBuffer MlpOut = b.Allocate((long)batch * seq * s.DModel);
        DeviceBuffer? _pattern, _logits, _last;
        public DeviceBuffer Pattern => _pattern ??= b.Allocate((long)Batch * s.NHeads * Seq * Seq);  // [batch, n_heads, q, k]
        public DeviceBuffer Logits(long n) => _logits is not null && _logits.Length >= n ? _logits : (_logits = Replace(_logits, n));
        public DeviceBuffer Last => _last ??= b.Allocate((long)Batch * s.DModel);           // [batch, d_model]

        DeviceBuffer Replace(DeviceBuffer? old, long n) { old?.Dispose(); return b.Allocate(n); }

        public void Dispose()
        {
            foreach (var buf in new[] { Resid, Mid, Normed, Tmp, Scale, Qkv, Q, K, V, Z, AttnOut, MlpHidden, MlpOut, _pattern, _logits, _last })
                buf?.Dispose();
        }
    }

    /// <summary>Runs <paramref name="ids"/> [batch, seq] (already validated by the caller); <paramref name="lengths"/> [batch]
    /// are the rows' real lengths when they were right-padded (null: every row is <paramref name="seq"/> long).</summary>
    public RunResult Run(int[] ids, int batch, int seq, RunOptions options, int[]? lengths = null)
    {
        lengths ??= Enumerable.Repeat(seq, batch).ToArray();
        var s = _spec;
        var b = _backend;
        if (_ws is null || _ws.Batch != batch || _ws.Seq != seq) { _ws?.Dispose(); _ws = new Workspace(b, s, batch, seq); }
        var ws = _ws;
        var download = new HashSet<HookName>(options.Hooks);
        var want = new HashSet<HookName>(download.Concat(options.DeviceTaps.Select(t => t.Hook)));   // computed: downloaded or read on the device
        var cache = new ActivationCache();
        var edits = options.Edits.Select(e => (Edit: e, Shape: e.Check(s, batch, seq))).ToLookup(x => x.Edit.Hook);
        var uploads = new List<DeviceBuffer>();   // the edits' Mul/Add on the backend, freed after the pass
        // A hook point: its edits in place, then its taps, then its replacements. True when it was changed (a fused norm that
        // read it is stale).
        bool Hook(HookName name, DeviceBuffer buf)
        {
            bool edited = false;
            foreach (var (e, (width, perPosition)) in edits[name])
            {
                DeviceBuffer? Up(float[]? v)
                {
                    if (HookEdit.Expand(v, batch, width) is not { } values) return null;
                    var u = b.Upload(values);
                    uploads.Add(u);
                    return u;
                }
                b.Rows.Edit(buf, batch, seq, width, new RowEdit(Up(e.Mul), Up(e.Add), perPosition, e.From ?? new int[batch]));
                edited = true;
            }
            Tap(name, buf);
            foreach (var rep in options.Replacements)
                if (rep.Hook == name) { rep.Replace(buf, batch, seq); edited = true; }
            return edited;
        }
        void Tap(HookName name, DeviceBuffer buf)
        {
            if (!want.Contains(name)) return;
            foreach (var t in options.DeviceTaps) if (t.Hook == name) t.Read(buf);
            if (!download.Contains(name)) return;
            var shape = name.ShapeFor(s, batch, seq);
            var data = HostArray(shape.Aggregate(1L, (x, y) => x * y));
            b.Download(buf, data);
            cache.Set(name, new Tensor(data, shape));
        }
        try
        {
            var (logits, top) = Layers(ids, batch, seq, lengths, options, ws, want, Hook, Tap);
            return new RunResult(ids, batch, seq, logits, cache, top, lengths);
        }
        finally
        {
            b.Synchronize();   // the pass is done (and queued kernels no longer read the edits' buffers)
            foreach (var u in uploads) u.Dispose();
        }
    }

    /// <summary>The layer loop: embeddings, blocks 0..last, final norm and LM head, calling <paramref name="Hook"/> at every
    /// editable hook point and <paramref name="Tap"/> at the read-only ones.</summary>
    (Tensor? Logits, TopLogitRows? Top) Layers(int[] ids, int batch, int seq, int[] lengths, RunOptions options, Workspace ws, HashSet<HookName> want,
        Func<HookName, DeviceBuffer, bool> Hook, Action<HookName, DeviceBuffer> Tap)
    {
        var s = _spec;
        var b = _backend;
        int d = s.DModel, rows = batch * seq;
        int lastLayer = options.StopAtLayer ?? s.NLayers - 1;

        // Embeddings: resid = W_E[ids] (+ W_pos[pos])
        b.Rows.Gather(ids, _embed, d, ws.Resid);
        Hook(new(HookPoint.Embed), ws.Resid);
        if (_posEmbed is not null)
        {
            var positions = new int[rows];
            for (int r = 0; r < rows; r++) positions[r] = r % seq;
            b.Rows.Gather(positions, _posEmbed, d, ws.Tmp);
            Hook(new(HookPoint.PosEmbed), ws.Tmp);
            b.Rows.Add(ws.Resid, ws.Tmp, ws.Resid, (long)rows * d);
        }

        // Every residual add is fused with the layer norm that reads its result (AddLayerNorm): resid_mid with ln2
        // (sequential blocks), resid_post with the next block's ln1 or with ln_final. normedReady: ws.Normed (and the
        // ln taps in ws.Tmp / ws.Scale) already hold the next norm's output — unless an edit changed the residual since,
        // then the norm runs again on the edited values.
        bool normedReady = false;
        for (int l = 0; l <= lastLayer; l++)
        {
            var w = _blocks[l];
            if (Hook(new(HookPoint.ResidPre, l), ws.Resid)) normedReady = false;
            // Attention: normed = LN1(resid); qkv = normed·W_qkv + b; z = attn(q, k, v); attn_out = z·W_O + b_O
            if (!normedReady)
                b.Norm.LayerNorm(ws.Resid, w.Ln1W, w.Ln1B, ws.Normed, rows, d, s.LnEps,
                    Wants(want, HookPoint.Ln1Normalized, l) ? ws.Tmp : null, Wants(want, HookPoint.Ln1Scale, l) ? ws.Scale : null);
            Tap(new(HookPoint.Ln1Normalized, l), ws.Tmp);
            Tap(new(HookPoint.Ln1Scale, l), ws.Scale);
            b.Linear.Forward(ws.Normed, w.Qkv, w.QkvB, ws.Qkv, rows);
            b.Rows.CopyColumns(ws.Qkv, rows, 3 * d, 0, d, ws.Q);
            b.Rows.CopyColumns(ws.Qkv, rows, 3 * d, d, d, ws.K);
            b.Rows.CopyColumns(ws.Qkv, rows, 3 * d, 2 * d, d, ws.V);
            Hook(new(HookPoint.AttnQ, l), ws.Q);
            Hook(new(HookPoint.AttnK, l), ws.K);
            Hook(new(HookPoint.AttnV, l), ws.V);
            if (s.RotaryDim > 0)
            {
                b.Attention.Rotary(ws.Q, ws.Q, batch, seq, s.NHeads, s.DHead, s.RotaryDim, s.RotaryBase);
                b.Attention.Rotary(ws.K, ws.K, batch, seq, s.NHeads, s.DHead, s.RotaryDim, s.RotaryBase);
                Hook(new(HookPoint.AttnRotQ, l), ws.Q);
                Hook(new(HookPoint.AttnRotK, l), ws.K);
            }
            bool wantPattern = Wants(want, HookPoint.AttnPattern, l);
            b.Attention.Causal(ws.Q, ws.K, ws.V, ws.Z, batch, seq, s.NHeads, s.DHead, 1f / MathF.Sqrt(s.DHead),
                wantPattern ? ws.Pattern : null);
            if (wantPattern) Tap(new(HookPoint.AttnPattern, l), ws.Pattern);
            Hook(new(HookPoint.AttnZ, l), ws.Z);
            b.Linear.Forward(ws.Z, w.AttnOut, w.AttnOutB, ws.AttnOut, rows);
            Hook(new(HookPoint.AttnOut, l), ws.AttnOut);

            // MLP input: sequential reads LN2(resid_mid = resid_pre + attn_out); parallel reads LN2(resid_pre).
            var ln2Normalized = Wants(want, HookPoint.Ln2Normalized, l) ? ws.Tmp : null;
            var ln2Scale = Wants(want, HookPoint.Ln2Scale, l) ? ws.Scale : null;
            if (s.ParallelResidual) b.Norm.LayerNorm(ws.Resid, w.Ln2W, w.Ln2B, ws.Normed, rows, d, s.LnEps, ln2Normalized, ln2Scale);
            else
            {
                b.Norm.AddLayerNorm(ws.Resid, ws.AttnOut, ws.Mid, w.Ln2W, w.Ln2B, ws.Normed, rows, d, s.LnEps, ln2Normalized, ln2Scale);
                if (Hook(new(HookPoint.ResidMid, l), ws.Mid)) b.Norm.LayerNorm(ws.Mid, w.Ln2W, w.Ln2B, ws.Normed, rows, d, s.LnEps, ln2Normalized, ln2Scale);
            }
            Tap(new(HookPoint.Ln2Normalized, l), ws.Tmp);
            Tap(new(HookPoint.Ln2Scale, l), ws.Scale);
            b.Linear.Forward(ws.Normed, w.MlpIn, w.MlpInB, ws.MlpHidden, rows);
            Hook(new(HookPoint.MlpPre, l), ws.MlpHidden);
            b.Activations.Forward(ws.MlpHidden, ws.MlpHidden, (long)rows * s.DMlp, s.Act);
            Hook(new(HookPoint.MlpPost, l), ws.MlpHidden);
            b.Linear.Forward(ws.MlpHidden, w.MlpOut, w.MlpOutB, ws.MlpOut, rows);
            Hook(new(HookPoint.MlpOut, l), ws.MlpOut);

            // resid_post: parallel = (mlp_out + attn_out) + resid_pre (HF's association); sequential = resid_mid + mlp_out.
            DeviceBuffer addA = ws.Mid, addB = ws.MlpOut;
            if (s.ParallelResidual)
            {
                b.Rows.Add(ws.MlpOut, ws.AttnOut, ws.Mid, (long)rows * d);
                addB = ws.Resid;
            }
            // ...fused with the norm that reads it next: the next block's ln1, or ln_final after the last block.
            (DeviceBuffer W, DeviceBuffer B, HookName Normalized, HookName Scale)? next =
                l < lastLayer ? (_blocks[l + 1].Ln1W, _blocks[l + 1].Ln1B, new(HookPoint.Ln1Normalized, l + 1), new(HookPoint.Ln1Scale, l + 1))
                : options.StopAtLayer is null ? (_lnFinalW, _lnFinalB, new(HookPoint.LnFinalNormalized), new(HookPoint.LnFinalScale))
                : null;
            if (next is { } n)
                b.Norm.AddLayerNorm(addA, addB, ws.Resid, n.W, n.B, ws.Normed, rows, d, s.LnEps,
                    want.Contains(n.Normalized) ? ws.Tmp : null, want.Contains(n.Scale) ? ws.Scale : null);
            else b.Rows.Add(addA, addB, ws.Resid, (long)rows * d);
            normedReady = next is not null;
            if (Hook(new(HookPoint.ResidPost, l), ws.Resid)) normedReady = false;
        }

        Tensor? logits = null;
        TopLogitRows? top = null;
        if (options.StopAtLayer is null)
        {
            if (!normedReady)   // ln_final was fused with an add whose result an edit then changed
                b.Norm.LayerNorm(ws.Resid, _lnFinalW, _lnFinalB, ws.Normed, rows, d, s.LnEps,
                    want.Contains(new(HookPoint.LnFinalNormalized)) ? ws.Tmp : null, want.Contains(new(HookPoint.LnFinalScale)) ? ws.Scale : null);
            Tap(new(HookPoint.LnFinalNormalized), ws.Tmp);
            Tap(new(HookPoint.LnFinalScale), ws.Scale);
            if (options.Logits == LogitsMode.All) logits = new Tensor(Unembed(ws, ws.Normed, rows), batch, seq, s.DVocab);
            if (options.Logits == LogitsMode.LastPosition || options.TopLogits > 0)
            {
                var lastRows = Enumerable.Range(0, batch).Select(r => r * seq + lengths[r] - 1).ToArray();   // each row's last real token
                b.Rows.Gather(lastRows, ws.Normed, d, ws.Last);
                if (options.TopLogits > 0)   // the reduction reads the logits where they are; they leave only when asked for
                {
                    var deviceLogits = ws.Logits((long)batch * s.DVocab);
                    b.Linear.Forward(ws.Last, _unembed, null, deviceLogits, batch);
                    top = b.Reductions.TopLogits(deviceLogits, batch, s.DVocab, options.TopLogits);
                    if (options.Logits == LogitsMode.LastPosition)
                    {
                        var data = HostArray((long)batch * s.DVocab);
                        b.Download(deviceLogits, data);
                        logits = new Tensor(data, batch, 1, s.DVocab);
                    }
                }
                else logits = new Tensor(Unembed(ws, ws.Last, batch), batch, 1, s.DVocab);
            }
        }
        return (logits, top);
    }

    /// <summary>logits[rows, d_vocab] = x · W_U into a new host array: written in place when the backend computes in host
    /// memory (no second pass over a [rows, d_vocab] array), else computed in the workspace and downloaded.</summary>
    float[] Unembed(Workspace ws, DeviceBuffer x, int rows)
    {
        var data = HostArray((long)rows * _spec.DVocab);
        var wrapped = _backend.TryWrapHost(data);
        _backend.Linear.Forward(x, _unembed, null, wrapped ?? ws.Logits(data.LongLength), rows);
        if (wrapped is null) _backend.Download(ws.Logits(data.LongLength), data);
        return data;
    }

    /// <summary>A host array that the next download overwrites whole: not zeroed first (a 200 MB logits array would
    /// otherwise be written twice).</summary>
    static float[] HostArray(long length) => GC.AllocateUninitializedArray<float>(checked((int)length));

    static bool Wants(HashSet<HookName> want, HookPoint p, int layer) => want.Contains(new(p, layer));

    public void Dispose()
    {
        _ws?.Dispose();
        _embed.Dispose();
        _posEmbed?.Dispose();
        foreach (var bl in _blocks)
            foreach (var x in new IDisposable[] { bl.Ln1W, bl.Ln1B, bl.Ln2W, bl.Ln2B, bl.Qkv, bl.QkvB, bl.AttnOut, bl.AttnOutB, bl.MlpIn, bl.MlpInB, bl.MlpOut, bl.MlpOutB })
                x.Dispose();
        _lnFinalW.Dispose();
        _lnFinalB.Dispose();
        _unembed.Dispose();
    }
}

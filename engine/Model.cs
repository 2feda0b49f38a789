using PolyEngine.Formats;
using PolyEngine.Forward;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;
using PolyEngine.Models;
using PolyEngine.Tokenization;

namespace PolyEngine;

/// <summary>
/// A loaded model: the embeddable entry point. Thread-safe; passes on one model run one at a time (load the model
/// twice, or batch rows, for parallel throughput).
/// <code>
/// using var model = Model.Load("gpt2");                       // folder, or hub id from the HF cache
/// var result = model.Run([model.Encode("Hello world")], new RunOptions { Hooks = HookName.Select(model.Spec, "blocks.*.hook_resid_post") });
/// Tensor logits = result.Logits!;                              // [batch, pos, d_vocab]
/// Tensor resid = result.Cache["blocks.0.hook_resid_post"];     // [batch, pos, d_model]
/// </code>
/// </summary>
public sealed class Model : IDisposable
{
    readonly Transformer _transformer;

    /// <summary>The weights on the backend, for the backward pass (<see cref="Backward.Gradient"/>).</summary>
    internal ModelWeights Weights => _transformer.Weights;
    /// <summary>Spare device buffers for backward passes and kept forward state, reused across calls.</summary>
    internal Forward.BufferPool Spare => _transformer.Spare;
    readonly bool _ownsBackend;
    ModelTokenizer? _tokenizer;

    Model(string folder, ModelSpec spec, IBackend backend, bool ownsBackend, ModelParams p)
    {
        Folder = folder;
        Spec = spec;
        Backend = backend;
        _ownsBackend = ownsBackend;
        _transformer = new Transformer(backend, spec, p);
    }

    public string Folder { get; }
    public ModelSpec Spec { get; }
    public IBackend Backend { get; }

    /// <summary>Loads a model folder (config.json + safetensors) or a hub id from the HF cache onto <paramref name="backend"/>
    /// (default: a CPU backend on all cores).</summary>
    public static Model Load(string model, IBackend? backend = null)
    {
        string folder = HfHub.ResolveModelFolder(model);
        var spec = ModelSpec.FromConfigFile(Path.Combine(folder, "config.json"));
        ModelParams p;
        using (var files = WeightFiles.Open(folder)) p = ModelParams.Load(files, spec);
        return new Model(folder, spec, backend ?? new CpuBackend(), backend is null, p);
    }

    public ModelTokenizer Tokenizer => _tokenizer ??= ModelTokenizer.ForModel(Folder, Spec);

    Tensor? _wE, _wU;

    /// <summary>W_E [d_vocab, d_model], the token embedding, read from the weight files on first use and kept (the
    /// backend's copy is packed for compute).</summary>
    public Tensor W_E => _wE ??= ReadWeights(files => new Tensor(ModelParams.LoadEmbed(files, Spec), Spec.DVocab, Spec.DModel));

    /// <summary>W_U [d_model, d_vocab], the unembedding in TransformerLens's orientation (logits = x·W_U; no bias in
    /// either family), read on first use and kept.</summary>
    public Tensor W_U => _wU ??= ReadWeights(files =>
    {
        var head = ModelParams.LoadHead(files, Spec);   // [d_vocab, d_model]
        int v = Spec.DVocab, d = Spec.DModel;
        var wU = new float[(long)d * v];
        for (int t = 0; t < v; t++)
            for (int i = 0; i < d; i++) wU[(long)i * v + t] = head[(long)t * d + i];
        return new Tensor(wU, d, v);
    });

    T ReadWeights<T>(Func<WeightFiles, T> read)
    {
        using var files = WeightFiles.Open(Folder);
        return read(files);
    }

    /// <summary>The token ids of <paramref name="text"/>, with the model's BOS first unless <paramref name="prependBos"/> is false
    /// (TransformerLens's <c>to_tokens</c> default).</summary>
    public int[] Encode(string text, bool prependBos = true)
    {
        if (string.IsNullOrEmpty(text)) throw new PolyEngineException("--prompt is empty; give at least one character of text");
        var ids = Tokenizer.Encode(text);
        return prependBos ? [BosTokenId, .. ids] : ids;
    }

    /// <summary>The model's BOS token id (config.json <c>bos_token_id</c>).</summary>
    public int BosTokenId => Spec.BosTokenId
        ?? throw new PolyEngineException($"{Path.Combine(Folder, "config.json")} has no bos_token_id, so no BOS can be prepended; " +
            "run without one (--bos off; Encode(text, prependBos: false); RunOptions.PrependBos = false) or add bos_token_id to the config");

    /// <summary>Runs rows of token ids, which may differ in length: they are right-padded into one batch (exact: attention
    /// is causal, so padding after a row's last token changes none of its positions); padded positions read zero, and the
    /// last-position logits and top-k are each row's last real token (<see cref="RunResult.Lengths"/>).</summary>
    public RunResult Run(IReadOnlyList<int[]> rows, RunOptions? options = null)
    {
        options ??= new RunOptions();
        if (rows.Count == 0) throw new PolyEngineException("no input rows: give at least one sequence of token ids");
        if (options.PrependBos)
        {
            int bos = BosTokenId;
            rows = rows.Select(r => (int[])[bos, .. r]).ToArray();
        }
        var lengths = rows.Select(r => r.Length).ToArray();
        int seq = lengths.Max();
        for (int r = 0; r < rows.Count; r++)
            if (rows[r].Length == 0) throw new PolyEngineException($"input row {r} is empty; give at least one token per row");
        var flat = new int[rows.Count * seq];   // right-padded with token 0
        for (int r = 0; r < rows.Count; r++) rows[r].CopyTo(flat, r * seq);
        bool ragged = lengths.Any(n => n != seq);
        var result = Run(flat, rows.Count, seq, options with { PrependBos = false }, ragged ? lengths : null);
        if (ragged) ZeroPadding(result);
        return result;
    }

    /// <summary>Runs <paramref name="ids"/> laid out [batch, seq].</summary>
    public RunResult Run(int[] ids, int batch, int seq, RunOptions? options = null)
    {
        if (options?.PrependBos == true)
        {
            if (ids.Length != (long)batch * seq) throw new ArgumentException($"ids has {ids.Length} entries, expected {batch}×{seq}");
            return Run(Enumerable.Range(0, batch).Select(r => ids.AsSpan(r * seq, seq).ToArray()).ToArray(), options);
        }
        return Run(ids, batch, seq, options ?? new RunOptions(), null);
    }

    RunResult Run(int[] ids, int batch, int seq, RunOptions options, int[]? lengths)
    {
        ValidateIds(ids, batch, seq);
        Check(options, batch, seq, from: null);
        lock (_transformer.Lock) return _transformer.Run(ids, batch, seq, options, lengths);   // one pass at a time: the workspace is reused
    }

    /// <summary>
    /// Continues a pass stopped at <see cref="ForwardState.At"/> (<see cref="RunOptions.StopAt"/>) to its end, with
    /// <paramref name="options"/> for the rest of the pass: edits at the stop hook or after it, hooks to record from it on,
    /// logits, or another stop further on. The state's rows are fanned out to <paramref name="copies"/> copies on the backend,
    /// copies-major (copy c is rows [c·batch, (c + 1)·batch) of the result), so one clean prefix feeds many edited rows; the
    /// result equals the full pass of those rows bit for bit on the CPU. The state is left as it was (resume it again).
    /// <code>
    /// using var clean = model.Run([ids], new RunOptions { StopAt = HookName.Parse("blocks.6.hook_resid_pre") }).State!;
    /// var steered = model.Resume(clean, new RunOptions { Edits = [new HookEdit(clean.At!.Value) { Add = perRowVectors }] }, copies: 1000);
    /// </code>
    /// With a <paramref name="prefix"/> the resume is windowed: for edits from position p = <see cref="KvPrefix.Positions"/>
    /// on, only positions [p, seq) run, attending to the prefix's clean K and V before p — the same values as the full
    /// pass at those positions, for a fraction of the work. The result then holds the window: its positions, hooks, logits,
    /// per-position edits and <see cref="HookEdit.From"/> are counted from p.
    /// </summary>
    public RunResult Resume(ForwardState state, RunOptions? options = null, int copies = 1, KvPrefix? prefix = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        options ??= new RunOptions();
        if (!ReferenceEquals(state.Owner, _transformer))
            throw new PolyEngineException("this forward state was made by another model; resume it with the model that stopped it");
        if (state.At is not { } at)
            throw new PolyEngineException("this forward state is of a pass that ran to its end, so there is nothing to resume; stop a pass with RunOptions.StopAt");
        if (copies < 1) throw new PolyEngineException($"copies must be at least 1, got {copies}");
        if (options.PrependBos) throw new PolyEngineException("PrependBos does not apply when resuming: the ids are those of the stopped pass");
        if (prefix is { Positions: 0 }) prefix = null;
        if (prefix is not null) CheckWindow(state, options, prefix);
        int window = state.Seq - (prefix?.Positions ?? 0);
        // The widest buffer per row: the block's, the logits', the pattern's (when read).
        bool pattern = options.KeepForBackward || options.Hooks.Concat(options.DeviceTaps.Select(t => t.Hook)).Any(h => h.Point == HookPoint.AttnPattern);
        long rows = (long)state.Batch * copies * window;
        long widest = Math.Max(Math.Max(3L * Spec.DModel, Spec.DMlp), Math.Max(options.Logits == LogitsMode.All ? Spec.DVocab : 0, pattern ? (long)Spec.NHeads * state.Seq : 0));
        if (prefix is not null) widest = Math.Max(widest, (long)Spec.DModel * state.Seq / window + 1);   // the keys of every position
        if (rows * widest > int.MaxValue)
            throw new PolyEngineException($"{copies} copies of {state.Batch}×{state.Seq} positions are too many rows for one pass; " +
                $"resume in chunks of at most {int.MaxValue / (widest * state.Batch * window)} copies");
        Check(options, state.Batch * copies, window, from: at);
        RunResult result;
        lock (_transformer.Lock)
        {
            if (state.Disposed) throw new PolyEngineException("this forward state was disposed; stop the pass again (RunOptions.StopAt) to resume it");
            result = _transformer.Resume(state, options, copies, prefix);
        }
        if (result.Lengths.Any(n => n != result.Seq)) ZeroPadding(result);
        return result;
    }

    /// <summary>One-line errors for a windowed resume (<see cref="KvPrefix"/>) that cannot be run.</summary>
    void CheckWindow(ForwardState state, RunOptions options, KvPrefix prefix)
    {
        int p = prefix.Positions, seq = state.Seq;
        var at = state.At!.Value;
        if (p < 0 || p >= seq) throw new PolyEngineException($"the window's first position {p} is outside 0..{seq - 1} of this {seq}-position state");
        int shortest = state.Lengths.Min();
        if (shortest <= p)
            throw new PolyEngineException($"row {Array.IndexOf(state.Lengths, shortest)} has {shortest} tokens, so a window from position {p} holds none of it; start the window at most at {shortest - 1}");
        if (at.Point is HookPoint.AttnQ or HookPoint.AttnK or HookPoint.AttnV or HookPoint.AttnRotQ or HookPoint.AttnRotK or HookPoint.AttnPattern)
            throw new PolyEngineException($"a windowed resume cannot start inside attention ('{at}'): stop at the layer's hook_resid_pre or after its hook_z");
        if (options.KeepForBackward) throw new PolyEngineException("KeepForBackward needs every position; resume without a window");
        if (options.Hooks.Concat(options.DeviceTaps.Select(t => t.Hook)).FirstOrDefault(h => h.Point == HookPoint.AttnPattern) is { IsBlock: true } pat)
            throw new PolyEngineException($"'{pat}' is not recorded in a windowed resume (its keys are not all in the window); resume without a window to read it");
        int first = KvPrefix.FirstLayer(at);
        int last = options.StopAtLayer ?? (options.StopAt is { IsBlock: true } stop ? stop.Layer : Spec.NLayers - 1);
        long need = (long)state.Batch * seq * Spec.DModel;
        for (int l = first; l <= last; l++)
            foreach (var (name, list) in new[] { ("K", prefix.K), ("V", prefix.V) })
            {
                var buf = l < list.Count ? list[l] : null;
                if (buf is null) throw new PolyEngineException($"the prefix has no {name} for layer {l}, which the resumed pass attends in; give the clean pass's [batch, seq, d_model] {name} of layers {first}..{last}");
                if (buf.Length < need) throw new PolyEngineException($"the prefix's {name} of layer {l} holds {buf.Length} floats; the state's rows need [batch {state.Batch}, seq {seq}, d_model {Spec.DModel}] = {need}");
            }
    }

    /// <summary>One-line errors for options that do not fit this model, the batch, or (when resuming) the resume point.</summary>
    void Check(RunOptions options, int batch, int seq, HookName? from)
    {
        if (options.StopAtLayer is int stop && (stop < 0 || stop >= Spec.NLayers))
            throw new PolyEngineException($"stop layer {stop} is outside 0..{Spec.NLayers - 1}");
        if (options.StopAt is not null && options.StopAtLayer is not null)
            throw new PolyEngineException("give a stop hook (StopAt) or a stop layer (StopAtLayer), not both");
        var valid = new HashSet<HookName>(HookName.AllFor(Spec));
        if (options.StopAt is { } stopAt)
        {
            if (!valid.Contains(stopAt)) throw new PolyEngineException($"stop hook '{stopAt}' does not exist in this {Spec.Architecture} model");
            if (from is { } f && stopAt.CompareTo(f) <= 0)
                throw new PolyEngineException($"stop hook '{stopAt}' does not lie after the resume point '{f}'; stop at a later hook");
        }
        if (from is { } start && options.StopAtLayer is int s0 && (start.IsBlock ? start.Layer > s0 : start.Point != HookPoint.Embed && start.Point != HookPoint.PosEmbed))
            throw new PolyEngineException($"stop layer {s0} lies before the resume point '{start}'; raise the stop layer or drop it");
        if (options.TopLogits < 0 || options.TopLogits > Spec.DVocab)
            throw new PolyEngineException($"top-k {options.TopLogits} is not between 0 and the vocabulary size d_vocab = {Spec.DVocab}");
        if ((options.TopLogits > 0 || options.LastLogits is not null) && (options.StopAtLayer is not null || options.StopAt is not null))
            throw new PolyEngineException("TopLogits and LastLogits need the LM head, which a stop skips");
        void CheckPlace(HookName h, bool changesIt)
        {
            if (!valid.Contains(h))
                throw new PolyEngineException($"hook '{h}' does not exist in this {Spec.Architecture} model");
            if (options.StopAtLayer is int s && (h.IsBlock ? h.Layer > s : h.Point is HookPoint.LnFinalScale or HookPoint.LnFinalNormalized))
                throw new PolyEngineException($"hook '{h}' lies after stop layer {s}; raise the stop layer or drop the hook");
            if (options.StopAt is { } at && (changesIt ? h.CompareTo(at) >= 0 : h.CompareTo(at) > 0))
                throw new PolyEngineException(changesIt && h == at
                    ? $"hook '{h}' is the stop hook: its edits and replacements belong to the pass that resumes there (Model.Resume)"
                    : $"hook '{h}' lies after the stop hook '{at}'; stop later or move it to the resumed pass");
            if (from is { } f && h.CompareTo(f) < 0)
                throw new PolyEngineException($"hook '{h}' lies before the resume point '{f}', which this pass starts from; record or edit it in the pass that stopped there");
        }
        foreach (var h in options.Hooks.Concat(options.DeviceTaps.Select(t => t.Hook))) CheckPlace(h, changesIt: false);
        foreach (var e in options.Edits) CheckPlace(e.Hook, changesIt: true);
        foreach (var e in options.Edits) e.Check(Spec, batch, seq);
        foreach (var rep in options.Replacements)
        {
            CheckPlace(rep.Hook, changesIt: true);
            HookEdit.CheckEditable(rep.Hook);
        }
    }

    /// <summary>Zeroes what a ragged batch computed at its padded positions (positions at or past each row's length).</summary>
    void ZeroPadding(RunResult result)
    {
        if (result.Logits is { } logits && logits.Shape[1] == result.Seq) result.ClearPadding(logits.Data);
        foreach (var name in result.Cache.Names)   // [batch, head, query, key] for patterns: the padded queries; else [batch, pos, ...]
            result.ClearPadding(result.Cache[name].Data, name.Point == HookPoint.AttnPattern ? Spec.NHeads : 1);
    }

    public void ValidateIds(int[] ids, int batch, int seq)
    {
        if (batch <= 0 || seq <= 0) throw new PolyEngineException("empty input: give at least one token");
        if (ids.Length != batch * seq) throw new ArgumentException($"ids has {ids.Length} entries, expected {batch}×{seq}");
        if (seq > Spec.NCtx)
            throw new PolyEngineException($"sequence of {seq} tokens is longer than the model's context n_ctx = {Spec.NCtx}; shorten the input");
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)Spec.DVocab)
                throw new PolyEngineException($"token id {ids[i]} (row {i / seq}, position {i % seq}) is outside the vocabulary 0..{Spec.DVocab - 1} of this model");
    }

    public void Dispose()
    {
        _transformer.Dispose();
        if (_ownsBackend) Backend.Dispose();
    }
}

using System.Diagnostics;
using System.Threading.Channels;
using PolyEngine.Interventions;

namespace PolyEngine.Serving;

/// <summary>One generated token: its id and log-probability, and the top candidates at its step (ids and
/// log-probabilities, most likely first; empty when none were asked for).</summary>
public sealed record GeneratedToken(int Id, float Logprob, int[] TopIds, float[] TopLogprobs);

/// <summary>What one prompt produced: its tokens, and why it stopped (<c>length</c>, or <c>stop</c> for the end-of-text
/// token or a stop string).</summary>
public sealed record Generation(int[] PromptIds, IReadOnlyList<GeneratedToken> Tokens, string FinishReason);

/// <summary>One prompt to complete (see <see cref="CompletionScheduler.Submit"/>).</summary>
public sealed record GenerationRequest(int[] PromptIds, int MaxTokens, int Logprobs, double Temperature, ulong Seed, IReadOnlyList<EditSpec> Edits,
    IReadOnlyList<string> Stop);

/// <summary>
/// Dynamic batching: prompts from concurrent requests wait at most <see cref="Window"/> to share a forward pass (up to
/// <see cref="MaxBatch"/> rows, right-padded, each read at its last real token), and sequences still generating go on
/// in the next pass beside newcomers (continuous batching). Each sequence's edits apply to its row only
/// (<see cref="BatchEdits"/>). One loop owns the model; a pass that fails fails only the sequences in it. Greedy
/// decoding takes the most likely token (ties to the lower id); with a temperature, a token is drawn from the
/// tempered softmax with the sequence's own seeded generator, so a request's result does not depend on its
/// neighbours. Each pass recomputes the whole prefix (no KV cache: simple and exact; fine for short completions).
/// </summary>
public sealed class CompletionScheduler : IAsyncDisposable
{
    sealed class Sequence(GenerationRequest request, CancellationToken cancel)
    {
        public readonly GenerationRequest Request = request;
        public readonly List<int> Ids = [.. request.PromptIds];
        public readonly List<GeneratedToken> Tokens = [];
        public readonly TaskCompletionSource<Generation> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly Rng Rng = new(request.Seed);
        public readonly CancellationToken Cancel = cancel;
    }

    readonly Model _model;
    readonly Channel<Sequence> _incoming = Channel.CreateUnbounded<Sequence>();
    readonly Task _loop;
    readonly CancellationTokenSource _stop = new();
    long _passes, _rows;

    public CompletionScheduler(Model model, int maxBatch = 64, TimeSpan? window = null)
    {
        if (maxBatch < 1) throw new PolyEngineException($"--max-batch {maxBatch}: give at least 1");
        _model = model;
        MaxBatch = maxBatch;
        Window = window ?? TimeSpan.FromMilliseconds(2);
        _loop = Task.Factory.StartNew(Loop, TaskCreationOptions.LongRunning).Unwrap();
    }

    public int MaxBatch { get; }
    public TimeSpan Window { get; }
    /// <summary>Forward passes run, and rows in them (rows / passes is the mean batch).</summary>
    public (long Passes, long Rows) Stats => (Interlocked.Read(ref _passes), Interlocked.Read(ref _rows));

    /// <summary>Queues a prompt; the task ends with its generation, or with the pass's error.</summary>
    public Task<Generation> Submit(GenerationRequest request, CancellationToken cancel = default)
    {
        var s = new Sequence(request, cancel);
        if (_stop.IsCancellationRequested || !_incoming.Writer.TryWrite(s)) throw new ObjectDisposedException(nameof(CompletionScheduler));
        return s.Done.Task;
    }

    async Task Loop()
    {
        var active = new List<Sequence>();
        var waiting = new Queue<Sequence>();
        var reader = _incoming.Reader;
        while (!_stop.IsCancellationRequested)
        {
            if (active.Count == 0 && waiting.Count == 0)
            {
                try { if (!await reader.WaitToReadAsync(_stop.Token)) break; }
                catch (OperationCanceledException) { break; }
                if (Window > TimeSpan.Zero) await Task.Delay(Window);   // let concurrent requests arrive
            }
            while (reader.TryRead(out var s)) waiting.Enqueue(s);
            while (active.Count < MaxBatch && waiting.Count > 0) active.Add(waiting.Dequeue());
            try
            {
                active.RemoveAll(s =>
                {
                    if (!s.Cancel.IsCancellationRequested) return false;
                    s.Done.TrySetCanceled(s.Cancel);
                    return true;
                });
                if (active.Count == 0) continue;
                Step(active);
                active.RemoveAll(Finished);
            }
            catch (Exception e)
            {
                // A failed pass fails only the sequences in it; the loop goes on serving the others.
                foreach (var s in active) s.Done.TrySetException(e);
                active.Clear();
            }
        }
        foreach (var s in active.Concat(waiting)) s.Done.TrySetCanceled();
        while (reader.TryRead(out var s)) s.Done.TrySetCanceled();
    }

    /// <summary>One forward pass over the active sequences: each gets its next token.</summary>
    void Step(List<Sequence> batch)
    {
        var spec = _model.Spec;
        int k = Math.Max(1, batch.Max(s => s.Request.Logprobs));
        bool sample = batch.Any(s => s.Request.Temperature > 0);
        var rows = batch.Select(s => s.Ids.ToArray()).ToList();
        var edits = batch.Any(s => s.Request.Edits.Count > 0)
            ? BatchEdits.Merge(spec, [.. batch.Select(s => s.Request.Edits)], [.. rows.Select(r => r.Length)])
            : [];
        var r = _model.Run(rows, new RunOptions { TopLogits = k, Logits = sample ? LogitsMode.LastPosition : LogitsMode.None, Edits = edits });
        Interlocked.Increment(ref _passes);
        Interlocked.Add(ref _rows, batch.Count);
        var top = r.Top!;
        for (int b = 0; b < batch.Count; b++)
        {
            var s = batch[b];
            float lse = top.LogSumExp[b];
            int id;
            float logprob;
            if (s.Request.Temperature > 0)
            {
                var logits = r.Logits!.Data.AsSpan(b * spec.DVocab, spec.DVocab);
                id = Draw(logits, s.Request.Temperature, s.Rng);
                logprob = logits[id] - lse;
            }
            else (id, logprob) = (top.Ids[b * top.K], top.Logits[b * top.K] - lse);
            int kk = s.Request.Logprobs;
            var topIds = new int[kk];
            var topLp = new float[kk];
            for (int j = 0; j < kk; j++) (topIds[j], topLp[j]) = (top.Ids[b * top.K + j], top.Logits[b * top.K + j] - lse);
            s.Tokens.Add(new GeneratedToken(id, logprob, topIds, topLp));
            s.Ids.Add(id);
        }
    }

    /// <summary>A draw from softmax(logits / temperature), in double.</summary>
    static int Draw(ReadOnlySpan<float> logits, double temperature, Rng rng)
    {
        double max = double.NegativeInfinity;
        foreach (var x in logits) max = Math.Max(max, x);
        double sum = 0;
        foreach (var x in logits) sum += Math.Exp((x - max) / temperature);
        double u = rng.NextDouble() * sum, acc = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            acc += Math.Exp((logits[i] - max) / temperature);
            if (acc >= u) return i;
        }
        return logits.Length - 1;
    }

    /// <summary>Completes the sequence when it is done: max_tokens reached, the end-of-text token, or a stop string.</summary>
    bool Finished(Sequence s)
    {
        string? reason = null;
        if (s.Tokens[^1].Id == _model.Spec.EosTokenId) reason = "stop";
        else if (s.Request.Stop.Count > 0 && s.Request.Stop.Any(_model.Tokenizer.Decode(s.Tokens.Select(t => t.Id).ToArray()).Contains)) reason = "stop";
        else if (s.Tokens.Count >= s.Request.MaxTokens) reason = "length";
        else if (s.Ids.Count >= _model.Spec.NCtx) reason = "length";
        if (reason is null) return false;
        s.Done.TrySetResult(new Generation(s.Request.PromptIds, s.Tokens, reason));
        return true;
    }

    /// <summary>Stops taking prompts and cancels those not finished (after the pass in flight).</summary>
    public async ValueTask DisposeAsync()
    {
        _incoming.Writer.TryComplete();
        _stop.Cancel();
        try { await _loop; } catch (OperationCanceledException) { }
        _stop.Dispose();
    }
}

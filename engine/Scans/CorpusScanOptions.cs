namespace PolyEngine.Scans;

/// <summary>The options every corpus scan takes (<see cref="FeatureScan"/>, <see cref="CoactivationScan"/>).</summary>
public record CorpusScanOptions
{
    /// <summary>A feature fires when its activation is strictly above this.</summary>
    public float Threshold { get; init; }
    /// <summary>Tokens per context window, BOS included (default: the first SAE's context_size, else 128).</summary>
    public int? ContextSize { get; init; }
    /// <summary>Context windows per forward pass.</summary>
    public int Batch { get; init; } = 8;
    /// <summary>Stop after this many corpus tokens (null: the whole corpus).</summary>
    public long? MaxTokens { get; init; }
    /// <summary>Whether each window starts with BOS: null follows the SAEs' <c>prepend_bos</c> (which must agree).</summary>
    public bool? PrependBos { get; init; }
}

/// <summary>Where a corpus scan stands, reported after every batch.</summary>
/// <param name="Tokens">Corpus tokens done, including those an earlier, resumed run did.</param>
/// <param name="Windows">Context windows done, likewise.</param>
/// <param name="Fraction">How much of the work is done (0..1): the corpus bytes read, or the tokens against --max-tokens.</param>
/// <param name="TokensThisRun">Tokens this run computed itself (a resumed run's speed counts only these).</param>
/// <param name="Seconds">Seconds this run has spent.</param>
/// <param name="FractionAtStart">Where this run started (a resumed run starts part-way).</param>
/// <param name="Skipping">True while a resumed run reads past the windows an earlier run scanned (no model runs yet).</param>
public readonly record struct ScanProgress(long Tokens, long Windows, double Fraction, long TokensThisRun, double Seconds, double FractionAtStart,
    bool Skipping = false)
{
    /// <summary>Tokens per second of this run's own work.</summary>
    public double TokensPerSecond => TokensThisRun / Math.Max(Seconds, 1e-9);

    /// <summary>Seconds left at this run's pace, or null before there is a pace to go by.</summary>
    public double? SecondsLeft => Fraction > FractionAtStart && Seconds > 0
        ? (1 - Fraction) * Seconds / (Fraction - FractionAtStart) : null;
}

namespace PolyEngine.Scans;

/// <summary>
/// The paper's five interference bins (docs/METHOD.md §2.2) and the fine histogram of the interference scan. A bin is
/// [lo, hi) except the last, [0.4, 1.0]; negative cosines fall in no bin. The comparisons are in float32, as the
/// authors' torch masks (<c>(D &gt;= lo) &amp; (D &lt; hi)</c> on a float32 D) make them.
/// </summary>
public static class InterferenceBins
{
    public const int Count = 5;

    /// <summary>The bin keys as the authors' files write them (<c>"{lo:.1f}-{hi:.1f}"</c>).</summary>
    public static readonly string[] Keys = ["0.0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-1.0"];
    public static readonly float[] Lo = [0f, 0.1f, 0.2f, 0.3f, 0.4f];
    public static readonly float[] Hi = [0.1f, 0.2f, 0.3f, 0.4f, 1f];

    /// <summary>The bin (0..4) of a cosine in [-1, 1], or −1 when it is negative.</summary>
    public static int Of(float cosine) =>
        cosine < 0f ? -1 : cosine < 0.1f ? 0 : cosine < 0.2f ? 1 : cosine < 0.3f ? 2 : cosine < 0.4f ? 3 : 4;

    /// <summary>Fine histogram: <see cref="FineCount"/> bins of width 0.001 over [-1, 1] (the last one closed).</summary>
    public const int FineCount = 2000;

    public static int FineOf(float cosine) => Math.Clamp((int)MathF.Floor((cosine + 1f) * 1000f), 0, FineCount - 1);

    public static double FineLo(int bin) => Math.Round(-1 + bin * 0.001, 3);

    public static double FineHi(int bin) => Math.Round(-1 + (bin + 1) * 0.001, 3);

    /// <summary>A cosine from float32 arithmetic, clamped to [-1, 1] (rounding can put a duplicate direction at 1 + 1e-7).</summary>
    public static float Clamp(float cosine) => cosine > 1f ? 1f : cosine < -1f ? -1f : cosine;
}

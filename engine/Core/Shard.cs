namespace PolyEngine;

/// <summary>One shard of a list of work units split n ways: unit k belongs to shard i when k ≡ i (mod n). Written and
/// parsed as <c>i/n</c> (<c>--shard</c>).</summary>
public readonly record struct Shard(int Index, int Count)
{
    /// <summary>The whole list (0/1).</summary>
    public static readonly Shard All = new(0, 1);

    /// <summary>Parses <c>i/n</c>; a one-line error for anything else or for i outside 0..n−1.</summary>
    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n))
            throw new PolyEngineException($"--shard {text}: give i/n, e.g. 0/4");
        return new Shard(i, n).Checked();
    }

    /// <summary>This shard, or a one-line error when it is not one (n ≥ 1, 0 ≤ i &lt; n).</summary>
    public Shard Checked() => Count >= 1 && Index >= 0 && Index < Count ? this
        : throw new PolyEngineException($"--shard {this}: give i/n with 0 ≤ i < n");

    /// <summary>The units of <paramref name="units"/> in this shard, in order.</summary>
    public IEnumerable<T> Of<T>(IEnumerable<T> units)
    {
        var (index, count) = Checked();
        return units.Where((_, k) => k % count == index);
    }

    public override string ToString() => $"{Index}/{Count}";
}

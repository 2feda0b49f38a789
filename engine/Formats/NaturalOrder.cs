namespace PolyEngine.Formats;

/// <summary>
/// Orders names as people read them: runs of digits compare as numbers, so <c>h.2</c> comes before <c>h.10</c>
/// (<c>blocks.2.attn</c>, <c>layers.10.mlp</c>); everything else compares ordinally.
/// </summary>
public sealed class NaturalOrder : IComparer<string>
{
    public static readonly NaturalOrder Comparer = new();

    public int Compare(string? x, string? y)
    {
        if (ReferenceEquals(x, y)) return 0;
        if (x is null) return -1;
        if (y is null) return 1;
        int i = 0, j = 0;
        while (i < x.Length && j < y.Length)
        {
            if (char.IsAsciiDigit(x[i]) && char.IsAsciiDigit(y[j]))
            {
                int si = i, sj = j;
                while (si < x.Length && x[si] == '0') si++;   // leading zeros do not change the number
                while (sj < y.Length && y[sj] == '0') sj++;
                int ei = si, ej = sj;
                while (ei < x.Length && char.IsAsciiDigit(x[ei])) ei++;
                while (ej < y.Length && char.IsAsciiDigit(y[ej])) ej++;
                int c = (ei - si).CompareTo(ej - sj);                                     // more digits: larger
                if (c == 0) c = string.CompareOrdinal(x, si, y, sj, ei - si);             // same length: digit by digit
                if (c == 0) c = (ei - i).CompareTo(ej - j);                               // 2 before 02
                if (c != 0) return c;
                i = ei; j = ej;
            }
            else
            {
                int c = x[i].CompareTo(y[j]);
                if (c != 0) return c;
                i++; j++;
            }
        }
        return (x.Length - i).CompareTo(y.Length - j);
    }
}

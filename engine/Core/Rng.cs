namespace PolyEngine;

/// <summary>
/// SplitMix64 with Box–Muller normals: a small, fast, seedable generator with a fixed algorithm, so the same seed gives the same numbers on
/// every machine and .NET version (System.Random's algorithm may change). Toy weights, toy data and the interference
/// scan's sampling draw from it.
/// </summary>
public sealed class Rng(ulong seed)
{
    ulong _state = seed;

    public ulong NextU64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 bits.</summary>
    public double NextDouble() => (NextU64() >> 11) * (1.0 / (1UL << 53));

    public float[] Normals(long[] shape, float std)
    {
        var a = new float[shape.Aggregate(1L, (x, y) => x * y)];
        for (long i = 0; i < a.LongLength; i += 2)
        {
            double u1 = 1.0 - NextDouble(), u2 = NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1)), th = 2 * Math.PI * u2;
            a[i] = (float)(r * Math.Cos(th) * std);
            if (i + 1 < a.LongLength) a[i + 1] = (float)(r * Math.Sin(th) * std);
        }
        return a;
    }

    public float[] Uniforms(int n, float lo, float hi)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * NextDouble());
        return a;
    }
}

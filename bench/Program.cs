using System.Diagnostics;
using BenchmarkDotNet.Running;
using PolyEngine.Kernels;
using PolyEngine.Kernels.Cpu;

namespace PolyEngine.Bench;

/// <summary>
/// <c>dotnet run -c Release --project bench -- [BenchmarkDotNet args]</c> runs the BenchmarkDotNet classes;
/// <c>-- gemm-quick [threads]</c> prints the best GFLOP/s over ~1 s per GPT-2-small GEMM shape (a quick look, not a report).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "gemm-quick")
        {
            int threads = args.Length > 1 ? int.Parse(args[1]) : Environment.ProcessorCount;
            foreach (var (m, k, n, what) in GemmShapes.Gpt2Small.Prepend((144, 256, 256, "in-cache")))
                Console.WriteLine($"{what,-10} M={m,5} K={k,5} N={n,6}: {QuickGemm(m, k, n, threads),6:F1} GFLOP/s ({threads} threads)");
            return 0;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }

    static double QuickGemm(int m, int k, int n, int threads)
    {
        var rng = new Random(1);
        var a = new float[m * k]; var w = new float[k * n]; var c = new float[m * n]; var bias = new float[n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
        for (int i = 0; i < w.Length; i++) w[i] = (float)rng.NextDouble() - 0.5f;
        // Twelve distinct weights used in turn, as the twelve layers of a forward pass: B is not left hot in L3.
        var weights = Enumerable.Range(0, n > 10000 ? 1 : 12).Select(_ => Gemm.Pack(w, k, n, WeightLayout.InOut)).ToArray();
        int turn = 0;
        var packed = weights[0];
        Gemm.Multiply(a, packed, bias, c, m, threads);
        // Shared vCPUs are noisy: repeat for ~1 s and report the best run (the kernel's capability, not the host's mood).
        double best = double.MaxValue;
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < 1.0)
        {
            packed = weights[turn++ % weights.Length];
            var sw = Stopwatch.StartNew();
            Gemm.Multiply(a, packed, bias, c, m, threads);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * m * k * n / best / 1e9;
    }
}

/// <summary>The GEMMs of one GPT-2-small forward at batch 8 × 128 tokens.</summary>
public static class GemmShapes
{
    public static readonly (int M, int K, int N, string What)[] Gpt2Small =
    [
        (1024, 768, 2304, "qkv"),
        (1024, 768, 768, "attn_out"),
        (1024, 768, 3072, "mlp_in"),
        (1024, 3072, 768, "mlp_out"),
        (1024, 768, 50257, "unembed"),
    ];
}

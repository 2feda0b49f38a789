namespace PolyEngine.Tests;

/// <summary>Paths of the committed test data (tests/fixtures, copied next to the test assembly).</summary>
static class Fixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "fixtures");
    public static string Golden(string model) => Path.Combine(Root, "hf-golden", model);
    public static string Samples => Path.Combine(Root, "safetensors-samples");
    public static string NeoXTokenizer => Path.Combine(Root, "gpt-neox-20b-tokenizer");

    /// <summary>A fresh temporary folder, removed when disposed.</summary>
    public sealed class TempDir : IDisposable
    {
        public TempDir() { Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "polyengine-test-" + Guid.NewGuid().ToString("N")[..12]); Directory.CreateDirectory(Path); }
        public string Path { get; }
        public string File(string name) => System.IO.Path.Combine(Path, name);
        public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
    }
}

static class Compare
{
    /// <summary>Asserts |actual − expected| ≤ atol everywhere; the message shows the first mismatches and the max difference.</summary>
    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double atol, string what, double rtol = 0)
    {
        Xunit.Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        double max = 0; int bad = 0; var first = new System.Text.StringBuilder();
        for (int i = 0; i < expected.Length; i++)
        {
            double diff = Math.Abs((double)actual[i] - expected[i]);
            if (double.IsNaN(diff) && !(float.IsNaN(actual[i]) && float.IsNaN(expected[i]))) diff = double.PositiveInfinity;
            if (double.IsNaN(diff)) continue;
            max = Math.Max(max, diff);
            if (diff > atol + rtol * Math.Abs(expected[i]) && bad++ < 5) first.Append($" [{i}] {actual[i]} vs {expected[i]};");
        }
        Xunit.Assert.True(bad == 0, $"{what}: {bad} of {expected.Length} values differ by more than {atol} (max {max:g3}):{first}");
    }
}

/// <summary>A 2-layer GPT-2 toy with the full 50257-token vocabulary, so real text tokenises into it (a class fixture:
/// written once per test class).</summary>
public sealed class FullVocabGpt2 : IDisposable
{
    readonly Fixtures.TempDir _dir = new();
    public FullVocabGpt2() => PolyEngine.Toys.ToyModels.Write(PolyEngine.Toys.ToyModels.Preset(PolyEngine.Models.ModelFamily.Gpt2, "tiny"), 3, _dir.Path);
    public string Path => _dir.Path;
    public void Dispose() => _dir.Dispose();
}

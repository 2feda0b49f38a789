using System.Text.RegularExpressions;
using Xunit;

namespace PolyEngine.Tests;

/// <summary>The repository stands alone: every document the README, the help texts and the code point to is in it.</summary>
public class RepositoryTests
{
    static string Root()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "PolyEngine.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("PolyEngine.sln not found above the test assembly");
    }

    static IEnumerable<string> Sources(string root) =>
        new[] { "README.md" }.Select(f => Path.Combine(root, f))
            .Concat(new[] { "engine", "kernels", "cli", "bench", "tests", "docs", ".ci" }.SelectMany(d =>
                Directory.EnumerateFiles(Path.Combine(root, d), "*", SearchOption.AllDirectories)))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")
                        && !f.Contains($"{Path.DirectorySeparatorChar}fixtures{Path.DirectorySeparatorChar}"))
            .Where(f => Path.GetExtension(f) is ".cs" or ".md" or ".sh" or ".py" or "" && !f.EndsWith("RepositoryTests.cs"));

    [Fact]
    public void EveryDocumentPointedToIsInTheRepository()
    {
        string root = Root();
        var names = Directory.EnumerateFiles(root, "*.md", SearchOption.AllDirectories).Select(Path.GetFileName).ToHashSet();
        var missing = new List<string>();
        foreach (var file in Sources(root))
        {
            string text = File.ReadAllText(file);
            foreach (Match m in Regex.Matches(text, @"(?<![\w/.-])(docs/[A-Z][A-Za-z]*\.md|[A-Z]{4,}\.md)"))
            {
                // docs/X.md must be exactly there; a bare NAME.md (a fixture's SOURCES.md) anywhere in the repository
                bool found = m.Value.StartsWith("docs/") ? File.Exists(Path.Combine(root, m.Value)) : names.Contains(m.Value);
                if (!found) missing.Add($"{Path.GetRelativePath(root, file)} cites {m.Value}");
            }
            if (text.Contains("../shared") || text.Contains("shared/docs")) missing.Add($"{Path.GetRelativePath(root, file)} points outside the repository");
        }
        Assert.True(missing.Count == 0, string.Join("\n", missing));
    }
}

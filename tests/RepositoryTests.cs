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
            .Concat(new[] { "engine", "kernels", "cli", "bench", "tests", "docs", ".ci", "deploy" }.SelectMany(d =>
                Directory.EnumerateFiles(Path.Combine(root, d), "*", SearchOption.AllDirectories)))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")
                        && !f.Contains($"{Path.DirectorySeparatorChar}fixtures{Path.DirectorySeparatorChar}"))
            .Where(f => Path.GetExtension(f) is ".cs" or ".md" or ".sh" or ".py" or "" && !f.EndsWith("RepositoryTests.cs"));

    /// <summary>The deploy scripts and manifests call polyengine with command lines that parse: every verb and option
    /// they use exists (they cannot run here — no Slurm, Kubernetes or Docker — but they cannot drift from the CLI).</summary>
    [Fact]
    public void TheDeployScriptsCommandLinesParse()
    {
        string root = Root();
        var commands = new List<(string File, string Line)>();
        foreach (var file in Directory.EnumerateFiles(Path.Combine(root, "deploy"), "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".md")))
        {
            string text = File.ReadAllText(file).Replace("\\\n", " ");   // shell line continuations
            foreach (Match m in Regex.Matches(text, @"(?<![\w/.-])polyengine\s+(features|coactivate|interference|steer|experiment|inject|merge|serve|report)\b[^\n]*"))
                commands.Add((Path.GetRelativePath(root, file), Regex.Replace(m.Value.Trim(), @"""\]?$", "")));   // a YAML command string's closing quote
        }
        Assert.True(commands.Count >= 4, $"expected the scan and merge commands of the Slurm and Kubernetes files, found {commands.Count}");
        foreach (var (file, line) in commands)
        {
            var args = Regex.Replace(line, @"\$\{?(\w+)\}?", "X").Replace("\"", "").Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray();
            var errors = PolyEngine.Cli.Program.ParseErrors(args);
            Assert.True(errors.Count == 0, $"{file}: `{line}` does not parse: {string.Join("; ", errors)}");
        }
        Assert.Contains("cli/PolyEngine.Cli.csproj", File.ReadAllText(Path.Combine(root, "deploy", "container", "Dockerfile")));
        Assert.True(File.Exists(Path.Combine(root, "cli", "PolyEngine.Cli.csproj")));
    }

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

using System.Text.RegularExpressions;
using Mono.Cecil;
using Mono.Cecil.Cil;
using Xunit;

namespace PolyEngine.Tests;

/// <summary>
/// The house as drawn (README "The house"): every type belongs to the folder its source file is in, and a folder imports
/// only from folders on its own floor or below — which also rules out any cycle between folders. References are read
/// from the compiled IL (signatures, base types, fields and every instruction of every method body), so nothing that
/// compiles can slip past. Projects: kernels imports nothing of ours, the engine only kernels.
/// </summary>
public class ArchitectureTests
{
    /// <summary>The engine's floors, lowest first: the data flows files → formats → models → … → outputs.</summary>
    static readonly string[][] EngineFloors =
    [
        ["Core"], ["Stats"], ["Formats"], ["Models"], ["Tokenization"], ["Hooks"], ["Sae"], ["Forward"], ["(root)"], ["Backward"], ["Scans"], ["Interventions"], ["Serving"], ["Experiments"], ["Output"], ["Toys"], ["Benchmarks"],
    ];

    /// <summary>The kernels' floors: the shared types and the backend interface, the scalar references, then the two backends,
    /// which never import each other.</summary>
    static readonly string[][] KernelFloors = [["(root)"], ["Reference"], ["Cpu", "Cuda"]];

    static string Root()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "PolyEngine.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("PolyEngine.sln not found above the test assembly");
    }

    /// <summary>Top-level type full name → the folder (below <paramref name="project"/>) of the file that declares it.</summary>
    static Dictionary<string, string> DeclaredFolders(string project)
    {
        var map = new Dictionary<string, string>();
        foreach (var file in Directory.EnumerateFiles(project, "*.cs", SearchOption.AllDirectories))
        {
            if (file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") || file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")) continue;
            string rel = Path.GetRelativePath(project, Path.GetDirectoryName(file)!);
            string folder = rel == "." ? "(root)" : rel.Split(Path.DirectorySeparatorChar)[0];
            string text = File.ReadAllText(file);
            string ns = Regex.Match(text, @"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline).Groups[1].Value;
            foreach (Match m in Regex.Matches(text, @"^(?:(?:public|internal|static|sealed|abstract|readonly|partial|unsafe|file|ref)\s+)*(?:record\s+struct|record\s+class|class|struct|record|interface|enum)\s+(\w+)(<[^>]*>)?",
                         RegexOptions.Multiline))
            {
                int arity = m.Groups[2].Success ? m.Groups[2].Value.Count(c => c == ',') + 1 : 0;
                map[$"{ns}.{m.Groups[1].Value}{(arity > 0 ? "`" + arity : "")}"] = folder;
            }
        }
        return map;
    }

    static string TopLevel(TypeReference t)
    {
        while (t.DeclaringType is not null) t = t.DeclaringType;
        return t.FullName;
    }

    /// <summary>Every type a type refers to, read from its definition and its method bodies.</summary>
    static IEnumerable<TypeReference> References(TypeDefinition type)
    {
        IEnumerable<TypeReference> Expand(TypeReference? t)
        {
            if (t is null) yield break;
            if (t is GenericInstanceType g)
                foreach (var a in g.GenericArguments.SelectMany(Expand)) yield return a;
            if (t is TypeSpecification spec) { foreach (var e in Expand(spec.ElementType)) yield return e; yield break; }
            yield return t;
        }
        foreach (var t in Expand(type.BaseType)) yield return t;
        foreach (var i in type.Interfaces) foreach (var t in Expand(i.InterfaceType)) yield return t;
        foreach (var f in type.Fields) foreach (var t in Expand(f.FieldType)) yield return t;
        foreach (var p in type.Properties) foreach (var t in Expand(p.PropertyType)) yield return t;
        foreach (var m in type.Methods)
        {
            foreach (var t in Expand(m.ReturnType)) yield return t;
            foreach (var p in m.Parameters) foreach (var t in Expand(p.ParameterType)) yield return t;
            if (!m.HasBody) continue;
            foreach (var v in m.Body.Variables) foreach (var t in Expand(v.VariableType)) yield return t;
            foreach (var ins in m.Body.Instructions)
                switch (ins.Operand)
                {
                    case TypeReference tr: foreach (var t in Expand(tr)) yield return t; break;
                    case MethodReference mr:
                        foreach (var t in Expand(mr.DeclaringType)) yield return t;
                        if (mr is GenericInstanceMethod gm) foreach (var t in gm.GenericArguments.SelectMany(Expand)) yield return t;
                        break;
                    case FieldReference fr: foreach (var t in Expand(fr.DeclaringType)) yield return t; break;
                }
        }
        foreach (var n in type.NestedTypes) foreach (var t in References(n)) yield return t;
    }

    /// <summary>Folder → the folders it imports from, with one example reference per pair.</summary>
    static Dictionary<(string From, string To), string> FolderImports(string assemblyPath, string project)
    {
        var folders = DeclaredFolders(project);
        using var module = ModuleDefinition.ReadModule(assemblyPath);
        var edges = new Dictionary<(string, string), string>();
        foreach (var type in module.Types)
        {
            if (!folders.TryGetValue(type.FullName, out var from)) continue;   // compiler-generated
            foreach (var r in References(type))
            {
                if (r.Scope?.Name != module.Name && r.Scope is not ModuleDefinition) continue;   // another assembly
                if (!folders.TryGetValue(TopLevel(r), out var to) || to == from) continue;
                edges.TryAdd((from, to), $"{type.FullName} → {TopLevel(r)}");
            }
        }
        return edges;
    }

    static void AssertFloors(string assembly, string project, string[][] floors)
    {
        int Floor(string folder) => Array.FindIndex(floors, f => f.Contains(folder));
        var edges = FolderImports(assembly, project);
        var problems = new List<string>();
        foreach (var ((from, to), example) in edges)
        {
            int a = Floor(from), b = Floor(to);
            if (a < 0 || b < 0) problems.Add($"folder {(a < 0 ? from : to)} is on no floor: add it to the house ({example})");
            else if (b > a) problems.Add($"{from} (floor {a}) imports {to} (floor {b}), a higher floor: {example}");
            else if (b == a) problems.Add($"{from} and {to} share a floor but {from} imports {to}: {example}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void EngineFoldersImportOnlyDownward() =>
        AssertFloors(typeof(Model).Assembly.Location, Path.Combine(Root(), "engine"), EngineFloors);

    [Fact]
    public void KernelFoldersImportOnlyDownward() =>
        AssertFloors(typeof(PolyEngine.Kernels.IBackend).Assembly.Location, Path.Combine(Root(), "kernels"), KernelFloors);

    [Fact]
    public void ProjectsImportOnlyDownward()
    {
        string[] Ours(Type t)
        {
            using var module = ModuleDefinition.ReadModule(t.Assembly.Location);
            return module.AssemblyReferences.Select(r => r.Name).Where(n => n.StartsWith("PolyEngine")).Order().ToArray();
        }
        Assert.Empty(Ours(typeof(PolyEngine.Kernels.IBackend)));
        Assert.Equal(["PolyEngine.Kernels"], Ours(typeof(Model)));
        Assert.DoesNotContain("PolyEngine.Cli", Ours(typeof(Model)));
    }

    /// <summary>The check itself finds what it should: a type's reference made only inside a method body.</summary>
    [Fact]
    public void TheCheckSeesReferencesInsideMethodBodies()
    {
        var edges = FolderImports(typeof(Model).Assembly.Location, Path.Combine(Root(), "engine"));
        Assert.Contains(("Scans", "(root)"), edges.Keys);   // SaeStream runs Model.Run
        Assert.Contains(("Toys", "Formats"), edges.Keys);   // toy models are written with SafeTensorsWriter
    }

    /// <summary>The engine never asks which backend it has, and neither does the CLI: no type test or cast to a concrete
    /// backend (CpuBackend, IlgpuBackend) anywhere in their IL. They may create one (Devices, Model.Load's default).</summary>
    [Fact]
    public void NoOneAsksWhichBackendItHas()
    {
        var casts = new List<string>();
        foreach (var assembly in new[] { typeof(Model).Assembly.Location, typeof(PolyEngine.Cli.Program).Assembly.Location })
        {
            using var module = ModuleDefinition.ReadModule(assembly);
            foreach (var type in module.GetTypes())
                foreach (var m in type.Methods.Where(m => m.HasBody))
                    foreach (var ins in m.Body.Instructions)
                        if ((ins.OpCode == OpCodes.Isinst || ins.OpCode == OpCodes.Castclass || ins.OpCode == OpCodes.Unbox_Any)
                            && ins.Operand is TypeReference t && t.Namespace is "PolyEngine.Kernels.Cpu" or "PolyEngine.Kernels.Cuda")
                            casts.Add($"{type.FullName}.{m.Name} tests for {t.FullName}");
        }
        Assert.True(casts.Count == 0, string.Join("\n", casts));
    }
}

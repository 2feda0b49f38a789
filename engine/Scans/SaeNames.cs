namespace PolyEngine.Scans;

/// <summary>
/// How scans name SAEs in their tables, checkpoints and manifests: each folder's own name (e.g.
/// <c>blocks.8.hook_resid_pre</c>), made unique with <c>#index</c> when two folders share one. One place, so every scan
/// and writer names an SAE alike.
/// </summary>
public static class SaeNames
{
    /// <summary>The names of the SAEs' folders, in order.</summary>
    public static List<string> Of(IReadOnlyList<SparseAutoencoder> saes) => Of(saes.Select(s => s.Config.Folder));

    /// <summary>The names of <paramref name="folders"/>, in order.</summary>
    public static List<string> Of(IEnumerable<string> folders)
    {
        var names = new List<string>();
        foreach (var folder in folders)
        {
            string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder)));
            names.Add(names.Contains(name) ? $"{name}#{names.Count}" : name);
        }
        return names;
    }
}

namespace PolyEngine.Formats;

/// <summary>
/// Files as the HuggingFace hub cache keeps them: a snapshot's files are relative symbolic links into <c>blobs/</c>.
/// Opening a link follows it, but .NET's <see cref="FileInfo.Length"/> and write time describe the link itself (a few
/// bytes), so everything that measures a file goes through here and measures the file the link finally points to.
/// </summary>
public static class FileLinks
{
    /// <summary>The path of the file <paramref name="path"/> finally points to (itself when it is no link); a dangling link
    /// is a one-line error naming the link and its target.</summary>
    public static string Resolve(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return path;
        FileSystemInfo? target;
        try { target = info.ResolveLinkTarget(returnFinalTarget: true); }
        catch (IOException e) { throw new PolyEngineException($"{path}: cannot follow the symbolic link ({e.Message})"); }
        if (target is null || !target.Exists)
            throw new PolyEngineException($"{path}: symbolic link to '{info.LinkTarget}', which does not exist (an incomplete download? fetch the file again)");
        return target.FullName;
    }

    /// <summary>The length in bytes of the file behind <paramref name="path"/>.</summary>
    public static long Length(string path) => new FileInfo(Resolve(path)).Length;

    /// <summary>The text of the file behind <paramref name="path"/> (a dangling link is a one-line error saying so).</summary>
    public static string ReadAllText(string path) => File.ReadAllText(Resolve(path));

    /// <summary>The file behind <paramref name="path"/>, open for reading.</summary>
    public static FileStream OpenRead(string path) => File.OpenRead(Resolve(path));

    /// <summary>The last write time (UTC) of the file behind <paramref name="path"/>.</summary>
    public static DateTime LastWriteUtc(string path) => File.GetLastWriteTimeUtc(Resolve(path));
}

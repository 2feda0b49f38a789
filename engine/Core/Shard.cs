namespace PolyEngine;

/// <summary>One shard of a list of work units split n ways: unit k belongs to shard i when k ≡ i (mod n). Written and
/// parsed as <c>i/n</c> (<c>--shard</c>), or taken from the scheduler: <c>slurm</c> reads a Slurm job array's
/// <c>SLURM_ARRAY_TASK_ID</c> and <c>SLURM_ARRAY_TASK_COUNT</c> (less <c>SLURM_ARRAY_TASK_MIN</c>, so arrays may start at 1),
/// and <c>k8s/n</c> a Kubernetes Indexed Job's <c>JOB_COMPLETION_INDEX</c> with n its completions — so one command line
/// serves every task of the array.</summary>
public readonly record struct Shard(int Index, int Count)
{
    /// <summary>The whole list (0/1).</summary>
    public static readonly Shard All = new(0, 1);

    /// <summary>Parses <c>i/n</c>, <c>slurm</c> or <c>k8s/n</c> (the scheduler's variables read through
    /// <paramref name="env"/>, the process environment by default); a one-line error for anything else or for i outside
    /// 0..n−1.</summary>
    public static Shard Parse(string text, Func<string, string?>? env = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        int Var(string name, string what) => env(name) is { } v && int.TryParse(v, out int x) ? x
            : throw new PolyEngineException($"--shard {text}: {name} is {(env(name) is null ? "not set" : $"'{env(name)}', not an integer")}; {what}");
        if (text == "slurm")
        {
            const string run = "run this as a task of a Slurm job array (sbatch --array=0-N), or give --shard i/n";
            int min = env("SLURM_ARRAY_TASK_MIN") is null ? 0 : Var("SLURM_ARRAY_TASK_MIN", run);
            return Checked(new Shard(Var("SLURM_ARRAY_TASK_ID", run) - min, Var("SLURM_ARRAY_TASK_COUNT", run)), text);
        }
        if (text.StartsWith("k8s/", StringComparison.Ordinal))
        {
            if (!int.TryParse(text.AsSpan(4), out int count)) throw new PolyEngineException($"--shard {text}: give k8s/n with n the Indexed Job's completions, e.g. k8s/8");
            return Checked(new Shard(Var("JOB_COMPLETION_INDEX", "run this in a Kubernetes Indexed Job (completionMode: Indexed), or give --shard i/n"), count), text);
        }
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n))
            throw new PolyEngineException($"--shard {text}: give i/n (e.g. 0/4), slurm, or k8s/n");
        return new Shard(i, n).Checked();
    }

    static Shard Checked(Shard s, string text) => s.Count >= 1 && s.Index >= 0 && s.Index < s.Count ? s
        : throw new PolyEngineException($"--shard {text}: the scheduler says shard {s.Index} of {s.Count}, which is not one (0 ≤ i < n); check the array's range");

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

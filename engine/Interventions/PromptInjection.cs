using System.Text;
using PolyEngine.Stats;

namespace PolyEngine.Interventions;

/// <summary>What a token-type prompt injection runs (see <see cref="PromptInjection"/>).</summary>
public sealed record InjectionPlan
{
    /// <summary>The target types, in run order.</summary>
    public required IReadOnlyList<string> Types { get; init; }
    /// <summary>Token id → type (the target ids of a type are the ids of that type); empty when the trials run on a model
    /// known only by its strings (<see cref="TypeOfString"/>).</summary>
    public required IReadOnlyDictionary<int, string> TypeOfId { get; init; }
    /// <summary>Decoded token string → type, for trials whose next tokens come back as strings (an endpoint without its
    /// tokenizer at hand); null otherwise.</summary>
    public IReadOnlyDictionary<string, string>? TypeOfString { get; init; }
    /// <summary>Type → category → token strings.</summary>
    public required IReadOnlyDictionary<string, Dictionary<InjectionCategory, string[]>> TokenSets { get; init; }
    /// <summary>Type → sentences; the first <see cref="MaxSentences"/> of each run.</summary>
    public required IReadOnlyDictionary<string, string[]> Sentences { get; init; }
    public int Trials { get; init; } = 100;
    public int Tokens { get; init; } = 30;
    public int Top { get; init; } = 30;
    public int MaxSentences { get; init; } = 100;
    public bool PrependBos { get; init; } = true;
    public ulong Seed { get; init; } = 43;
    /// <summary>The shard of the (type, sentence) units this run takes (all by default).</summary>
    public Shard Shard { get; init; } = Shard.All;

    /// <summary>One (type, sentence) of the run: every trial of every category for that sentence. Types without
    /// sentences have none (<see cref="Skipped"/> says so).</summary>
    public IReadOnlyList<(string Type, int Sentence)> Units() =>
        [.. Shard.Of(Types.SelectMany(t => Enumerable.Range(0, Math.Min(MaxSentences, Sentences.GetValueOrDefault(t)?.Length ?? 0)).Select(s => (t, s))))];

    /// <summary>The types that run no trial, and why (stated in the manifest).</summary>
    public IReadOnlyList<string> Skipped() =>
        [.. Types.Where(t => (Sentences.GetValueOrDefault(t)?.Length ?? 0) == 0).Select(t => $"{t}: no sentences")];

    public void Validate()
    {
        if (Trials < 1 || Tokens < 1 || Top < 1 || MaxSentences < 1)
            throw new PolyEngineException($"--trials, --tokens, --top and --max-sentences must be positive, got {Trials}, {Tokens}, {Top} and {MaxSentences}");
        if (Types.Count == 0) throw new PolyEngineException("no types to inject; give --types or a --token-sets file with types");
        Shard.Checked();
        foreach (var t in Types)
        {
            if (!TokenSets.TryGetValue(t, out var sets)) throw new PolyEngineException($"type '{t}' has no token sets in --token-sets (it has {string.Join(", ", TokenSets.Keys)})");
            if (!TypeOfId.Values.Contains(t) && TypeOfString?.Values.Contains(t) != true) throw new PolyEngineException($"type '{t}' has no tokens in --type-map, so no target id can rise; check the type's spelling");
            foreach (var (c, list) in sets)
                if (list.Length == 0) throw new PolyEngineException($"the {InjectionInputs.Name(c)} token set of type '{t}' is empty; nothing can be injected from it");
        }
        // The whole run's units: a shard may hold none (more shards than units) and still finish, with empty tables.
        if ((this with { Shard = Shard.All }).Units().Count == 0) throw new PolyEngineException($"no sentences for any of the types {string.Join(", ", Types)} in --sentences");
    }
}

/// <summary>One trial: the ids that ran (injected and plain), and the target-type ids' count and probability mass in
/// each's top-k next tokens.</summary>
public sealed record InjectionTrial(string Type, InjectionCategory Category, int Sentence, int Trial, int[] PromptIds, int[] BaseIds,
    int CountBase, int CountInjected, double MassBase, double MassInjected)
{
    public bool CountIncrease => CountInjected > CountBase;
    public bool ProbIncrease => MassInjected > MassBase;
}

/// <summary>Per type and category: the trials, the success rates, and Welch's t of the per-trial outcomes against the
/// random category (count and prob), two-sided.</summary>
public sealed record InjectionSummary(string Type, InjectionCategory Category, int Trials, double CountRate, double ProbRate, WelchTest Count, WelchTest Prob);

/// <summary>
/// The token-type prompt injection (the paper's Table 1 / Table 5), as the authors' small-model notebook runs it: per
/// type, sentence and category, each trial samples <c>Tokens</c> token strings of the category's set (without replacement;
/// with replacement when the set is smaller), runs <c>"(" + "".join(tokens) + ")" + sentence</c> and the plain sentence,
/// and compares the target-type ids among the top-<c>Top</c> next tokens at the last position: more of them
/// (count_increase), more probability mass on them (prob_increase). Each trial draws from its own seed (seed, type,
/// sentence, category, trial), so any trial reruns alone and the run is the same in any order or shard. The prompts run
/// on an <see cref="ITrialModel"/>: the engine's model in batches, or a served model through its endpoint.
/// </summary>
public static class PromptInjection
{
    /// <summary>The token strings of one trial.</summary>
    public static string[] Sample(InjectionPlan plan, string type, int sentence, InjectionCategory category, int trial)
    {
        var set = plan.TokenSets[type][category];
        var rng = new Rng(TrialSeed(plan.Seed, type, sentence, category, trial));
        int k = plan.Tokens, n = set.Length;
        var picked = new string[k];
        if (n < k)
        {
            for (int i = 0; i < k; i++) picked[i] = set[(int)(rng.NextU64() % (ulong)n)];
            return picked;
        }
        var seen = new HashSet<int>();
        for (int i = 0; i < k; i++)
        {
            int j;
            do j = (int)(rng.NextU64() % (ulong)n); while (!seen.Add(j));
            picked[i] = set[j];
        }
        return picked;
    }

    /// <summary>A trial's seed: FNV-1a of its coordinates, mixed with the run's seed.</summary>
    static ulong TrialSeed(ulong seed, string type, int sentence, InjectionCategory category, int trial)
    {
        ulong h = 14695981039346656037UL ^ seed;
        foreach (byte b in Encoding.UTF8.GetBytes($"{type}\u0001{sentence}\u0001{(int)category}\u0001{trial}")) h = (h ^ b) * 1099511628211UL;
        return h;
    }

    public static string Prompt(IEnumerable<string> tokens, string sentence) => "(" + string.Concat(tokens) + ")" + sentence;

    /// <summary>Runs units [<paramref name="firstUnit"/>, end) of the plan, handing each unit's trials to
    /// <paramref name="unitDone"/> (with the number of units done) as it finishes.</summary>
    public static void Run(ITrialModel model, InjectionPlan plan, Action<int, IReadOnlyList<InjectionTrial>> unitDone, int firstUnit = 0, CancellationToken cancel = default)
    {
        plan.Validate();
        var units = plan.Units();
        var targetIds = plan.Types.ToDictionary(t => t, t => plan.TypeOfId.Where(x => x.Value == t).Select(x => x.Key).ToHashSet());
        var targetStrings = plan.Types.ToDictionary(t => t, t => plan.TypeOfString?.Where(x => x.Value == t).Select(x => x.Key).ToHashSet() ?? []);
        for (int u = firstUnit; u < units.Count; u++)
        {
            cancel.ThrowIfCancellationRequested();
            var (type, s) = units[u];
            string sentence = plan.Sentences[type][s];
            var prompts = new List<TrialPrompt> { new(sentence, model.Encode(sentence, plan.PrependBos)) };
            var cases = new List<(InjectionCategory Category, int Trial)>();
            foreach (var c in Enum.GetValues<InjectionCategory>())
                for (int t = 0; t < plan.Trials; t++)
                {
                    cases.Add((c, t));
                    string text = Prompt(Sample(plan, type, s, c, t), sentence);
                    prompts.Add(new(text, model.Encode(text, plan.PrependBos)));
                }
            var scores = Score(model.Top(prompts, plan.Top, cancel), targetIds[type], targetStrings[type]);
            var (countBase, massBase) = scores[0];
            int[] baseIds = prompts[0].Ids ?? [];
            var trials = cases.Select((x, i) => new InjectionTrial(type, x.Category, s, x.Trial, prompts[i + 1].Ids ?? [], baseIds, countBase, scores[i + 1].Count,
                massBase, scores[i + 1].Mass)).ToList();
            unitDone(u + 1, trials);
        }
    }

    /// <summary>Per prompt: how many of its top-k next tokens are targets (by id, or by string when only the string is
    /// known), and their probability mass.</summary>
    static (int Count, double Mass)[] Score(IReadOnlyList<NextToken[]> top, HashSet<int> ids, HashSet<string> strings) =>
        [.. top.Select(row =>
        {
            int count = 0;
            double mass = 0;
            foreach (var t in row)
                if (t.Id >= 0 ? ids.Contains(t.Id) : t.Text is not null && strings.Contains(t.Text)) { count++; mass += t.Probability; }
            return (count, mass);
        })];

    /// <summary>The summary table: per type and category, rates and Welch's t against the type's random category.</summary>
    public static IReadOnlyList<InjectionSummary> Summarize(IReadOnlyList<InjectionTrial> trials)
    {
        var result = new List<InjectionSummary>();
        foreach (var type in trials.Select(t => t.Type).Distinct())
        {
            var byCat = trials.Where(t => t.Type == type).GroupBy(t => t.Category).ToDictionary(g => g.Key, g => g.ToList());
            var random = byCat.GetValueOrDefault(InjectionCategory.Random) ?? [];
            double[] Count(List<InjectionTrial> l) => [.. l.Select(t => t.CountIncrease ? 1.0 : 0.0)];
            double[] Prob(List<InjectionTrial> l) => [.. l.Select(t => t.ProbIncrease ? 1.0 : 0.0)];
            foreach (var c in Enum.GetValues<InjectionCategory>())
            {
                if (!byCat.TryGetValue(c, out var list)) continue;
                result.Add(new InjectionSummary(type, c, list.Count, Count(list).Average(), Prob(list).Average(),
                    WelchTest.Of(Count(list), Count(random)), WelchTest.Of(Prob(list), Prob(random))));
            }
        }
        return result;
    }
}

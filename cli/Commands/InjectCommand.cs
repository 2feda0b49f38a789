using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Tokenization;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine inject</c>: the prompt locus, token-type injection (the paper's Table 1 / Table 5).</summary>
static class InjectCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model(required: false);
        var endpoint = new Option<string?>("--endpoint") { Description = "Run the trials on a served model: an OpenAI-compatible server's address (vLLM, llama.cpp, polyengine serve), e.g. http://127.0.0.1:8000" };
        var servedModel = new Option<string?>("--served-model") { Description = "With --endpoint: the model name the server serves (GET /v1/models lists it)" };
        var apiKeyEnv = new Option<string?>("--api-key-env") { Description = "With --endpoint: environment variable holding the server's API key" };
        var concurrency = new Option<int>("--concurrency") { Description = "With --endpoint: requests in flight at once", DefaultValueFactory = _ => 64 };
        var timeout = new Option<double>("--timeout") { Description = "With --endpoint: seconds one attempt may take (a queued large model can take minutes)", DefaultValueFactory = _ => 600 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "With --endpoint: a folder with the served model's tokenizer.json (byte-level BPE as GPT-2's), to send token ids without its weights" };
        var retries = new Option<int>("--retries") { Description = "With --endpoint: retries of a 408, 429, 5xx or dropped connection (exponential backoff, Retry-After honoured)", DefaultValueFactory = _ => 8 };
        var typeMap = new Option<string>("--type-map") { Description = "Token types: {\"<token id>\": \"<type>\"}, or {\"<decoded string>\": \"<type>\"}", Required = true };
        var tokenSets = new Option<string>("--token-sets")
        {
            Description = "Union token sets: {\"<type>\": {\"target\"|\"high_interference\"|\"medium_interference\"|\"random\": [strings]}}; without it they are built from --sae, --explanations and --records",
        };
        var saes = new Option<string?>("--sae") { Description = "Building the sets: comma-separated SAE folders (their decoders give the interference)" };
        var explanations = new Option<string?>("--explanations") { Description = "Building the sets: each SAE's explanations with embeddings, comma-separated in --sae's order (the similarity)" };
        var records = new Option<string?>("--records") { Description = "Building the sets: a features run's contexts.parquet over those SAEs (named by their folders)" };
        var setHigh = new Option<double>("--set-high") { Description = "Building the sets: max interference at or above this is high, below it medium (0.5; the GPT-2 notebook used 0.3)", DefaultValueFactory = _ => 0.5 };
        var setInterference = new Option<double>("--set-interference") { Description = "Building the sets: a pair interferes above this decoder cosine", DefaultValueFactory = _ => 0.2 };
        var setSimilarity = new Option<double>("--set-similarity") { Description = "Building the sets: … and below this explanation similarity", DefaultValueFactory = _ => 0.3 };
        var sentences = new Option<string>("--sentences") { Description = "Type sentences: {\"<type>\": [\"sentence\", ...]} (the first --max-sentences of each run)", Required = true };
        var types = new Option<string?>("--types") { Description = "Comma-separated types to run (default: every type of --token-sets)" };
        var trials = new Option<int>("--trials") { Description = "Trials per sentence and category", DefaultValueFactory = _ => 100 };
        var tokens = new Option<int>("--tokens") { Description = "Token strings injected per trial", DefaultValueFactory = _ => 30 };
        var top = new Option<int>("--top") { Description = "Next-token candidates compared (top-k at the last position)", DefaultValueFactory = _ => 30 };
        var maxSentences = new Option<int>("--max-sentences") { Description = "Sentences per type (file order)", DefaultValueFactory = _ => 100 };
        var bos = Common.Bos("on: as the authors' small-model notebook (TransformerLens to_tokens prepends BOS)");
        var seed = new Option<ulong>("--seed") { Description = "Seed; each trial draws from (seed, type, sentence, category, trial)", DefaultValueFactory = _ => 43 };
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): trials and summary tables, manifest.json. Resumable: rerun with the same --out to continue", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var shard = new Option<string>("--shard") { Description = "Run shard i of n of the (type, sentence) units (unit k runs in shard k mod n): i/n, slurm (a job array task) or k8s/n (an Indexed Job index); polyengine merge combines the shards", DefaultValueFactory = _ => "0/1" };
        var checkpointEvery = Common.CheckpointEvery();
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("inject", Common.WithExamples(
            "Token-type prompt injection (the prompt locus): per type, sentence and category (target, high, medium, random), --trials trials that " +
            "prepend \"(\" + --tokens sampled token strings + \")\" to the sentence and count the type's ids among the top --top next tokens against " +
            "the plain sentence; success rates and Welch's t against random per type and category. With --endpoint the same trials run on a served " +
            "model through /v1/completions (max_tokens 1, logprobs --top): with --model or --tokenizer (the served model's tokenizer) as token ids, " +
            "exactly the ids the engine runs; without them as text, the types matched on decoded strings. Every answer goes to requests.jsonl in --out as it arrives, " +
            "so a killed run resumes without asking again.",
            "polyengine inject --model gpt2 --type-map gpt2_token_id_to_type.json --token-sets union_location.json --sentences type_sentences.json --types location --out inject/",
            "polyengine inject --model ./toy --type-map types.json --token-sets sets.json --sentences s.json --trials 10 --max-sentences 5 --format csv --out inj/",
            "polyengine inject --endpoint http://127.0.0.1:8000 --served-model meta-llama/Llama-3.1-8B-Instruct --type-map llama_string_to_type.json --token-sets inj/token_sets.json --sentences s.json --out llama/",
            "polyengine inject --endpoint http://127.0.0.1:8000 --served-model gpt2 --model gpt2 --type-map types.json --token-sets sets.json --sentences s.json --out served/"))
        { model, endpoint, servedModel, tokenizer, apiKeyEnv, concurrency, timeout, retries, typeMap, tokenSets, saes, explanations, records, setHigh, setInterference, setSimilarity, sentences, types, trials, tokens, top, maxSentences, bos, seed, format, output, overwrite, shard, checkpointEvery, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            var every = Common.Interval(r.GetValue(checkpointEvery));
            bool build = r.GetValue(tokenSets) is null;
            if (build && (r.GetValue(saes) is null || r.GetValue(explanations) is null || r.GetValue(records) is null || r.GetValue(types) is null))
                throw new PolyEngineException("give --token-sets, or build the sets from your own outputs with --types, --sae, --explanations and --records");
            var setOptions = new TokenSetOptions { High = r.GetValue(setHigh), InterferenceMin = r.GetValue(setInterference), SimilarityMax = r.GetValue(setSimilarity) };
            if (build) setOptions.Validate();
            var given = build ? null : InjectionInputs.TokenSets(r.GetValue(tokenSets)!);
            var sents = InjectionInputs.Sentences(r.GetValue(sentences)!);
            var typeList = r.GetValue(types) is string t ? t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : given!.Keys.ToArray();
            var part = Shard.Parse(r.GetValue(shard)!);
            using var folder = Common.OpenScanOutput(io, outDir);
            using var target = r.GetValue(endpoint) is { } url
                ? InjectTarget.Endpoint(InjectTarget.Options(url, r.GetValue(servedModel), r.GetValue(apiKeyEnv), r.GetValue(concurrency), r.GetValue(timeout), r.GetValue(retries)),
                    r.GetValue(model), r.GetValue(tokenizer), r.GetValue(threads))
                : InjectTarget.Engine(r.GetValue(model) ?? throw new PolyEngineException("give --model (the model to run), or --endpoint and --served-model for a served one"),
                    r.GetValue(device)!, r.GetValue(threads));
            if (r.GetValue(tokenizer) is not null && target.Client is null) throw new PolyEngineException("--tokenizer goes with --endpoint; an in-engine run uses --model's own tokenizer");
            var m = target.Model;
            var tok = target.Tokenizer;
            io.Out.WriteLine(target.Client is not null ? $"endpoint: {target.Description}" : $"model: {m!.Folder}\ndevice: {target.Device}");
            bool prependBos = Bos.Parse(r.GetValue(bos)) ?? tok?.BosId is not null;
            if (prependBos && tok is null) throw new PolyEngineException("--bos on needs the served model's tokenizer (--model or --tokenizer): text prompts get what the server's tokenizer adds");
            if (prependBos && tok!.BosId is null) throw new PolyEngineException($"--bos on: the tokenizer of {tok.Folder} names no BOS token; pass --bos off");
            if (build && (m is null || target.Client is not null))
                throw new PolyEngineException("building token sets needs the small model in the engine; build them with an in-engine inject run and give its token_sets.json as --token-sets");
            var typeOfId = tok is null ? new Dictionary<int, string>() : InjectionInputs.TypeMap(r.GetValue(typeMap)!, tok.DVocab, tok.Decode);
            var typeOfString = tok is null ? InjectionInputs.TypeMapStrings(r.GetValue(typeMap)!) : null;
            var setCounts = new Dictionary<string, int>();
            var sets = given ?? BuildSets(io, m!, typeList, typeOfId, r.GetValue(saes)!, r.GetValue(explanations)!, r.GetValue(records)!, setOptions, setCounts);
            var plan = new InjectionPlan
            {
                Types = typeList, TypeOfId = typeOfId, TypeOfString = typeOfString, TokenSets = sets, Sentences = sents,
                Trials = r.GetValue(trials), Tokens = r.GetValue(tokens), Top = r.GetValue(top), MaxSentences = r.GetValue(maxSentences),
                PrependBos = prependBos, Seed = r.GetValue(seed), Shard = part,
            };
            plan.Validate();
            if (tok is not null && plan.Top > tok.DVocab) throw new PolyEngineException($"--top {plan.Top} is more than the model's {tok.DVocab} tokens");
            io.Out.WriteLine(tok is null ? "bos: as the server's tokenizer adds it (prompts go as text)"
                : prependBos ? $"bos: prepended, token {tok.BosId} (as the authors' small-model notebook)" : "bos: none (--bos off)");
            foreach (var s in plan.Skipped()) io.Out.WriteLine($"skipped: {s}");
            var options = new JsonObject
            {
                ["types"] = new JsonArray(typeList.Select(x => (JsonNode)x).ToArray()), ["trials"] = plan.Trials, ["tokens"] = plan.Tokens, ["top"] = plan.Top,
                ["max_sentences"] = plan.MaxSentences, ["prepend_bos"] = prependBos, ["seed"] = plan.Seed, ["format"] = fmt.ToString().ToLowerInvariant(),
                ["shard"] = part.ToString(),
                ["statistic"] = "Welch's t (unequal variances), two-sided, of per-trial count_increase / prob_increase against the random category",
            };
            var keyInputs = new JsonObject();
            if (m is not null) RunKey.AddModel(keyInputs, m);
            else if (tok is not null) RunKey.AddFile(keyInputs, "tokenizer", Path.Combine(tok.Folder, "tokenizer.json"));
            if (target.Client is not null) keyInputs["endpoint"] = target.Description;   // the server and the model it serves
            RunKey.AddFile(keyInputs, "type_map", r.GetValue(typeMap));
            if (!build) RunKey.AddFile(keyInputs, "token_sets", r.GetValue(tokenSets));
            else
            {
                keyInputs["token_sets_built"] = TokenSetsJson(sets).ToJsonString();   // what the built sets hold is what the run depends on
                options["token_set_options"] = new JsonObject { ["high"] = setOptions.High, ["interference"] = setOptions.InterferenceMin, ["similarity"] = setOptions.SimilarityMax, ["ratio"] = setOptions.Ratio, ["top_unique"] = setOptions.TopUnique, ["tokens_per_feature"] = setOptions.TokensPerFeature };
            }
            RunKey.AddFile(keyInputs, "sentences", r.GetValue(sentences));
            Common.PrepareScanOutput(io, folder, outDir, new RunKey(keyInputs, (JsonObject)options.DeepClone()), r.GetValue(overwrite), $"format={fmt}",
                [.. InjectionWriter.PlannedFiles(fmt), InjectTarget.LogFile]);
            if (folder.AlreadyComplete) return 0;
            var trialModel = target.Trials(outDir);
            if (target.Log is { Resumed: > 0 } log) io.Out.WriteLine($"resuming: {log.Resumed:N0} answers of an earlier run are in {InjectTarget.LogFile}");
            var units = plan.Units();
            io.Out.WriteLine($"inject{(part.Count > 1 ? $" (shard {part})" : "")}: {typeList.Length} types, {units.Count} sentences × 4 categories × {plan.Trials} trials = {units.Count * 4L * plan.Trials:N0} trials " +
                             $"({plan.Tokens} tokens each, top-{plan.Top})");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = new ProgressDisplay(io).Run("inject", job =>
                InjectionRun.Run(trialModel, plan, folder.Checkpoint(every), (done, total) =>
                {
                    double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                    job.Report(new ProgressDisplay.Status(done / (double)Math.Max(1, total), $"{done:N0}/{total:N0} sentences", rate > 0 ? (total - done) / rate : null));
                }, done => job.Say($"resuming: {done:N0} sentences were run by an earlier run")));
            var manifest = ScanManifest.Header("polyengine inject", target.ManifestModel, target.Device, new JsonObject
            {
                ["inputs"] = new JsonObject
                {
                    ["type_map"] = Path.GetFullPath(r.GetValue(typeMap)!), ["token_sets"] = build ? "built: token_sets.json" : Path.GetFullPath(r.GetValue(tokenSets)!), ["sentences"] = Path.GetFullPath(r.GetValue(sentences)!),
                },
                ["options"] = options,
            });
            if (build)
            {
                manifest["token_sets"] = new JsonObject(setCounts.Select(x => new KeyValuePair<string, JsonNode?>(x.Key, x.Value)));
                Formats.AtomicFile.WriteText(Path.Combine(outDir, "token_sets.json"), TokenSetsJson(sets).ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
            }
            var written = InjectionWriter.Write(outDir, result, fmt, manifest).Concat(build ? ["token_sets.json"] : Array.Empty<string>()).ToList();
            folder.Complete(written);
            io.Out.WriteLine($"{result.Trials.Count:N0} trials in {result.Seconds:F1} s" + (target.Log is { } l ? $" ({l.Sent:N0} requests sent, {l.FromLog:N0} answered from the log)" : ""));
            foreach (var s in result.Summary())
                io.Out.WriteLine($"  {s.Type,-12} {InjectionInputs.Name(s.Category),-7} count {100 * s.CountRate,6:F2}%  prob {100 * s.ProbRate,6:F2}%" +
                                 (s.Category == InjectionCategory.Random ? "" : $"  vs random: t {s.Count.T:F2}, p {s.Count.P:G3}"));
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>The token sets of each type built from the SAEs' decoders, explanations and records (docs/METHOD.md §5.3).</summary>
    static Dictionary<string, Dictionary<InjectionCategory, string[]>> BuildSets(Io io, Model m, IReadOnlyList<string> types, IReadOnlyDictionary<int, string> typeOfId,
        string saeList, string explanationList, string records, TokenSetOptions o, Dictionary<string, int> counts)
    {
        var folders = saeList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var files = explanationList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (files.Length != folders.Length) throw new PolyEngineException($"--explanations: {files.Length} files for {folders.Length} SAEs; give one per --sae, in its order");
        var inputs = folders.Select((folder, i) =>
        {
            var config = SaeConfig.Load(folder);
            config.CheckAgainst(m.Spec);
            string name = Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/'));
            return new TokenSetSae(name, SparseAutoencoder.ReadDecoder(config), config.DIn, Formats.Explanations.Load(files[i], config.DSae, strict: false),
                Formats.ActivationRecords.LoadAll(records, folders.Length == 1 ? null : name));
        }).ToList();
        var sets = new Dictionary<string, Dictionary<InjectionCategory, string[]>>();
        foreach (var type in types)
        {
            sets[type] = InjectionTokenSets.Build(m, type, typeOfId, inputs, o, counts);
            io.Out.WriteLine($"token sets of {type}: " + string.Join(", ", sets[type].Select(x => $"{InjectionInputs.Name(x.Key)} {x.Value.Length}")));
        }
        return sets;
    }

    /// <summary>The sets in the authors' union-file layout.</summary>
    static JsonObject TokenSetsJson(IReadOnlyDictionary<string, Dictionary<InjectionCategory, string[]>> sets) => new(sets.Select(t => new KeyValuePair<string, JsonNode?>(t.Key, new JsonObject
    {
        ["target"] = Strings(t.Value[InjectionCategory.Target]), ["high_interference"] = Strings(t.Value[InjectionCategory.High]),
        ["medium_interference"] = Strings(t.Value[InjectionCategory.Medium]), ["random"] = Strings(t.Value[InjectionCategory.Random]),
    })));

    static JsonArray Strings(string[] values) => new(values.Select(v => (JsonNode)v).ToArray());
}

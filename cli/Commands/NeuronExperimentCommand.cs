using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Experiments;
using PolyEngine.Formats;
using PolyEngine.Interventions;
using PolyEngine.Output;
using PolyEngine.Scans;
using PolyEngine.Stats;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine experiment neuron</c>: the paper's Fig. 6.</summary>
static class NeuronExperimentCommand
{
    public static Command Create(Io io)
    {
        var model = Common.Model();
        var sae = new Option<string>("--sae") { Description = "The SAE folder whose input coordinates are the neurons", Required = true };
        var saeName = new Option<string?>("--sae-name") { Description = "The SAE's name in --records (default: its folder's name)" };
        var explanations = new Option<string>("--explanations") { Description = "The SAE's explanations with embeddings (.jsonl[.gz]: index, description, embedding), for the clusters", Required = true };
        var records = new Option<string>("--records") { Description = "Activation records: a features run's contexts.parquet, or a folder of Neuronpedia exports <feature>.json", Required = true };
        var sentences = new Option<string>("--sentences") { Description = "Test sentences by token string: {\"<token string>\": [\"sentence\", ...]}", Required = true };
        var alignTop = new Option<int>("--align-top") { Description = "A feature's alignments: the top coordinates of its unit decoder row", DefaultValueFactory = _ => 3 };
        var alignMin = new Option<double>("--align-min") { Description = "… kept when above this value", DefaultValueFactory = _ => 0.2 };
        var cutoff = new Option<double>("--cluster-cutoff") { Description = "Cosine distance at which the explanation clusters are cut", DefaultValueFactory = _ => 0.4 };
        var clusters = new Option<string>("--clusters") { Description = "average (average linkage, as the paper) or threshold (connected pairs within the cut)", DefaultValueFactory = _ => "average" };
        var perNeuron = new Option<int>("--clusters-per-neuron") { Description = "Clusters of each sampled neuron", DefaultValueFactory = _ => 3 };
        var perCluster = new Option<int>("--features-per-cluster") { Description = "Features of each cluster", DefaultValueFactory = _ => 3 };
        var similar = new Option<int>("--similar") { Description = "Test tokens: nearest the feature's max-activation token by input-embedding cosine (itself first)", DefaultValueFactory = _ => 5 };
        var perToken = new Option<int>("--sentences-per-token") { Description = "Sentences of the max-activation token", DefaultValueFactory = _ => 3 };
        var top = new Option<int>("--top") { Description = "The weighted cosine over the top-k predictions", DefaultValueFactory = _ => 10 };
        var factors = new Option<string>("--factors") { Description = "'neuron-paper' ({0, 0.1, …, 20}) or a list", DefaultValueFactory = _ => "neuron-paper" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the neuron, cluster and feature draws", DefaultValueFactory = _ => 50 };
        var format = new Option<string>("--format") { Description = "Table format: parquet or csv", DefaultValueFactory = _ => "parquet" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): cases, neurons and buckets tables, manifest.json", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the outputs of an earlier run in --out" };
        var shard = new Option<string>("--shard") { Description = "Run shard i of n of the sampled (neuron, feature) units: i/n, slurm (a job array task) or k8s/n (an Indexed Job index)", DefaultValueFactory = _ => "0/1" };
        var checkpointEvery = Common.CheckpointEvery();
        var device = Common.Device();
        var threads = Common.Threads();
        var cmd = new Command("neuron", Common.WithExamples(
            "The neuron experiment (the paper's Fig. 6): each feature aligns with the top coordinates of its decoder row; features cluster by " +
            "explanation; a coordinate's polysemanticity degree is its number of aligned clusters. Per degree bucket one neuron, its clusters' " +
            "features; the neuron scaled by each factor, the top-10 weighted cosine of the feature's test tokens tracked for masking and amplifying.",
            "polyengine experiment neuron --model EleutherAI/pythia-70m-deduped --sae saes/3-res --explanations res3.jsonl.gz --records feats/contexts.parquet --sentences t.json --out fig6/"))
        { model, sae, saeName, explanations, records, sentences, alignTop, alignMin, cutoff, clusters, perNeuron, perCluster, similar, perToken, top, factors, seed, format, output, overwrite, shard, checkpointEvery, device, threads };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var fmt = TableWriter.ParseFormat(r.GetValue(format)!);
            var every = Common.Interval(r.GetValue(checkpointEvery));
            var part = Shard.Parse(r.GetValue(shard)!);
            var o = new NeuronExperimentOptions
            {
                AlignTop = r.GetValue(alignTop), AlignMin = r.GetValue(alignMin), ClusterCutoff = r.GetValue(cutoff),
                Clusters = r.GetValue(clusters) switch { "average" => ClusterMethod.AverageLinkage, "threshold" => ClusterMethod.PairwiseThreshold, var x => throw new PolyEngineException($"--clusters {x}: choose average or threshold") },
                ClustersPerNeuron = r.GetValue(perNeuron), FeaturesPerCluster = r.GetValue(perCluster), SimilarTokens = r.GetValue(similar),
                SentencesPerToken = r.GetValue(perToken), Top = r.GetValue(top),
                Factors = SteerGrids.Parse(r.GetValue(factors), "--factors", "neuron-paper", SteerGrids.NeuronPaperFactors), Seed = r.GetValue(seed),
            };
            var config = SaeConfig.Load(r.GetValue(sae)!);
            var expl = Explanations.Load(r.GetValue(explanations)!, config.DSae, strict: false);
            var sents = ExperimentInputs.TokenSentences(r.GetValue(sentences)!);
            string name = r.GetValue(saeName) ?? Path.GetFileName(Path.GetFullPath(r.GetValue(sae)!).TrimEnd('/'));
            using var folder = Common.OpenScanOutput(io, outDir);
            using var backend = Devices.Create(r.GetValue(device)!, r.GetValue(threads), out string note);
            using var m = Model.Load(r.GetValue(model)!, backend);
            io.Out.WriteLine($"model: {m.Folder}\ndevice: {note}");
            var options = new JsonObject
            {
                ["sae_name"] = name, ["align_top"] = o.AlignTop, ["align_min"] = o.AlignMin, ["cluster_cutoff"] = o.ClusterCutoff, ["clusters"] = r.GetValue(clusters),
                ["clusters_per_neuron"] = o.ClustersPerNeuron, ["features_per_cluster"] = o.FeaturesPerCluster, ["similar"] = o.SimilarTokens,
                ["sentences_per_token"] = o.SentencesPerToken, ["top"] = o.Top, ["factors"] = new JsonArray(o.Factors.Select(x => (JsonNode)x).ToArray()),
                ["seed"] = o.Seed, ["format"] = fmt.ToString().ToLowerInvariant(), ["shard"] = part.ToString(),
                ["readings"] = new JsonObject
                {
                    ["weights"] = "unprocessed HF weights (the authors' notebook used TransformerLens's processing, so its coordinates were mean-centred)",
                    ["alignments"] = "the top coordinates of the unit decoder row by value, kept above --align-min (Neuronpedia's neuron_alignment_indices)",
                    ["test_tokens"] = "the --similar tokens nearest the max-activation token by input-embedding cosine, itself included",
                    ["prompts"] = "the token's sentences without BOS; weighted cosine over the top --top predictions",
                },
            };
            var keyInputs = new JsonObject();
            RunKey.AddModel(keyInputs, m);
            RunKey.AddFolder(keyInputs, "sae", r.GetValue(sae)!, "cfg.json", "*.safetensors");
            RunKey.AddFile(keyInputs, "explanations", r.GetValue(explanations));
            RunKey.AddFile(keyInputs, "sentences", r.GetValue(sentences));
            if (File.Exists(r.GetValue(records))) RunKey.AddFile(keyInputs, "records", r.GetValue(records));
            else keyInputs["records"] = Path.GetFullPath(r.GetValue(records)!);
            Common.PrepareScanOutput(io, folder, outDir, new RunKey(keyInputs, (JsonObject)options.DeepClone()), r.GetValue(overwrite), $"format={fmt}", NeuronExperimentWriter.PlannedFiles(fmt));
            if (folder.AlreadyComplete) return 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var plan = NeuronExperiment.Plan(m, r.GetValue(sae)!, expl, o);
            var result = new ProgressDisplay(io).Run("experiment neuron", job =>
                NeuronExperiment.Run(m, plan, name, r.GetValue(records)!, sents, o, part, folder.Checkpoint(every),
                    (done, total) => job.Report(new ProgressDisplay.Status(done / (double)Math.Max(1, total), $"{done}/{total} (neuron, feature) units", null)),
                    done => job.Say($"resuming: {done} units were measured by an earlier run")));
            var (cases, counts, connectivity) = (result.Cases, result.Counts, plan.Connectivity);
            var results = new JsonObject { ["cases"] = cases.Count, ["seconds"] = clock.Elapsed.TotalSeconds };
            foreach (var (k, v) in counts.OrderBy(x => x.Key, StringComparer.Ordinal)) results[k] = v;
            if (part.Count > 1)   // the shard's units in run order, so merge can put their cases back in the whole run's order
                results["units"] = new JsonArray([.. part.Of(plan.Units).Select(u => (JsonNode)$"{u.Neuron}:{u.Feature}")]);
            var manifest = ScanManifest.Header("polyengine experiment neuron", m, note, new JsonObject
            {
                ["inputs"] = new JsonObject
                {
                    ["sae"] = Path.GetFullPath(r.GetValue(sae)!), ["explanations"] = Path.GetFullPath(r.GetValue(explanations)!),
                    ["records"] = Path.GetFullPath(r.GetValue(records)!), ["sentences"] = Path.GetFullPath(r.GetValue(sentences)!),
                },
                ["options"] = options,
                ["results"] = results,
            });
            var written = NeuronExperimentWriter.Write(outDir, cases, connectivity, fmt, manifest);
            folder.Complete(written);
            io.Out.WriteLine($"{counts.GetValueOrDefault("clusters")} clusters of {counts.GetValueOrDefault("features_clustered")} features; {cases.Count} cases from " +
                             $"{counts.GetValueOrDefault("features_run")} features in {clock.Elapsed.TotalSeconds:F1} s");
            foreach (var g in cases.GroupBy(c => c.Bucket))
                io.Out.WriteLine($"  degree {g.Key,-8} neuron {g.First().Neuron,5}: mask max drop {g.Average(c => c.Mask.MaxAbsDrop):0.0000}, amplify max increase {g.Average(c => c.Amplify.MaxAbsIncrease):0.0000} (means over {g.Count()} cases)");
            io.Out.WriteLine($"wrote {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }
}

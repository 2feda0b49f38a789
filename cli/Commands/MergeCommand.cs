using System.CommandLine;
using System.Text.Json.Nodes;
using PolyEngine.Output;
using PolyEngine.Scans;

namespace PolyEngine.Cli.Commands;

/// <summary><c>polyengine merge</c>: the shards of a run into the single run's outputs (<see cref="ShardMerge"/>).</summary>
static class MergeCommand
{
    public static Command Create(Io io)
    {
        var shards = new Argument<string[]>("shards") { Description = "The shard folders (the --out of each --shard i/n run), in any order", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (created): the outputs one run would have written", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an earlier merge in --out" };
        var cmd = new Command("merge", Common.WithExamples(
            "Combine the shards of a run (features, coactivate, interference, steer, experiment * or inject with --shard i/n) into exactly the outputs " +
            "one machine would have written, byte for byte: counts and sums add, interference states add, top-k lists are re-ranked, case tables " +
            "concatenate in the run's order and their summaries are recomputed. The shards must be one run's (same inputs, options and version), " +
            "each once, none missing. Parquet tables with an sae column are also written hive-partitioned (TABLE/sae=NAME/part-K.parquet).",
            "polyengine merge shards/0 shards/1 shards/2 shards/3 --out coact/",
            "polyengine merge shards/* --out coact/"))
        { shards, output, overwrite };
        cmd.SetAction(r =>
        {
            string outDir = r.GetValue(output)!;
            var set = ShardMerge.Check(r.GetValue(shards)!);
            var planned = ShardMerge.PlannedFiles(set);
            using var folder = Common.OpenScanOutput(io, outDir);
            var key = new RunKey(new JsonObject { ["shards_of"] = set.Identity }, new JsonObject { ["merge"] = set.Count });
            Common.PrepareScanOutput(io, folder, outDir, key, r.GetValue(overwrite), "merge", planned);
            if (folder.AlreadyComplete) return 0;
            var written = ShardMerge.Merge(set, outDir);
            folder.Complete(written);
            io.Out.WriteLine($"merged {set.Count} shards of a {set.Tool} run into {outDir}: {string.Join(", ", written)}");
            return 0;
        });
        return cmd;
    }
}

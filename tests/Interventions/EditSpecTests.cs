using PolyEngine.Interventions;
using Xunit;
using static PolyEngine.Tests.Cli.CliTests;

namespace PolyEngine.Tests.Interventions;

/// <summary>What an edit file means (rows, positions, from, value) and every way it can be wrong: one line naming the file,
/// the edit and the field, a non-zero exit, and no output written.</summary>
public class EditSpecTests
{
    static string Gpt2 => Fixtures.Golden("gpt2-tiny");

    [Fact]
    public void RowsPositionsFromAndValueEditExactlyWhatTheyName()
    {
        using var m = Model.Load(Gpt2);
        int[][] rows = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]];
        var hook = HookName.Parse("blocks.0.hook_resid_post");
        var clean = m.Run(rows, new RunOptions { Hooks = [hook] }).Cache[hook].Data;
        float[] Edited(EditSpec e) => m.Run(rows, new RunOptions { Hooks = [hook], Edits = [e.Resolve(m.Spec, 2, 5)] }).Cache[hook].Data;
        int d = m.Spec.DModel;
        var v = Enumerable.Range(0, d).Select(i => i * 0.01f).ToArray();

        void Expect(EditSpec e, Func<int, int, int, float, float> value)   // (row, position, coordinate, clean) → expected
        {
            var got = Edited(e);
            for (int b = 0; b < 2; b++)
                for (int t = 0; t < 5; t++)
                    for (int i = 0; i < d; i++)
                    {
                        int o = (b * 5 + t) * d + i;
                        Assert.Equal(value(b, t, i, clean[o]), got[o]);
                    }
        }
        Expect(EditSpec.Steer(hook, v, 3f) with { Rows = [1], Positions = [0, 3] }, (b, t, i, x) => b == 1 && t is 0 or 3 ? x + 3f * v[i] : x);
        Expect(EditSpec.Steer(hook, v, -2f) with { From = 2 }, (b, t, i, x) => t >= 2 ? x + -2f * v[i] : x);
        Expect(EditSpec.ScaleCoordinate(hook, 7, 5f) with { Rows = [0] }, (b, t, i, x) => b == 0 && i == 7 ? x * 5f : x);
        Expect(new EditSpec(hook) { Coordinate = 3, Value = 1.25f, Positions = [4] }, (b, t, i, x) => t == 4 && i == 3 ? 1.25f : x);
    }

    public static TheoryData<string, string> BadFiles() => new()
    {
        { "[{\"hook\": \"blocks.0.hook_resid_post\",\n \"add\": [1, 2,]}]", "not valid JSON at line 2" },
        { "{\"hook\": \"blocks.0.hook_resid_post\"}", "expected an array of edits" },
        { "[{\"add\": [1]}]", "edit 0: \"hook\" is missing" },
        { "[{\"hook\": \"blocks.7.hook_resid_post\", \"coordinate\": 1, \"factor\": 0}]", "has no hook blocks.7.hook_resid_post" },
        { "[{\"hook\": \"blocks.0.attn.hook_pattern\", \"coordinate\": 1, \"factor\": 0}]", "cannot be edited" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"add\": [1, 2, 3]}]", "\"add\" has 3 values; the hook is 64 wide" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"add\": [\"NaN\"]}]", "\"add[0]\" must be a finite number" },
        { "[{\"hook\": \"blocks.0.mlp.hook_post\", \"coordinate\": 256, \"factor\": 2}]", "coordinate 256 is outside the hook's width 0..255" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1}]", "needs one of \"factor\" or \"value\"" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1, \"factor\": 2, \"rows\": [3]}]", "row 3 does not exist; the input has rows 0..1" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1, \"factor\": 2, \"positions\": [9]}]", "position 9 is outside the input's positions 0..2" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1, \"factor\": 2, \"positions\": [1], \"from\": 1}]", "give \"positions\" or \"from\", not both" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1, \"factor\": 2, \"sacle\": 1}]", "unknown field \"sacle\"" },
        { "[{\"hook\": \"blocks.0.hook_resid_post\", \"coordinate\": 1, \"factor\": 2}, {\"hook\": \"hook_embed\", \"coordinate\": 1.5, \"factor\": 2}]", "edit 1: \"coordinate\" must be an integer" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void ABadEditFileIsOneLineNamingTheEditAndNothingIsWritten(string json, string expected)
    {
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("edits.json"), json);
        var (code, _, stderr) = Run("run", "--model", Gpt2, "--ids", "1,2,3;4,5,6", "--edits", dir.File("edits.json"), "--out", dir.File("out.safetensors"));
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stderr);
        Assert.Contains("--edits " + dir.File("edits.json"), stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("out.safetensors")));
    }

    [Fact]
    public void AMissingEditFileSaysSo()
    {
        var (code, _, stderr) = Run("run", "--model", Gpt2, "--ids", "1,2", "--edits", "/nonexistent/edits.json");
        Assert.NotEqual(0, code);
        Assert.Contains("--edits /nonexistent/edits.json", stderr);
    }
}

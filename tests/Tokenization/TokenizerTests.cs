using System.Text.Json;
using PolyEngine.Tokenization;
using Xunit;

namespace PolyEngine.Tests.Tokenization;

public class TokenizerTests
{
    [Theory]
    [InlineData("Hello world!", new[] { 15496, 995, 0 })]
    [InlineData(" Hello world!", new[] { 18435, 995, 0 })]
    [InlineData("The dog", new[] { 464, 3290 })]
    [InlineData("Hello, my dog is cute", new[] { 15496, 11, 616, 3290, 318, 13779 })]
    [InlineData("Hello  world\n\n  x<|endoftext|>", new[] { 15496, 220, 995, 628, 220, 2124, 50256 })]
    public void Gpt2MatchesPublishedIds(string text, int[] ids)
    {
        var tok = ModelTokenizer.Gpt2();
        Assert.Equal(ids, tok.Encode(text));
        Assert.Equal(text, tok.Decode(ids));
    }

    /// <summary>Every string that HF `tokenizers` encoded with the GPT-NeoX-20B (Pythia) tokenizer.json, reproduced exactly.</summary>
    [Fact]
    public void NeoXReproducesHuggingFaceTokenizersExactly()
    {
        using var fs = File.OpenRead(Path.Combine(Fixtures.NeoXTokenizer, "tokenizer.json"));
        var tok = ModelTokenizer.FromTokenizerJson(fs, "tokenizer.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.NeoXTokenizer, "hf_tokenizers_reference.json")));
        int n = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            Assert.True(expected.SequenceEqual(tok.Encode(text)), $"{JsonSerializer.Serialize(text)}: [{string.Join(",", tok.Encode(text))}] expected [{string.Join(",", expected)}]");
            n++;
        }
        Assert.Equal(20, n);
    }

    [Fact]
    public void BuiltInNeoXTokenizerIsTheFixtureFile()
    {
        using var builtIn = ModelTokenizer.OpenBuiltInNeoXTokenizerJson();
        using var ms = new MemoryStream();
        builtIn.CopyTo(ms);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Fixtures.NeoXTokenizer, "tokenizer.json")), ms.ToArray());
    }

    [Fact]
    public void IdListsParseAndReportBadEntries()
    {
        Assert.Equal([[1, 2, 3], [4, 5, 6]], TokenIds.ParseList("1,2,3;4,5,6"));
        Assert.Equal([[7]], TokenIds.ParseList(" 7 "));
        Assert.Contains("'x' (row 1, position 1)", Assert.Throws<PolyEngineException>(() => TokenIds.ParseList("1,2;3,x")).Message);
        Assert.Equal([[1, 2], [3]], TokenIds.ParseList("1,2;3"));   // rows may differ in length (a run right-pads them)
        Assert.Contains("row 1 is empty", Assert.Throws<PolyEngineException>(() => TokenIds.ParseList("1;")).Message);
        using var dir = new Fixtures.TempDir();
        File.WriteAllText(dir.File("ids.json"), "[[1,2],[3,4,5]]");
        Assert.Equal([[1, 2], [3, 4, 5]], TokenIds.ParseJsonFile(dir.File("ids.json")));
        File.WriteAllText(dir.File("hole.json"), "[[1,2],[]]");
        Assert.Contains("row 1 is empty", Assert.Throws<PolyEngineException>(() => TokenIds.ParseJsonFile(dir.File("hole.json"))).Message);
        File.WriteAllText(dir.File("bad.json"), "[[1,2],[3,\"a\"]]");
        Assert.Contains("row 1, position 1", Assert.Throws<PolyEngineException>(() => TokenIds.ParseJsonFile(dir.File("bad.json"))).Message);
        File.WriteAllText(dir.File("notjson.json"), "[[1,2],");
        Assert.Contains("not valid JSON", Assert.Throws<PolyEngineException>(() => TokenIds.ParseJsonFile(dir.File("notjson.json"))).Message);
        Assert.Contains("file not found", Assert.Throws<PolyEngineException>(() => TokenIds.ParseJsonFile(dir.File("none.json"))).Message);
        File.WriteAllText(dir.File("empty.json"), "[]");
        Assert.Contains("no token ids", Assert.Throws<PolyEngineException>(() => TokenIds.ParseJsonFile(dir.File("empty.json"))).Message);
    }
}

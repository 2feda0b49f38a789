using System.Buffers.Binary;
using System.Text;
using PolyEngine.Formats;
using Xunit;

namespace PolyEngine.Tests.Formats;

public class SafeTensorsTests
{
    static readonly float[] MinusThreeToTwo = [-3, -2, -1, 0, 1, 2];

    [Theory]
    [InlineData("b", SafeTensorDType.I8)]
    [InlineData("h", SafeTensorDType.I16)]
    [InlineData("i", SafeTensorDType.I32)]
    [InlineData("e", SafeTensorDType.F16)]
    [InlineData("f", SafeTensorDType.F32)]
    [InlineData("d", SafeTensorDType.F64)]
    public void ReadsTheReferenceSamplesOfEverySignedDType(string name, SafeTensorDType dtype)
    {
        foreach (var file in new[] { $"{dtype}.safetensors", "overall.safetensors" })   // per-dtype files are named by dtype (see SOURCES.md)
        {
            using var f = SafeTensorsFile.Open(Path.Combine(Fixtures.Samples, file));
            Assert.Equal("a", f.Metadata["test"]);
            Assert.Equal(dtype, f.Info(name).DType);
            Assert.Equal(new long[] { 6 }, f.Info(name).Shape);
            Assert.Equal(MinusThreeToTwo, f.ReadFloat32(name));
        }
    }

    [Fact]
    public void UnsignedSamplesWrapAndUnalignedDataIsCopied()
    {
        using var f = SafeTensorsFile.Open(Path.Combine(Fixtures.Samples, "overall.safetensors"));
        Assert.Equal(9, f.Tensors.Count);
        Assert.Equal(new float[] { 253, 254, 255, 0, 1, 2 }, f.ReadFloat32("B"));
        Assert.Equal(new float[] { 65533, 65534, 65535, 0, 1, 2 }, f.ReadFloat32("H"));
        Assert.Equal(new long[] { 4294967293, 4294967294, 4294967295, 0, 1, 2 }, f.ReadInt64("I"));   // U32 at data offset 18
        Assert.Equal(new long[] { -3, -2, -1, 0, 1, 2 }, f.ReadInt64("i"));
        Assert.False(f.TryGetFloat32View("f", out _));   // F32 at an unaligned address: no zero-copy view, one copy
        Assert.Equal(MinusThreeToTwo, f.ReadFloat32("f"));
    }

    [Fact]
    public void WriterRoundTripsEveryFloatDTypeAndAlignsTheHeader()
    {
        using var dir = new Fixtures.TempDir();
        var values = new float[] { 1.5f, -2.25f, 0f, 3.140625f, -1e-3f, 65504f };
        new SafeTensorsWriter()
            .AddMetadata("k", "v")
            .Add("f32", values, 2, 3)
            .Add("f16", values, SafeTensorDType.F16, 6)
            .Add("bf16", values, SafeTensorDType.BF16, 3, 2)
            .Add("ids", new long[] { 1, -2, 3 }, 3)
            .Save(dir.File("x.safetensors"));
        var bytes = File.ReadAllBytes(dir.File("x.safetensors"));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes) % 8);
        using var f = SafeTensorsFile.Open(dir.File("x.safetensors"));
        Assert.Equal("v", f.Metadata["k"]);
        Assert.True(f.TryGetFloat32View("f32", out var view));
        Assert.Equal(values, view.ToArray());
        Assert.Equal(new long[] { 2, 3 }, f.Info("f32").Shape);
        Assert.Equal(values.Select(v => (float)(Half)v), f.ReadFloat32("f16"));
        var bf = f.ReadFloat32("bf16");
        for (int i = 0; i < values.Length; i++) Assert.True(Math.Abs(bf[i] - values[i]) <= Math.Abs(values[i]) / 128, $"bf16 {i}");
        Assert.Equal(new long[] { 1, -2, 3 }, f.ReadInt64("ids"));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    // ---- hostile files: each a clear error naming the file (and the tensor), never a crash or a wrong read ----

    static byte[] File_(string header, int dataBytes = 0, ulong? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var b = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, declaredLength ?? (ulong)h.Length);
        h.CopyTo(b, 8);
        return b;
    }

    public static TheoryData<string, byte[], string> Hostile() => new()
    {
        { "empty file", [], "truncated" },
        { "shorter than the length prefix", [1, 2, 3], "truncated" },
        { "header length larger than the file", File_("{}", 0, 1000), "larger than the file" },
        { "header length near 2^64", File_("{}", 0, ulong.MaxValue - 3), "larger than the file" },
        { "header not UTF-8", [.. File_("{}").Take(8).Select((x, i) => i == 0 ? (byte)2 : x), 0xC3, 0x28], "not valid UTF-8" },
        { "header not JSON", File_("{\"a\": [1,"), "not valid JSON" },
        { "header not an object", File_("[1,2]"), "must be a JSON object" },
        { "unknown dtype", File_("{\"t\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "unknown dtype 'F31'" },
        { "numeric dtype", File_("{\"t\":{\"dtype\":\"3\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "unknown dtype" },
        { "negative shape", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "non-negative" },
        { "offsets outside the data", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), "outside the 4-byte data section" },
        { "offsets reversed", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4), "invalid data_offsets" },
        { "size mismatch", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12), "needs 12 bytes but data_offsets span 8" },
        { "overlap", File_("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlap" },
        { "shape overflow", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4), "too large" },
        { "missing data_offsets", File_("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), "data_offsets" },
        { "metadata not strings", File_("{\"__metadata__\":{\"a\":1}}"), "must be a string" },
    };

    [Theory]
    [MemberData(nameof(Hostile))]
    public void HostileFilesGiveOneLineErrorsNamingTheFile(string what, byte[] content, string expected)
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<PolyEngineException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        _ = what;
    }

    [Fact]
    public void TruncatedRealFileIsRejected()
    {
        using var dir = new Fixtures.TempDir();
        var bytes = File.ReadAllBytes(Path.Combine(Fixtures.Golden("gpt2-tiny"), "model.safetensors"));
        File.WriteAllBytes(dir.File("model.safetensors"), bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<PolyEngineException>(() => SafeTensorsFile.Open(dir.File("model.safetensors")).Dispose());
        Assert.Contains("outside", e.Message);
        Assert.Contains("tensor '", e.Message);
    }

    [Fact]
    public void MissingTensorNamesTheFile()
    {
        using var f = SafeTensorsFile.Open(Path.Combine(Fixtures.Samples, "F32.safetensors"));
        var e = Assert.Throws<PolyEngineException>(() => f.ReadFloat32("nope"));
        Assert.Contains("no tensor named 'nope'", e.Message);
    }

    [Fact]
    public void AtomicWriteLeavesNothingOnFailureAndKeepsTheOldFile()
    {
        using var dir = new Fixtures.TempDir();
        string path = dir.File("out.bin");
        File.WriteAllText(path, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s => { s.WriteByte(1); throw new InvalidOperationException("killed"); }));
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(dir.Path));
        var e = Assert.Throws<PolyEngineException>(() => AtomicFile.WriteText(Path.Combine(dir.Path, "no-such-dir", "x"), "y"));
        Assert.Contains("does not exist", e.Message);
    }
}

using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>
/// Writes safetensors files atomically (temp file in the same folder, then rename): a failed or killed write leaves
/// no partial file. Tensors are written in the order added; the header is padded with spaces to a multiple of 8 bytes
/// so every tensor is 8-byte aligned when sizes allow.
/// </summary>
public sealed class SafeTensorsWriter
{
    readonly List<(string Name, SafeTensorDType DType, long[] Shape, long Bytes, Action<Stream> Write)> _tensors = [];
    readonly Dictionary<string, string> _metadata = new(StringComparer.Ordinal);

    public SafeTensorsWriter AddMetadata(string key, string value) { _metadata[key] = value; return this; }

    public SafeTensorsWriter Add(string name, ReadOnlySpan<float> values, params long[] shape) =>
        AddRaw(name, SafeTensorDType.F32, shape, MemoryMarshal.AsBytes(values).ToArray(), values.Length);

    public SafeTensorsWriter Add(string name, ReadOnlySpan<long> values, params long[] shape) =>
        AddRaw(name, SafeTensorDType.I64, shape, MemoryMarshal.AsBytes(values).ToArray(), values.Length);

    public SafeTensorsWriter Add(string name, ReadOnlySpan<int> values, params long[] shape) =>
        AddRaw(name, SafeTensorDType.I32, shape, MemoryMarshal.AsBytes(values).ToArray(), values.Length);

    /// <summary>Adds float values stored as <paramref name="dtype"/> (F32, F16 or BF16, round-to-nearest-even).</summary>
    public SafeTensorsWriter Add(string name, ReadOnlySpan<float> values, SafeTensorDType dtype, params long[] shape)
    {
        if (dtype == SafeTensorDType.F32) return Add(name, values, shape);
        var bytes = new byte[values.Length * 2];
        var u16 = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
        for (int i = 0; i < values.Length; i++)
            u16[i] = dtype switch
            {
                SafeTensorDType.F16 => BitConverter.HalfToUInt16Bits((Half)values[i]),
                SafeTensorDType.BF16 => ToBFloat16(values[i]),
                _ => throw new ArgumentException($"cannot write floats as {dtype}"),
            };
        return AddRaw(name, dtype, shape, bytes, values.Length);
    }

    static ushort ToBFloat16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Adds raw little-endian bytes (no checks on content; used by tests to build hostile files too).</summary>
    public SafeTensorsWriter AddRaw(string name, SafeTensorDType dtype, long[] shape, byte[] data, long elementCount) =>
        Add(name, dtype, shape, elementCount, data.LongLength, s => s.Write(data));

    /// <summary>Adds a U32 tensor by reference, without a copy: the array is read when the file is saved and must not
    /// change before.</summary>
    public SafeTensorsWriter Add(string name, uint[] values, params long[] shape) => Add(name, [values], shape);

    /// <summary>Adds a U32 tensor held in pieces (the co-activation triangle: 1.2 GB at F = 24,576, and past the 2³¹
    /// elements of one .NET array from F = 65,537), by reference and streamed out in bounded writes: the pieces are read
    /// when the file is saved and must not change before.</summary>
    public SafeTensorsWriter Add(string name, IReadOnlyList<uint[]> pieces, params long[] shape)
    {
        long count = pieces.Sum(p => p.LongLength);
        return Add(name, SafeTensorDType.U32, shape, count, count * sizeof(uint), s =>
        {
            foreach (var piece in pieces)
                for (long i = 0; i < piece.LongLength; i += WriteElements)
                    s.Write(MemoryMarshal.AsBytes(piece.AsSpan((int)i, (int)Math.Min(WriteElements, piece.LongLength - i))));
        });
    }

    /// <summary>Elements per write of a large tensor (64 MiB of uint32): no span ever covers 2³¹ bytes.</summary>
    internal static long WriteElements = 1L << 24;

    SafeTensorsWriter Add(string name, SafeTensorDType dtype, long[] shape, long elementCount, long bytes, Action<Stream> write)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != elementCount) throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} elements, got {elementCount}");
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"tensor '{name}' added twice");
        _tensors.Add((name, dtype, shape, bytes, write));
        return this;
    }

    public byte[] HeaderBytes()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (_metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in _metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in _tensors)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.ToString());
                w.WriteStartArray("shape"); foreach (var s in t.Shape) w.WriteNumberValue(s); w.WriteEndArray();
                w.WriteStartArray("data_offsets"); w.WriteNumberValue(offset); w.WriteNumberValue(offset + t.Bytes); w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Bytes;
            }
            w.WriteEndObject();
        }
        var header = ms.ToArray();
        int padded = (header.Length + 7) / 8 * 8;
        var result = new byte[padded];
        header.CopyTo(result, 0);
        result.AsSpan(header.Length).Fill((byte)' ');
        return result;
    }

    /// <summary>Writes the file atomically; the destination appears only when complete.</summary>
    public void Save(string path) => AtomicFile.Write(path, stream =>
    {
        var header = HeaderBytes();
        Span<byte> len = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        stream.Write(len);
        stream.Write(header);
        foreach (var t in _tensors) t.Write(stream);
    });
}

/// <summary>Writes a file through a temporary sibling and an atomic rename; on any failure the temp file is removed.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        string? dir = System.IO.Path.GetDirectoryName(full);
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir))
            throw new PolyEngineException($"{path}: output folder '{dir}' does not exist; create it or choose another path");
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                FaultPoints.Reach("write:" + full);
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            FaultPoints.Reach("before-rename:" + full);
            File.Move(tmp, full, overwrite: true);
            FaultPoints.Reach("after-rename:" + full);
        }
        catch (Exception e) when (IoFailure(e) is { } io)
        {
            TryDelete(tmp);
            throw new PolyEngineException($"{path}: cannot write output ({io.Message}); check the folder's permissions and free space");
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    public static void WriteText(string path, string text) => Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));

    /// <summary>The I/O failure inside <paramref name="e"/> (a writer library may wrap it), or null.</summary>
    static Exception? IoFailure(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x is IOException or UnauthorizedAccessException) return x;
        return e is AggregateException a ? a.InnerExceptions.Select(IoFailure).FirstOrDefault(x => x is not null) : null;
    }

    static void TryDelete(string p)
    {
        try { if (File.Exists(p)) File.Delete(p); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace PolyEngine.Formats;

/// <summary>The element types of the safetensors format.</summary>
public enum SafeTensorDType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2 }

/// <summary>One tensor entry of a safetensors header.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorDType DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A memory-mapped safetensors file, validated as hostile input on open: header length bounded by the file, strict UTF-8
/// JSON, known dtypes, non-negative shapes, every <c>data_offsets</c> range inside the data section, equal to
/// shape × dtype size, and no two ranges overlapping. Tensor bytes are views into the mapping (zero-copy); float
/// conversion copies once.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    const long MaxHeaderBytes = 100L << 20;  // the reference implementation's limit

    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    readonly byte* _base;       // first byte of the data section
    readonly long _dataLength;
    readonly Dictionary<string, SafeTensorInfo> _tensors;

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyCollection<SafeTensorInfo> Tensors => _tensors.Values;

    SafeTensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* data, long dataLength,
        Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path; _map = map; _view = view; _base = data; _dataLength = dataLength; _tensors = tensors; Metadata = metadata;
    }

    public static int DTypeSize(SafeTensorDType t) => t switch
    {
        SafeTensorDType.BOOL or SafeTensorDType.U8 or SafeTensorDType.I8 or SafeTensorDType.F8_E4M3 or SafeTensorDType.F8_E5M2 => 1,
        SafeTensorDType.U16 or SafeTensorDType.I16 or SafeTensorDType.F16 or SafeTensorDType.BF16 => 2,
        SafeTensorDType.U32 or SafeTensorDType.I32 or SafeTensorDType.F32 => 4,
        _ => 8,
    };

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new PolyEngineException($"{path}: file not found");
        long fileLength = FileLinks.Length(path);   // the HF cache's files are links into blobs/: measure the blob
        if (fileLength < 8)
            throw new PolyEngineException($"{path}: truncated safetensors file ({fileLength} bytes; it must start with an 8-byte header length); re-download or re-save it");
        MemoryMappedFile map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(p, 8));
            if (n > (ulong)(fileLength - 8))
                throw new PolyEngineException($"{path}: header length {n} is larger than the file ({fileLength} bytes): the file is truncated or not safetensors; re-download or re-save it");
            if (n > MaxHeaderBytes)
                throw new PolyEngineException($"{path}: header length {n} exceeds the {MaxHeaderBytes}-byte limit; the file is not a valid safetensors file");
            var headerBytes = new ReadOnlySpan<byte>(p + 8, (int)n);
            var (tensors, metadata) = ParseHeader(path, headerBytes, fileLength - 8 - (long)n);
            var file = new SafeTensorsFile(path, map, view, p + 8 + (long)n, fileLength - 8 - (long)n, tensors, metadata);
            return file;
        }
        catch
        {
            if (view is not null)
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
            }
            map.Dispose();
            throw;
        }
    }

    static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        string json;
        try { json = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header); }
        catch (DecoderFallbackException) { throw new PolyEngineException($"{path}: safetensors header is not valid UTF-8; the file is corrupt"); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new PolyEngineException($"{path}: safetensors header is not valid JSON ({e.Message.Split('\n')[0]}); the file is corrupt"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new PolyEngineException($"{path}: safetensors header must be a JSON object, found {doc.RootElement.ValueKind}");
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind != JsonValueKind.Object)
                    throw new PolyEngineException($"{path}: __metadata__ must be an object of strings");
                foreach (var m in prop.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()!
                        : throw new PolyEngineException($"{path}: __metadata__ value '{m.Name}' must be a string");
                continue;
            }
            tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
        }
        // No two tensors may share bytes.
        SafeTensorInfo? prev = null;
        foreach (var t in tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin))
        {
            if (prev is not null && t.Begin < prev.End)
                throw new PolyEngineException($"{path}: tensors '{prev.Name}' [{prev.Begin}, {prev.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap; the file is corrupt");
            prev = t;
        }
        return (tensors, metadata);
    }

    static SafeTensorInfo ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        string where = $"{path}: tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object) throw new PolyEngineException($"{where}: entry must be an object with dtype, shape, data_offsets");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new PolyEngineException($"{where}: missing string field 'dtype'");
        if (!Enum.TryParse<SafeTensorDType>(dt.GetString(), ignoreCase: false, out var dtype) || int.TryParse(dt.GetString(), out _))
            throw new PolyEngineException($"{where}: unknown dtype '{dt.GetString()}' (known: {string.Join(", ", Enum.GetNames<SafeTensorDType>())})");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new PolyEngineException($"{where}: missing array field 'shape'");
        var shape = new List<long>();
        foreach (var s in sh.EnumerateArray())
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out long v) || v < 0)
                throw new PolyEngineException($"{where}: shape entries must be non-negative integers, found {s}");
            shape.Add(v);
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new PolyEngineException($"{where}: 'data_offsets' must be [begin, end]");
        if (!off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new PolyEngineException($"{where}: invalid data_offsets [{off[0]}, {off[1]}]");
        if (end > dataLength)
            throw new PolyEngineException($"{where}: data_offsets [{begin}, {end}) lie outside the {dataLength}-byte data section; the file is truncated or corrupt");
        long count = 1;
        try { foreach (var s in shape) count = checked(count * s); }
        catch (OverflowException) { throw new PolyEngineException($"{where}: shape [{string.Join(", ", shape)}] is too large"); }
        long expected = count * DTypeSize(dtype);
        if (end - begin != expected)
            throw new PolyEngineException($"{where}: {dtype} {"[" + string.Join(", ", shape) + "]"} needs {expected} bytes but data_offsets span {end - begin}; the file is corrupt");
        return new SafeTensorInfo(name, dtype, shape.ToArray(), begin, end);
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public SafeTensorInfo Info(string name) => _tensors.TryGetValue(name, out var t) ? t
        : throw new PolyEngineException($"{Path}: no tensor named '{name}' (the file has {_tensors.Count} tensors)");

    /// <summary>The raw little-endian bytes of a tensor, a view into the mapping.</summary>
    public ReadOnlySpan<byte> Bytes(string name)
    {
        var t = Info(name);
        long len = t.End - t.Begin;
        if (len > int.MaxValue) throw new PolyEngineException($"{Path}: tensor '{name}' is larger than 2 GiB, which this reader does not support");
        return new ReadOnlySpan<byte>(_base + t.Begin, (int)len);
    }

    /// <summary>Bytes [<paramref name="offset"/>, offset + <paramref name="length"/>) of a tensor of any size, a view into
    /// the mapping (large tensors are read through windows like this one).</summary>
    public ReadOnlySpan<byte> Bytes(string name, long offset, int length)
    {
        var t = Info(name);
        if (offset < 0 || length < 0 || offset + length > t.End - t.Begin)
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + length}) are outside tensor '{name}' of {t.End - t.Begin} bytes");
        return new ReadOnlySpan<byte>(_base + t.Begin + offset, length);
    }

    /// <summary>Copies U32 elements [<paramref name="first"/>, first + dst.Length) of a tensor of any size into <paramref name="dst"/>.</summary>
    public void CopyU32(string name, long first, Span<uint> dst)
    {
        var t = Info(name);
        if (t.DType != SafeTensorDType.U32) throw new PolyEngineException($"{Path}: tensor '{name}' is {t.DType}, expected U32");
        for (int done = 0; done < dst.Length;)
        {
            int n = Math.Min(dst.Length - done, 1 << 24);
            MemoryMarshal.Cast<byte, uint>(Bytes(name, (first + done) * 4, n * 4)).CopyTo(dst.Slice(done, n));
            done += n;
        }
    }

    /// <summary>Element <paramref name="index"/> of a U32 tensor, read from the mapping (random access into tensors of any size).</summary>
    public uint U32At(SafeTensorInfo t, long index)
    {
        if (t.DType != SafeTensorDType.U32) throw new PolyEngineException($"{Path}: tensor '{t.Name}' is {t.DType}, expected U32");
        if ((ulong)index >= (ulong)t.ElementCount) throw new ArgumentOutOfRangeException(nameof(index), $"{index} is outside tensor '{t.Name}' of {t.ElementCount} elements");
        return BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(_base + t.Begin + index * 4, 4));
    }

    /// <summary>A zero-copy float view when the tensor is F32 and 4-byte aligned in memory; otherwise false.</summary>
    public bool TryGetFloat32View(string name, out ReadOnlySpan<float> values)
    {
        var t = Info(name);
        var bytes = Bytes(name);
        if (t.DType == SafeTensorDType.F32 && ((nint)(_base + t.Begin) & 3) == 0 && BitConverter.IsLittleEndian)
        {
            values = MemoryMarshal.Cast<byte, float>(bytes);
            return true;
        }
        values = default;
        return false;
    }

    /// <summary>The tensor converted to float32 (F32 zero-copy view or one converting copy for F16, BF16, F64 and integers).</summary>
    public float[] ReadFloat32(string name)
    {
        var t = Info(name);
        var dst = new float[t.ElementCount];
        CopyFloat32(name, dst);
        return dst;
    }

    public void CopyFloat32(string name, Span<float> dst)
    {
        var t = Info(name);
        if (dst.Length != t.ElementCount) throw new ArgumentException($"destination has {dst.Length} elements, tensor '{name}' has {t.ElementCount}");
        if (TryGetFloat32View(name, out var view)) { view.CopyTo(dst); return; }
        Convert(Bytes(name), t.DType, dst, $"{Path}: tensor '{name}'");
    }

    /// <summary>Converts little-endian elements of <paramref name="dtype"/> to float32.</summary>
    public static void Convert(ReadOnlySpan<byte> src, SafeTensorDType dtype, Span<float> dst, string where)
    {
        switch (dtype)
        {
            case SafeTensorDType.F32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src.Slice(i * 4));
                break;
            case SafeTensorDType.F16:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(src.Slice(i * 2));
                break;
            case SafeTensorDType.BF16:
                for (int i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(i * 2)) << 16);
                break;
            case SafeTensorDType.F64:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(src.Slice(i * 8));
                break;
            case SafeTensorDType.BOOL or SafeTensorDType.U8:
                for (int i = 0; i < dst.Length; i++) dst[i] = src[i];
                break;
            case SafeTensorDType.I8:
                for (int i = 0; i < dst.Length; i++) dst[i] = (sbyte)src[i];
                break;
            case SafeTensorDType.U16:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(i * 2));
                break;
            case SafeTensorDType.I16:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt16LittleEndian(src.Slice(i * 2));
                break;
            case SafeTensorDType.U32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadUInt32LittleEndian(src.Slice(i * 4));
                break;
            case SafeTensorDType.I32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt32LittleEndian(src.Slice(i * 4));
                break;
            case SafeTensorDType.U64:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadUInt64LittleEndian(src.Slice(i * 8));
                break;
            case SafeTensorDType.I64:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt64LittleEndian(src.Slice(i * 8));
                break;
            default:
                throw new PolyEngineException($"{where}: dtype {dtype} cannot be converted to float32");
        }
    }

    /// <summary>An integer tensor (I64, I32, U16, U32, ...) as int64 values.</summary>
    public long[] ReadInt64(string name)
    {
        var t = Info(name);
        var bytes = Bytes(name);
        var dst = new long[t.ElementCount];
        for (int i = 0; i < dst.Length; i++)
            dst[i] = t.DType switch
            {
                SafeTensorDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(bytes.Slice(i * 8)),
                SafeTensorDType.U64 => (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes.Slice(i * 8)),
                SafeTensorDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(bytes.Slice(i * 4)),
                SafeTensorDType.U32 => BinaryPrimitives.ReadUInt32LittleEndian(bytes.Slice(i * 4)),
                SafeTensorDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(bytes.Slice(i * 2)),
                SafeTensorDType.U16 => BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice(i * 2)),
                SafeTensorDType.I8 => (sbyte)bytes[i],
                SafeTensorDType.U8 or SafeTensorDType.BOOL => bytes[i],
                _ => throw new PolyEngineException($"{Path}: tensor '{name}' is {t.DType}, expected an integer dtype"),
            };
        return dst;
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}

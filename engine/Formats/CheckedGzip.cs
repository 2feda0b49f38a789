using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Hashing;

namespace PolyEngine.Formats;

/// <summary>
/// A gzip file read to its end and checked against its trailer (CRC-32 and length of the data): .NET's GZipStream stops
/// quietly at a file cut short, so a half-downloaded <c>.jsonl.gz</c> would otherwise read as a shorter file with one
/// broken last line. A damaged or truncated file is a one-line error naming it. (A gzip of several members, as
/// <c>cat a.gz b.gz</c> makes, is checked against its last member only, and is refused with a hint to gunzip it.)
/// </summary>
public sealed class CheckedGzip : Stream
{
    readonly Stream _file;
    readonly GZipStream _inner;
    readonly string _what;
    readonly uint _crc, _size;
    readonly Crc32 _hash = new();
    long _length;
    bool _checked;

    CheckedGzip(Stream file, string what, uint crc, uint size)
    {
        _file = file;
        _what = what;
        _crc = crc;
        _size = size;
        _inner = new GZipStream(file, CompressionMode.Decompress);
    }

    /// <summary>Opens <paramref name="path"/>; <paramref name="what"/> names it in errors (e.g. "--explanations x.jsonl.gz").</summary>
    public static CheckedGzip Open(string path, string what)
    {
        var file = FileLinks.OpenRead(path);
        try
        {
            if (file.Length < 18) throw new PolyEngineException($"{what}: {file.Length} bytes is too short for a gzip file; the file is truncated");
            Span<byte> trailer = stackalloc byte[8];
            file.Seek(-8, SeekOrigin.End);
            file.ReadExactly(trailer);
            file.Seek(0, SeekOrigin.Begin);
            return new CheckedGzip(file, what, BinaryPrimitives.ReadUInt32LittleEndian(trailer), BinaryPrimitives.ReadUInt32LittleEndian(trailer[4..]));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int n;
        try { n = _inner.Read(buffer); }
        catch (InvalidDataException e) { throw new PolyEngineException($"{_what}: not a readable gzip file ({e.Message}); the file is damaged"); }
        if (n > 0)
        {
            _hash.Append(buffer[..n]);
            _length += n;
        }
        else if (!_checked && buffer.Length > 0)
        {
            _checked = true;
            if (_hash.GetCurrentHashAsUInt32() != _crc || (uint)_length != _size)
                throw new PolyEngineException($"{_what}: the gzip data ({_length:N0} bytes) does not match the file's trailer; the file is truncated or damaged " +
                                              "(download it again; a multi-member gzip must be gunzipped first)");
        }
        return n;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _length; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
            _file.Dispose();
        }
        base.Dispose(disposing);
    }
}

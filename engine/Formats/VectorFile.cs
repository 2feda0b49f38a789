using System.Buffers.Binary;

namespace PolyEngine.Formats;

/// <summary>
/// Vectors [n, width] from a file: <c>.npy</c> (float32 or float64, little-endian, C order; 1-D is one vector) or
/// <c>.safetensors</c> (its only tensor, or <c>FILE.safetensors:NAME</c>; any float dtype; 1-D is one vector). Every value
/// must be finite.
/// </summary>
public static class VectorFile
{
    static readonly Dictionary<string, int> FloatDtypes = new() { ["<f4"] = 4, ["<f8"] = 8 };

    /// <summary>The file of a vector spec (<c>FILE</c> or <c>FILE.safetensors:NAME</c>) and the tensor name ("" when none).</summary>
    public static (string File, string Name) Split(string spec)
    {
        int colon = spec.LastIndexOf(':');
        return colon > 0 && spec[..colon].EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? (spec[..colon], spec[(colon + 1)..]) : (spec, "");
    }

    public static float[][] Load(string spec, string option = "--vectors")
    {
        var (file, name) = Split(spec);
        if (!File.Exists(file)) throw new PolyEngineException($"{option} {file}: file not found");
        var (values, shape) = Path.GetExtension(file).ToLowerInvariant() switch
        {
            ".npy" => Npy(file, option),
            ".safetensors" => SafeTensors(file, name, option),
            var ext => throw new PolyEngineException($"{option} {file}: '{ext}' is not a vector file; give .npy or .safetensors [n, width]"),
        };
        if (shape.Length is not (1 or 2) || shape.Any(s => s == 0))
            throw new PolyEngineException($"{option} {spec}: shape ({string.Join(", ", shape)}) is not [n, width] with n, width ≥ 1");
        int bad = Array.FindIndex(values, v => !float.IsFinite(v));
        int width = (int)shape[^1];
        if (bad >= 0) throw new PolyEngineException($"{option} {spec}: vector {bad / width}, value {bad % width} is {values[bad]}; give finite numbers");
        return Enumerable.Range(0, values.Length / width).Select(i => values.AsSpan(i * width, width).ToArray()).ToArray();
    }

    static (float[], long[]) Npy(string file, string option)
    {
        var h = NpyHeader.Read(file, option, FloatDtypes, "float32 or float64, little-endian");
        if (h.Count > int.MaxValue) throw new PolyEngineException($"{option} {file}: {h.Count} values are more than one array holds");
        using var fs = File.OpenRead(FileLinks.Resolve(file));
        fs.Position = h.DataStart;
        var bytes = new byte[h.Count * h.Width];
        fs.ReadExactly(bytes);
        var values = new float[h.Count];
        for (int i = 0; i < values.Length; i++)
            values[i] = h.Width == 4 ? BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4)) : (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes.AsSpan(i * 8));
        return (values, h.Shape);
    }

    static (float[], long[]) SafeTensors(string file, string name, string option)
    {
        using var f = SafeTensorsFile.Open(file);
        if (name == "")
        {
            if (f.Tensors.Count != 1)
                throw new PolyEngineException($"{option} {file}: holds {f.Tensors.Count} tensors ({string.Join(", ", f.Tensors.Select(t => t.Name).Take(8))}); " +
                    $"name one as {file}:NAME");
            name = f.Tensors.First().Name;
        }
        else if (!f.Contains(name))
            throw new PolyEngineException($"{option} {file}: no tensor '{name}'; it holds {string.Join(", ", f.Tensors.Select(t => t.Name).Take(8))}");
        var info = f.Info(name);
        if (info.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.F64))
            throw new PolyEngineException($"{option} {file}: tensor '{name}' is {info.DType}; vectors must be floats");
        return (f.ReadFloat32(name), info.Shape);
    }
}

namespace PolyEngine;

/// <summary>Activations recorded during a pass, keyed by TransformerLens hook name.</summary>
public sealed class ActivationCache
{
    readonly SortedDictionary<HookName, Tensor> _tensors = new();

    public IEnumerable<HookName> Names => _tensors.Keys;
    public int Count => _tensors.Count;

    public Tensor this[HookName name] => _tensors.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"hook '{name}' was not recorded; request it in RunOptions.Hooks");

    public Tensor this[string name] => this[HookName.Parse(name)];

    public bool TryGet(HookName name, out Tensor tensor) => _tensors.TryGetValue(name, out tensor!);

    internal void Set(HookName name, Tensor tensor) => _tensors[name] = tensor;
}

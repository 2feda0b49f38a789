using System.Runtime.CompilerServices;
using PolyEngine.Kernels;

namespace PolyEngine.Forward;

/// <summary>
/// Device buffers kept for reuse: what a backward pass makes and frees (its per-layer gradients, the forward state it
/// reads) comes back here instead of to the allocator, so the next layer and the next call reuse memory already touched
/// — on the CPU, fresh memory costs page faults on first write, as much as the GEMMs around it. A request takes the
/// smallest free buffer of at least its size (and at most twice it), as a view when larger. A rented buffer holds
/// whatever it held: its user overwrites it whole. At most <c>maxFloats</c> are held; beyond, returns are freed.
/// Thread-safe; owned by the model's <see cref="Transformer"/> and freed with it.
/// </summary>
sealed class BufferPool(IBackend backend, long maxFloats) : IDisposable
{
    readonly List<DeviceBuffer> _free = [];
    readonly ConditionalWeakTable<DeviceBuffer, DeviceBuffer> _parentOf = [];   // a rented view → the buffer it views
    long _held;
    bool _disposed;

    /// <summary>A buffer of exactly <paramref name="n"/> floats, contents undefined.</summary>
    public DeviceBuffer Rent(long n)
    {
        lock (_free)
        {
            int best = -1;
            for (int i = 0; i < _free.Count; i++)
                if (_free[i].Length >= n && _free[i].Length <= 2 * n && (best < 0 || _free[i].Length < _free[best].Length)) best = i;
            if (best >= 0)
            {
                var parent = _free[best];
                _free.RemoveAt(best);
                _held -= parent.Length;
                if (parent.Length == n) return parent;
                var view = parent.Slice(0, n);
                _parentOf.Add(view, parent);
                return view;
            }
        }
        return backend.Allocate(n);
    }

    /// <summary>Takes a rented (or any owned) buffer back; no queued kernel may still write it after the next renter's
    /// kernels (true on one device stream, whose kernels run in order).</summary>
    public void Return(DeviceBuffer buffer)
    {
        lock (_free)
        {
            if (_parentOf.TryGetValue(buffer, out var parent)) { _parentOf.Remove(buffer); buffer = parent; }
            if (!_disposed && _held + buffer.Length <= maxFloats)
            {
                _free.Add(buffer);
                _held += buffer.Length;
                return;
            }
        }
        buffer.Dispose();
    }

    public void Dispose()
    {
        lock (_free)
        {
            _disposed = true;
            foreach (var b in _free) b.Dispose();
            _free.Clear();
            _held = 0;
        }
    }
}

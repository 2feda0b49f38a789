#!/usr/bin/env python3
"""Dense baseline for co-activation counting: what researchers do today with SAELens activations — binarise the
feature activations B [tokens, F] and accumulate C += Bᵀ·B per batch (the dense way a PyTorch user counts co-activations), on the same active sets
PolyEngine counts (`polyengine bench coactivate --write-activations FILE`). Prints tokens/s; checks a sample of the
counts against the sparse definition.

  python3 coactivate_dense.py --activations acts.safetensors --threads 2 --batch 256 [--json]
"""
import argparse, json, sys, time

import numpy as np
import torch

from safetensors_np import read_tensor


def read(path):
    active, meta = read_tensor(path, "active")
    return active, int(meta["features"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=2048, help="the dense way is slow: time this many tokens")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    active, F = read(a.activations)
    active = torch.from_numpy(active[: a.max_tokens].astype(np.int64))
    T = active.shape[0]
    C = torch.zeros(F, F, dtype=torch.float32)   # 4·F² bytes: 2.4 GB at F = 24,576
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, T, a.batch):
            idx = active[s : s + a.batch]
            B = torch.zeros(idx.shape[0], F, dtype=torch.float32)
            B.scatter_(1, idx, 1.0)
            C.addmm_(B.T, B)
    secs = time.perf_counter() - t0
    # spot check against the sparse definition
    a0, b0 = int(active[0, 0]), int(active[0, 1])
    want = sum(1 for row in active.tolist() if a0 in row and b0 in row)
    assert int(C[a0, b0].item()) == want, (C[a0, b0].item(), want)
    res = {"tokens_per_second": T / secs, "tokens": T, "features": F, "seconds": secs, "threads": a.threads, "batch": a.batch,
           "torch": torch.__version__, "dense_bytes": 4 * F * F}
    print(json.dumps(res) if a.json else f"dense BᵀB (torch {torch.__version__}): {res['tokens_per_second']:.1f} tokens/s")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PyTorch baseline for the interference scan: what a researcher writes today for the paper's decoder-cosine bins
(docs/METHOD.md §2.4) without holding F² floats — row-normalise W_dec, then per block of rows I: D = U[I] @ U[I.start:].T
(the upper triangle of blocks), mask the diagonal block to i < j, and bin: torch.histc for the 0.001 histogram and
the five bins by float32 comparisons as the authors' masks do. Reads the decoder `polyengine bench interference
--write-decoder FILE` wrote; prints pairs/s and the bin counts.

  python3 interference_torch.py --decoder dec.safetensors --threads 2 --tile 2048 [--json]
"""
import argparse, json, sys, time

import numpy as np
import torch

from safetensors_np import read_tensor


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    W = torch.from_numpy(read_tensor(a.decoder, "W_dec")[0].copy())
    F = W.shape[0]
    t0 = time.perf_counter()
    with torch.inference_mode():
        U = W / W.norm(dim=1, keepdim=True)
        fine = torch.zeros(2000, dtype=torch.float64)
        counts = torch.zeros(6, dtype=torch.int64)
        edges = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float32)   # float32 edges, as the authors' masks compare
        for i0 in range(0, F, a.tile):
            i1 = min(F, i0 + a.tile)
            D = (U[i0:i1] @ U[i0:].T).clamp_(-1, 1)              # [rows, F - i0]: the diagonal block first
            diag = D[:, : i1 - i0]
            for vals in (diag[torch.triu(torch.ones_like(diag, dtype=torch.bool), diagonal=1)], D[:, i1 - i0 :].reshape(-1)):
                if vals.numel() == 0:
                    continue
                fine += torch.histc(vals, bins=2000, min=-1, max=1).double()
                # bucket 0: negative; 1..5: [0,0.1) .. [0.4,1] (values are clamped to <= 1)
                counts += torch.bincount(torch.bucketize(vals, edges, right=True), minlength=6)
        bins = counts[1:]
    secs = time.perf_counter() - t0
    pairs = F * (F - 1) // 2
    assert int(fine.sum()) == pairs, (int(fine.sum()), pairs)
    res = {"pairs_per_second": pairs / secs, "pairs": pairs, "features": F, "d_in": W.shape[1], "seconds": secs, "threads": a.threads,
           "tile": a.tile, "torch": torch.__version__, "bins": bins.tolist(), "negative": pairs - int(bins.sum())}
    print(json.dumps(res) if a.json else f"torch {torch.__version__}: {res['pairs_per_second']:.0f} pairs/s, bins {res['bins']}")


if __name__ == "__main__":
    sys.exit(main())

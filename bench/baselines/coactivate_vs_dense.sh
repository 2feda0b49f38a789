#!/usr/bin/env bash
# PolyEngine's sparse pair counting vs the dense BᵀB way (PyTorch, OpenBLAS), on the same synthetic activations.
#   bench/baselines/coactivate_vs_dense.sh [features] [l0] [tokens] [threads]
set -euo pipefail
F=${1:-24576}; L0=${2:-50}; T=${3:-20000}; threads=${4:-2}
source "$(dirname "$0")/common.sh"
acts="$root/artifacts/coact-F$F-L$L0-T$T.safetensors"
pej=$(pe bench coactivate --features "$F" --l0 "$L0" --tokens "$T" --write-activations "$acts" --json)
pt=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/coactivate_dense.py" --activations "$acts" --threads "$threads" --json)
echo "polyengine: $pej"
echo "dense:      $pt"
/usr/bin/python3 -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(f'F {a[\"features\"]}, L0 {a[\"l0\"]}: polyengine {a[\"tokens_per_second\"]:.0f} tokens/s (1 thread), dense BtB {b[\"tokens_per_second\"]:.1f} tokens/s ({b[\"threads\"]} threads), ratio {a[\"tokens_per_second\"]/b[\"tokens_per_second\"]:.0f}x')" "$pej" "$pt"

#!/usr/bin/env bash
# PolyEngine's interference scan vs a tiled torch matmul + binning (PyTorch, OpenBLAS), on the same random decoder.
#   bench/baselines/interference_vs_torch.sh [features] [d_in] [threads] [rounds]
set -euo pipefail
F=${1:-32768}; D=${2:-768}; threads=${3:-2}; rounds=${4:-3}
source "$(dirname "$0")/common.sh"
dec="$root/artifacts/decoder-F$F-d$D.safetensors"
pe bench interference --features "$F" --d-in "$D" --threads "$threads" --write-decoder "$dec" --json >/dev/null
ratios=()
for r in $(seq "$rounds"); do   # alternate the two, report each round and the median ratio
  pej=$(pe bench interference --features "$F" --d-in "$D" --threads "$threads" --json)
  pt=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/interference_torch.py" --decoder "$dec" --threads "$threads" --json)
  ratio=$(/usr/bin/python3 -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(a['pairs_per_second']/b['pairs_per_second'])" "$pej" "$pt")
  ratios+=("$ratio")
  echo "round $r: polyengine $pej"
  echo "round $r: torch      $pt"
done
/usr/bin/python3 - "$pej" "$pt" "${ratios[@]}" <<'PY'
import json, statistics, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ratios = [float(x) for x in sys.argv[3:]]
diff = sum(abs(x - y) for x, y in zip(a["bins"], b["bins"]))
print(f"F {a['features']}, d_in {a['d_in']}, {a['threads']} threads: polyengine {a['pairs_per_second']:.3g} pairs/s, "
      f"torch {b['pairs_per_second']:.3g} pairs/s, median ratio {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
      f"bins differ by {diff} pairs of {a['pairs']} (float32 GEMMs of different summation order at the bin edges)")
PY

#!/usr/bin/env bash
# PolyEngine vs PyTorch on the same toy GPT-2-small (or Pythia-70m) weights, same thread count, one command.
#   bench/baselines/forward_vs_torch.sh [gpt2-small|pythia-70m] [threads] [batch] [seq] [iters] [rounds]
# Installs Debian's python3-torch and libopenblas0-pthread when missing (common.sh). Prints both, the ratio, and the
# max |logits difference| between the two on a short input as a parity check at the real shape.
set -euo pipefail
preset=${1:-gpt2-small}; threads=${2:-2}; batch=${3:-8}; seq=${4:-128}; iters=${5:-5}; rounds=${6:-3}
family=gpt2; [ "$preset" = pythia-70m ] && family=neox
source "$(dirname "$0")/common.sh"
model="$root/artifacts/toy-$preset-seed1"
[ -f "$model/model.safetensors" ] || { pe toy --family $family --preset "$preset" --seed 1 --out "$model" >&2; }

# Parity at the real shape: both run the same 2 × 16 ids.
ids=$(/usr/bin/python3 -c "import random; random.seed(5); print(';'.join(','.join(str(random.randrange(50000)) for _ in range(16)) for _ in range(2)))")
pe run --model "$model" --ids "$ids" --top 0 --threads "$threads" --out "$root/artifacts/parity.safetensors" >/dev/null
parity=$(/usr/bin/python3 "$root/bench/baselines/torch_forward.py" --model "$model" --check "$root/artifacts/parity.safetensors")

# Alternate the two, round after round, so host noise hits both alike; each round gives one ratio of medians.
ratios=()
for round in $(seq 1 "$rounds"); do
  pe_json=$(pe bench forward --model "$model" --batch "$batch" --seq "$seq" --iters "$iters" --threads "$threads" --device cpu --json)
  pt_json=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/torch_forward.py" --model "$model" --batch "$batch" --seq "$seq" --threads "$threads" --iters "$iters" --json)
  echo "round $round polyengine: $pe_json"
  echo "round $round torch:      $pt_json"
  ratios+=("$(/usr/bin/python3 -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(a['tokens_per_second'],b['tokens_per_second'])" "$pe_json" "$pt_json")")
done
echo "parity (max |logits_polyengine - logits_torch|): $parity"
/usr/bin/python3 - "$preset" "$batch" "$seq" "$threads" "${ratios[@]}" <<'PY'
import statistics, sys
preset, batch, seq, threads, *pairs = sys.argv[1:]
pe = [float(p.split()[0]) for p in pairs]; pt = [float(p.split()[1]) for p in pairs]
r = [a / b for a, b in zip(pe, pt)]
print(f"{preset} batch {batch} x seq {seq}, {threads} threads, {len(r)} rounds: polyengine median {statistics.median(pe):.1f} tokens/s, "
      f"torch median {statistics.median(pt):.1f} tokens/s, ratio median {statistics.median(r):.2f}x (min {min(r):.2f}x, max {max(r):.2f}x)")
PY

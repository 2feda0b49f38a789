#!/usr/bin/env bash
# PolyEngine's token-locus gradients vs PyTorch autograd on the same toy GPT-2-small weights, workload and threads.
#   bench/baselines/gradient_vs_torch.sh [threads] [rows] [positions] [seq] [rounds]
# Workload (issue #13): [rows] seeded rows of [seq] tokens, [positions] positions per row, objective Σ_d
# blocks.6.hook_mlp_out[p], each gradient with respect to the token embeddings (the TL recipe's unit). Per round:
# `polyengine bench gradient` (which writes the workload and its gradients), then gradient_torch.py in two procedures —
# paper (one forward per row, one backward per position) and batched (every vector a batch row, one forward and one
# backward) — each checking its vectors against PolyEngine's. Each side runs the workload twice after a warm-up on its
# first row: cold (memory fresh) and warm (the rate a long run sustains). Prints vectors/s of each and the ratios (median
# over rounds), warm and cold.
set -euo pipefail
threads=${1:-2}; rows=${2:-8}; positions=${3:-4}; seq=${4:-64}; rounds=${5:-3}
source "$(dirname "$0")/common.sh"
model="$root/artifacts/toy-gpt2-small-seed1"
[ -f "$model/model.safetensors" ] || { pe toy --family gpt2 --preset gpt2-small --seed 1 --out "$model" >&2; }
work="$root/artifacts/gradient-workload.safetensors"

results=()
for round in $(seq 1 "$rounds"); do
  pe_json=$(pe bench gradient --model "$model" --rows "$rows" --positions "$positions" --seq "$seq" --threads "$threads" --device cpu --write-workload "$work" --json)
  echo "round $round polyengine: $pe_json"
  line="$(/usr/bin/python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(j['vectors_per_second'], j['cold_vectors_per_second'])" "$pe_json")"
  for mode in paper batched; do
    pt_json=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/gradient_torch.py" --model "$model" --workload "$work" \
      --mode "$mode" --threads "$threads" --check --json)
    echo "round $round torch $mode: $pt_json"
    line="$line $(/usr/bin/python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(j['vectors_per_second'], j['cold_vectors_per_second'])" "$pt_json")"
  done
  results+=("$line")
done
/usr/bin/python3 - "$threads" "$rows" "$positions" "$seq" "${results[@]}" <<'PY'
import statistics, sys
threads, rows, positions, seq, *lines = sys.argv[1:]
pe, pe_cold, paper, paper_cold, batched, batched_cold = zip(*[[float(x) for x in r.split()] for r in lines])
med = statistics.median
print(f"gradient, {rows} rows x {positions} positions of {seq} tokens, sum of blocks.6.hook_mlp_out -> hook_embed, {threads} threads, {len(lines)} rounds:")
print(f"  warm: polyengine {med(pe):.1f} vectors/s | torch paper {med(paper):.1f}/s, batched {med(batched):.1f}/s")
print(f"  cold: polyengine {med(pe_cold):.1f} vectors/s | torch paper {med(paper_cold):.1f}/s, batched {med(batched_cold):.1f}/s")
for name, col, cold in [("paper", paper, paper_cold), ("batched", batched, batched_cold)]:
    r = [a / b for a, b in zip(pe, col)]
    c = [a / b for a, b in zip(pe_cold, cold)]
    print(f"  vs {name}: warm median {med(r):.2f}x (min {min(r):.2f}x, max {max(r):.2f}x); cold median {med(c):.2f}x")
PY

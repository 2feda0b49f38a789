#!/usr/bin/env bash
# PolyEngine's steering sweep vs PyTorch on the same toy GPT-2-small weights, workload and threads, one command.
#   bench/baselines/steer_vs_torch.sh [threads] [prompts] [rounds] [paper_limit] [from]
# Workload (issue #12): 7 seeded unit vectors × the paper's 32 scales added at blocks.6.hook_resid_post (every position, or
# from position [from] on, e.g. -1 for the last token) on seeded prompts of 10–16 tokens; weighted cosine, overlap and KL
# per row. Per round: `polyengine bench steer` (which writes the workload and its rows), then steer_torch.py in three
# procedures on that workload — paper (one hooked forward per intervention, batch 1, all-position logits; only the first
# [paper_limit] interventions, it is slow: the rate is what counts), batched (a prompt's 224 interventions as one batch,
# LM head at the last position) and prefix (batched, with the clean blocks 0..6 run once per prompt). Each checks its
# metrics against PolyEngine's rows. Prints the interventions/s of each and the ratios (median over rounds).
set -euo pipefail
threads=${1:-2}; prompts=${2:-8}; rounds=${3:-3}; paper_limit=${4:-64}; from=${5:-}
source "$(dirname "$0")/common.sh"
model="$root/artifacts/toy-gpt2-small-seed1"
[ -f "$model/model.safetensors" ] || { pe toy --family gpt2 --preset gpt2-small --seed 1 --out "$model" >&2; }
work="$root/artifacts/steer-workload"
from_args=(); [ -n "$from" ] && from_args=(--from "$from")
# The paper's procedure edits every position; with --from it is the same hooked forward with the edit from that position.

results=()
for round in $(seq 1 "$rounds"); do
  pe_json=$(pe bench steer --model "$model" --prompts "$prompts" --threads "$threads" --device cpu "${from_args[@]}" --write-workload "$work" --json)
  echo "round $round polyengine: $pe_json"
  line="$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['interventions_per_second'])" "$pe_json")"
  for mode in paper batched prefix; do
    limit=0; [ "$mode" = paper ] && limit=$paper_limit
    pt_json=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/steer_torch.py" --model "$model" --workload "$work" \
      --mode "$mode" --threads "$threads" --limit "$limit" --check --json)
    echo "round $round torch $mode: $pt_json"
    line="$line $(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['interventions_per_second'])" "$pt_json")"
  done
  results+=("$line")
done
/usr/bin/python3 - "$threads" "$prompts" "${from:-every}" "${results[@]}" <<'PY'
import statistics, sys
threads, prompts, frm, *rows = sys.argv[1:]
cols = list(zip(*[[float(x) for x in r.split()] for r in rows]))
pe, paper, batched, prefix = cols
med = statistics.median
print(f"steer, {prompts} prompts x 7 vectors x 32 scales at blocks.6.hook_resid_post (edited from: {frm}), {threads} threads, {len(rows)} rounds:")
print(f"  polyengine {med(pe):.1f}/s | torch paper {med(paper):.2f}/s, batched {med(batched):.1f}/s, prefix {med(prefix):.1f}/s")
for name, col in [("paper", paper), ("batched", batched), ("prefix", prefix)]:
    r = [a / b for a, b in zip(pe, col)]
    print(f"  vs {name}: median {med(r):.2f}x (min {min(r):.2f}x, max {max(r):.2f}x)")
PY

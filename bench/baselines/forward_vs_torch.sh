#!/usr/bin/env bash
# PolyEngine vs PyTorch on the same toy GPT-2-small (or Pythia-70m) weights, same thread count, one command.
#   bench/baselines/forward_vs_torch.sh [gpt2-small|pythia-70m] [threads] [batch] [seq] [iters]
# Installs Debian's python3-torch and libopenblas0-pthread when missing (without OpenBLAS torch falls back to the
# reference BLAS, ~20x slower: the comparison is against PyTorch at its best here). Prints both, the ratio, and the
# max |logits difference| between the two on a short input as a parity check at the real shape.
set -euo pipefail
preset=${1:-gpt2-small}; threads=${2:-2}; batch=${3:-8}; seq=${4:-128}; iters=${5:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
family=gpt2; [ "$preset" = pythia-70m ] && family=neox
if ! /usr/bin/python3 -c "import torch" 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
  echo "installing python3-torch and libopenblas0-pthread (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread >/dev/null
fi
blas=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu || true)
case "$blas" in *openblas*) ;; *) echo "warning: libblas.so.3 is $blas, not OpenBLAS; torch will be slow" >&2 ;; esac
dotnet build "$root/cli" -c Release -v q -nologo >/dev/null
pe() { dotnet "$root/cli/bin/Release/net10.0/PolyEngine.Cli.dll" "$@"; }
model="$root/artifacts/toy-$preset-seed1"
[ -f "$model/model.safetensors" ] || { mkdir -p "$root/artifacts"; pe toy --family $family --preset "$preset" --seed 1 --out "$model" >&2; }

# Parity at the real shape: both run the same 2 × 16 ids.
ids=$(/usr/bin/python3 -c "import random; random.seed(5); print(';'.join(','.join(str(random.randrange(50000)) for _ in range(16)) for _ in range(2)))")
pe run --model "$model" --ids "$ids" --top 0 --threads "$threads" --out "$root/artifacts/parity.safetensors" >/dev/null
parity=$(/usr/bin/python3 "$root/bench/baselines/torch_forward.py" --model "$model" --check "$root/artifacts/parity.safetensors")

# Alternate the two, twice, so host noise hits both alike; keep each side's best median.
best_pe=0; best_pt=0
for round in 1 2; do
  pe_json=$(pe bench forward --model "$model" --batch "$batch" --seq "$seq" --iters "$iters" --threads "$threads" --device cpu --json)
  pt_json=$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/baselines/torch_forward.py" --model "$model" --batch "$batch" --seq "$seq" --threads "$threads" --iters "$iters" --json)
  echo "round $round polyengine: $pe_json"
  echo "round $round torch:      $pt_json"
  best_pe=$(/usr/bin/python3 -c "import json,sys; print(max($best_pe, json.loads(sys.argv[1])['tokens_per_second']))" "$pe_json")
  best_pt=$(/usr/bin/python3 -c "import json,sys; print(max($best_pt, json.loads(sys.argv[1])['tokens_per_second']))" "$pt_json")
done
echo "parity (max |logits_polyengine - logits_torch|): $parity"
/usr/bin/python3 -c "import sys; pe, pt = float(sys.argv[1]), float(sys.argv[2]); print(f'$preset batch $batch x seq $seq, $threads threads: polyengine {pe:.1f} tokens/s, torch {pt:.1f} tokens/s, ratio {pe/pt:.2f}x')" "$best_pe" "$best_pt"

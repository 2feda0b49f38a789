#!/usr/bin/env bash
# The cost of sharding a co-activation scan on one machine: the same scan as 1 run, then as n = 2, 4, 8 shards run one
# after another plus `merge`. Each shard is its own process (model load, corpus read, its own triangle), as it would
# be on a cluster. Reported: the single run's seconds, and per n the shards' total and mean seconds, the merge's
# seconds and the overhead (Σ shards + merge) / single. With n machines the wall time is about max(shard) + merge.
# The merged outputs are checked byte for byte against the single run's.
# Usage: bench/scaling/shards.sh [model] [sae d_sae] [docs]     (defaults: toy GPT-2-small weights, d_sae 4096, 400 docs)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dotnet build "$root/cli" -c Release -v q -nologo >/dev/null
pe() { dotnet "$root/cli/bin/Release/net10.0/PolyEngine.Cli.dll" "$@"; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
model=${1:-$work/model}; dsae=${2:-4096}; docs=${3:-400}
[ -d "$model" ] || pe toy --family gpt2 --preset gpt2-small --seed 1 --out "$model" >/dev/null
pe toy-sae --model "$model" --hook blocks.6.hook_resid_post --d-sae "$dsae" --arch topk --k 32 --out "$work/sae" >/dev/null
pe toy-corpus --docs "$docs" --seed 1 --out "$work/corpus.jsonl" >/dev/null
scan=(coactivate --model "$model" --sae "$work/sae" --corpus "$work/corpus.jsonl" --top all --threads 2)
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
t0=$(now); pe "${scan[@]}" --out "$work/single" >/dev/null; t1=$(now)
single=$(calc "$t1 - $t0")
printf 'single run: %.1f s (%s docs, d_sae %s, %s)\n' "$single" "$docs" "$dsae" "$(basename "$model")"
for n in 2 4 8; do
  total=0
  for ((i = 0; i < n; i++)); do
    s0=$(now); pe "${scan[@]}" --shard "$i/$n" --out "$work/s$n/$i" >/dev/null; s1=$(now)
    total=$(calc "$total + $s1 - $s0")
  done
  m0=$(now); pe merge "$work/s$n"/* --out "$work/m$n" >/dev/null; m1=$(now)
  merge=$(calc "$m1 - $m0")
  cmp -s "$work/single/pairs.parquet" "$work/m$n/pairs.parquet" && cmp -s "$work/single/coactivation.safetensors" "$work/m$n/coactivation.safetensors" \
    || { echo "n=$n: the merged outputs differ from the single run's" >&2; exit 1; }
  printf 'n=%d: shards %.1f s in all (%.1f s each), merge %.1f s, overhead %.2fx; on n machines ~%.1f s\n' \
    "$n" "$total" "$(calc "$total / $n")" "$merge" "$(calc "($total + $merge) / $single")" "$(calc "$total / $n + $merge")"
done

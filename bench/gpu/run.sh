#!/usr/bin/env bash
# One device call for a session lent a GPU (issue #3): build, the real-device CUDA tests, the kernel checks, and
# throughput of PolyEngine's forward on the GPU against its CPU backend and PyTorch on the same GPU (eager and
# torch.compile, when the machine's python has a CUDA torch), on the same toy weights; then the steering sweep's
# interventions/s and the token-locus gradient's vectors/s on the GPU. Everything goes to $OUT
# (default ./gpu-results); summarise it in bench/RESULTS.md with the date and the device.
#   run with the device tool:  bash bench/gpu/run.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
cd "$root"
{ date -u; uname -a; nvidia-smi 2>&1 | head -n 15; } > "$OUT/machine.txt"
if ! command -v dotnet >/dev/null; then log "dotnet not found on this machine: nothing can run (carry a build, or install the SDK)"; exit 1; fi
dotnet --info > "$OUT/dotnet-info.txt" 2>&1
log "build"
dotnet build -c Release -v q -nologo > "$OUT/build.txt" 2>&1 || { log "build FAILED (see build.txt)"; exit 1; }
pe() { dotnet "$root/cli/bin/Release/net10.0/PolyEngine.Cli.dll" "$@"; }
log "devices";        pe devices 2>&1 | tee "$OUT/devices.txt"
log "kernels check";  pe kernels check 2>&1 | tee "$OUT/kernels-check.txt" | tail -n 1
log "CUDA tests (real device parity with the HF goldens; CPU vs CUDA at the GPT-2-small shape)"
dotnet test -c Release --no-build --filter "FullyQualifiedName~CudaDeviceTests|FullyQualifiedName~IlgpuBackendTests|FullyQualifiedName~SteerSweepTests|FullyQualifiedName~WindowedResumeTests|FullyQualifiedName~GradientGoldenTests|FullyQualifiedName~BackwardOpTests" \
  --logger "console;verbosity=normal" > "$OUT/cuda-tests.txt" 2>&1
grep -E "Passed!|Failed!|\[FAIL\]|\[SKIP\]" "$OUT/cuda-tests.txt" | tee -a "$OUT/summary.txt"
for preset in gpt2-small pythia-70m; do
  family=gpt2; [ "$preset" = pythia-70m ] && family=neox
  model="$root/artifacts/toy-$preset-seed1"
  [ -f "$model/model.safetensors" ] || pe toy --family $family --preset "$preset" --seed 1 --out "$model" > /dev/null
  for shape in "8 128" "32 128" "64 256"; do
    set -- $shape
    log "$preset batch $1 x seq $2"
    for attention in gemm fused; do   # attention as cuBLAS strided-batched GEMMs + softmax kernel, and the fused V1 kernel
      pe bench forward --model "$model" --device cuda --attention $attention --batch "$1" --seq "$2" --iters 10 --json 2>&1 | tee -a "$OUT/bench-$preset.jsonl"
    done
    if python3 -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      python3 bench/baselines/torch_forward.py --model "$model" --device cuda --batch "$1" --seq "$2" --iters 10 --json 2>&1 | tee -a "$OUT/bench-$preset.jsonl"
      python3 bench/baselines/torch_forward.py --model "$model" --device cuda --compile --batch "$1" --seq "$2" --iters 10 --json 2>&1 | tee -a "$OUT/bench-$preset.jsonl"
    else
      log "no CUDA PyTorch on this machine: PyTorch GPU baseline not measured"
    fi
  done
  log "$preset on the machine's CPU, batch 8 x seq 128 (same binary, for the CPU/GPU ratio)"
  pe bench forward --model "$model" --device cpu --batch 8 --seq 128 --iters 3 --json 2>&1 | tee -a "$OUT/bench-$preset.jsonl"
done
# The steering sweep (issue #12): the issue's workload (7 vectors x 32 scales at blocks.6.hook_resid_post, prompts of
# 10-16 tokens) at growing sizes; the goal is 1M interventions (4,465 prompts) in under 10 s on one H100-class GPU.
model="$root/artifacts/toy-gpt2-small-seed1"
for prompts in 64 4465; do
  log "steer $prompts prompts x 224 interventions on the GPU (every position, then the last token only)"
  pe bench steer --model "$model" --device cuda --prompts "$prompts" --json 2>&1 | tee -a "$OUT/bench-steer.jsonl"
  pe bench steer --model "$model" --device cuda --prompts "$prompts" --from -1 --json 2>&1 | tee -a "$OUT/bench-steer.jsonl"
done
# Token-locus gradients (issue #13): vectors/s of the batched backward at the GPT-2-small shape, growing batches.
for rows in 8 64 256; do
  log "gradient $rows rows x 4 positions of 64 tokens on the GPU"
  pe bench gradient --model "$model" --device cuda --rows "$rows" --json 2>&1 | tee -a "$OUT/bench-gradient.jsonl"
done
log "gradient on the machine's CPU, 8 rows (same binary)"
pe bench gradient --model "$model" --device cpu --rows 8 --json 2>&1 | tee -a "$OUT/bench-gradient.jsonl"
log "steer on the machine's CPU, 8 prompts (same binary)"
pe bench steer --model "$model" --device cpu --prompts 8 --json 2>&1 | tee -a "$OUT/bench-steer.jsonl"
log "done: results in $OUT"

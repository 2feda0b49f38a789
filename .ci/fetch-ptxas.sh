#!/usr/bin/env bash
# Fetches ptxas (NVIDIA, non-free) into .ptxas/ without installing anything: a private apt configuration built from the
# machine's own Debian sources plus the non-free component, `apt-get download nvidia-cuda-toolkit`, and only the ptxas
# binary unpacked (docs/CUDA.md §2). Never committed (.gitignore). Exit 0 with .ptxas/ptxas present, non-zero otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.ptxas"
if [ -x "$out/ptxas" ]; then echo "ptxas: cached at $out/ptxas"; exit 0; fi
src=/etc/apt/sources.list.d/debian.sources
[ -f "$src" ] || { echo "ptxas: $src not found; cannot build the private apt configuration" >&2; exit 1; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/lists/partial" "$D/cache/archives/partial" "$D/parts"
sed -E 's/^Components: (.*)$/Components: \1 non-free/' "$src" > "$D/parts/debian.sources"
O=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$D/parts" -o Dir::State::Lists="$D/lists" -o Dir::Cache="$D/cache"
   -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${O[@]}" -qq update
(cd "$D" && apt-get "${O[@]}" -qq download nvidia-cuda-toolkit)
dpkg-deb --fsys-tarfile "$D"/nvidia-cuda-toolkit_*.deb | tar -x -C "$D" ./usr/bin/ptxas
mkdir -p "$out"
mv "$D/usr/bin/ptxas" "$out/ptxas"
chmod +x "$out/ptxas"
"$out/ptxas" --version | tail -n 1

# Sourced by the comparison scripts: $root, Debian's python3-torch with OpenBLAS (installed when missing: without
# OpenBLAS torch falls back to the reference BLAS, ~20x slower, and the comparison is against torch at its best), the
# CLI built in Release, and `pe` to run it.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! /usr/bin/python3 -c "import torch" 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
  echo "installing python3-torch and libopenblas0-pthread (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread >/dev/null
fi
blas=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu || true)
case "$blas" in *openblas*) ;; *) echo "warning: libblas.so.3 is $blas, not OpenBLAS; torch will be slow" >&2 ;; esac
dotnet build "$root/cli" -c Release -v q -nologo >/dev/null
mkdir -p "$root/artifacts"
pe() { dotnet "$root/cli/bin/Release/net10.0/PolyEngine.Cli.dll" "$@"; }

#!/usr/bin/env bash
# Installs Debian's chromium (headless) for the report's browser test (tests/Cli/DemoTests.cs), which is skipped with
# its reason when chromium is absent. Nothing is downloaded at run time by PolyEngine itself; this is the test set-up.
# Exit 0 with chromium on PATH, non-zero otherwise.
set -euo pipefail
if command -v chromium >/dev/null; then echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"; exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then command -v sudo >/dev/null || { echo "chromium: not root and no sudo; cannot install" >&2; exit 1; }; SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -qq update
$SUDO apt-get -qq install -y --no-install-recommends chromium >/dev/null
echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"

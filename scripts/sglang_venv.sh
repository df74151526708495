#!/usr/bin/env bash
# Build the one SGLang side venv (default .cache/sglang-venv): SGLang's real HTTP frontend on a CPU machine,
# used (1) by the argv tests through `sglang.srt.server_args.prepare_server_args` and (2) to run
# `python -m sglang_dev.sglang_sim` (SGLang's server with a simulated scheduler, dev/sglang_dev/sglang_sim).
#
# Order matters: torch==2.13.0 first (the project's torch; SGLang declares torch 2.14.1), then the frontend's
# imports with torch held by a constraint, then sglang with --no-deps (its declared deps are the GPU stack),
# last, so pip never resolves against sglang's declared deps (no resolver ERROR block).
# No stub modules are needed: the PyPI triton (brought by torch) imports on CPU, and torchvision 0.28.0 is
# the build matching torch 2.13.0. tests/engine/test_sglang_venv.py checks both.
# Idempotent: a stamp named after the SGLang version and a hash of this script and the requirements.
#
# usage: scripts/sglang_venv.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.cache/sglang-venv}"
SGLANG_VERSION="$(sed -n 's/^SGLANG_VERSION = "\(.*\)"$/\1/p' engine/sglang_engine/protocol.py)"
[ -n "$SGLANG_VERSION" ] || { echo "SGLANG_VERSION not found in engine/sglang_engine/protocol.py" >&2; exit 1; }
TORCH_VERSION=2.13.0
KEY="$(cat scripts/sglang_venv.sh scripts/sglang_sim_requirements.txt | sha256sum | cut -c1-12)"
STAMP="$VENV/.ready-sglang-$SGLANG_VERSION-$KEY"

if [ -f "$STAMP" ]; then
    echo "$VENV ready (sglang $SGLANG_VERSION)"; exit 0
fi
started=$(date +%s)
step() { echo "[sglang-venv $(( $(date +%s) - started ))s] $*"; }
rm -f "$VENV"/.ready-* 
[ -x "$VENV/bin/python" ] || { step "creating $VENV"; python3 -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
step "torch==$TORCH_VERSION (first, pinned)"
$PIP install -q "torch==$TORCH_VERSION"
step "SGLang's frontend imports (scripts/sglang_sim_requirements.txt, torch held by a constraint)"
$PIP install -q -c "$CONSTRAINTS" -r scripts/sglang_sim_requirements.txt
step "compressed-tensors (imported by SGLang's quantization config; its own deps would move torch)"
$PIP install -q --no-deps compressed-tensors==0.18.0
step "sglang==$SGLANG_VERSION --no-deps"
$PIP install -q --no-deps "sglang==$SGLANG_VERSION"
# The project's dev tools (sglang_dev.sglang_sim) on the side venv's path, without installing their deps.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$PWD/dev" > "$SITE/sglang_operator_dev.pth"
step "checking: torch version, SGLang's parser, its HTTP server and the simulator import"
"$VENV/bin/python" - "$TORCH_VERSION" <<'PY'
import sys
import torch
assert torch.__version__.split("+")[0] == sys.argv[1], f"torch moved to {torch.__version__}"
from sglang.srt.server_args import prepare_server_args  # noqa: F401
import sglang.srt.entrypoints.http_server  # noqa: F401
import sglang_dev.sglang_sim.scheduler  # noqa: F401
print("sglang side venv: torch", torch.__version__, "| SGLang frontend and simulator importable")
PY
touch "$STAMP"
step "done"

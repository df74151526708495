#!/usr/bin/env bash
# Build a throwaway venv that can import SGLang 0.5.23's argument parser on a CPU-only machine,
# so tests can check the engine's SGLang argv with SGLang's own `prepare_server_args`.
# It is NOT a working SGLang: `--no-deps` skips the GPU stack; only what `sglang.srt.server_args`
# imports is installed, plus a stand-in `triton` module (triton has no CPU wheel we want here).
#
# usage: scripts/sglang_parser_check.sh [VENV_DIR]      (default .cache/sglang-parser-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.cache/sglang-parser-venv}"
# The version the engine targets, read from its one definition.
SGLANG_VERSION="$(sed -n 's/^SGLANG_VERSION = "\(.*\)"$/\1/p' engine/sglang_engine/protocol.py)"
[ -n "$SGLANG_VERSION" ] || { echo "SGLANG_VERSION not found in engine/sglang_engine/protocol.py" >&2; exit 1; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# Rebuilt when the version or the requirements list changes.
READY="$VENV/.ready-$SGLANG_VERSION-$(sha256sum scripts/sglang_parser_requirements.txt | cut -c1-12)"

if [ -f "$READY" ]; then
    echo "$VENV ready"; exit 0
fi
python3 -m venv "$VENV"
# torch first and pinned: a floating torch pulls a multi-GB CUDA build.
$PIP install torch==2.13.0
$PIP install --no-deps "sglang==$SGLANG_VERSION"
# What `import sglang.srt.server_args` needs beyond torch (found by trying).
$PIP install -r scripts/sglang_parser_requirements.txt
# triton has no use here; SGLang imports it at module level, so give it an inert module.
SITE="$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if ! "$VENV/bin/python" -c 'import triton' 2>/dev/null; then
    mkdir -p "$SITE/triton"
    cp scripts/triton_standin.py "$SITE/triton/__init__.py"
fi
"$VENV/bin/python" -c 'from sglang.srt.server_args import prepare_server_args; print("sglang parser importable")'
touch "$READY"

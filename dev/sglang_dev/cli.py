"""`sglang-operator dev ...`: local development tools. Nothing in the operator imports this package.

  apiserver   the Kubernetes API emulator, standalone      (sglang_dev.emulator.main)
  up|down|status|logs   the local cluster                  (sglang_dev.cluster.cli)
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "apiserver": "sglang_dev.emulator.main",
    "up": "sglang_dev.cluster.cli",
    "down": "sglang_dev.cluster.cli",
    "status": "sglang_dev.cluster.cli",
    "logs": "sglang_dev.cluster.cli",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    # apiserver takes its own flags; the cluster CLI needs to know which verb it serves.
    return int(module.main(argv[1:] if argv[0] == "apiserver" else argv) or 0)

"""`sglang-operator dev ...`: local development tools. Nothing in the operator imports this package."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "apiserver": ("sglang_dev.emulator.main", "the Kubernetes API emulator, standalone"),
    "up": ("sglang_dev.cluster.cli", "start the local cluster"),
    "down": ("sglang_dev.cluster.cli", "stop the local cluster and everything it started"),
    "status": ("sglang_dev.cluster.cli", "the local cluster's processes, models, pods and services"),
    "logs": ("sglang_dev.cluster.cli", "a pod's log or events, or a cluster component's log"),
    "hub": ("sglang_dev.hub_standin.__main__", "a local Hugging Face Hub stand-in serving the tiny model"),
}
USAGE = "\n".join([
    "usage: sglang-operator dev [-h] VERB [ARGS...]", "",
    "Development tools: a local cluster that runs engine pods as processes, and the API emulator.", "",
    "verbs:", *(f"  {verb:<11}{help_}" for verb, (_, help_) in SUBCOMMANDS.items()), "",
    "`sglang-operator dev VERB --help` describes each verb's flags.",
])


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        said = f"sglang-operator dev: unknown verb {argv[0]!r}\n" if argv else ""
        print(f"{said}{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    # apiserver and hub take their own flags; the cluster CLI needs to know which verb it serves.
    return int(module.main(argv[1:] if argv[0] in ("apiserver", "hub") else argv) or 0)

"""`sglang-operator` console script: dispatches to subcommands, importing each one lazily.

Other distributions may add subcommands through the `sglang_operator.subcommands` entry point group: the
development tools (`dev/`, distribution `sglang-operator-dev`) add `dev` (the local cluster and API emulator).
The operator itself never imports them.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

SUBCOMMANDS = {
    "run": ("sglang_operator.runner", "run the operator (kopf): reconcile SGLangModels into serving pods"),
    "render": ("sglang_operator.render", "print the children an SGLangModel becomes, without a cluster"),
}
PLUGIN_GROUP = "sglang_operator.subcommands"
DISTRIBUTION = "sglang-operator"


def _plugins() -> dict[str, object]:
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def _usage() -> str:
    lines = ["usage: sglang-operator [-h] [--version] COMMAND [ARGS...]", "",
             "Serve LLMs on Kubernetes with SGLang: the SGLangModel operator.", "", "commands:"]
    lines += [f"  {name:<8}{help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    if "dev" in _plugins():
        lines.append(f"  {'dev':<8}development tools: the local cluster and the API emulator")
    lines += ["", "options:", "  -h, --help  show this help and exit",
              "  --version   print the version and exit", "",
              "`sglang-operator COMMAND --help` describes each command's flags."]
    return "\n".join(lines)


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _dispatch(argv: list[str]) -> int:
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"sglang-operator {package_version()}")
        return 0
    if argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    plugin = _plugins().get(argv[0])
    if plugin is None:
        kind = "option" if argv[0].startswith("-") else "command"
        hint = " (install the development tools: pip install -e ./dev)" if argv[0] == "dev" else ""
        print(f"sglang-operator: unknown {kind} {argv[0]!r}{hint}; see sglang-operator --help",
              file=sys.stderr)
        return 2
    return int(plugin.load()(argv[1:]) or 0)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python's exit-time flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())

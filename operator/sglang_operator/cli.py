"""`sglang-operator` console script: dispatches to subcommands, importing each one lazily.

  run     the kopf operator                       (sglang_operator.runner)
  render  print the children of an SGLangModel    (sglang_operator.render)

Other distributions may add subcommands through the `sglang_operator.subcommands` entry point group: the
development tools (`dev/`, distribution `sglang-operator-dev`) add `dev` (the local cluster and API emulator).
The operator itself never imports them.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

SUBCOMMANDS = {
    "run": "sglang_operator.runner",
    "render": "sglang_operator.render",
}
PLUGIN_GROUP = "sglang_operator.subcommands"


def _plugin(name: str):
    for entry in entry_points(group=PLUGIN_GROUP):
        if entry.name == name:
            return entry.load()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        return int(module.main(argv[1:]) or 0)
    plugin = _plugin(argv[0])
    if plugin is None:
        hint = " (install the development tools: pip install -e ./dev)" if argv[0] == "dev" else ""
        print(f"sglang-operator: unknown command {argv[0]!r}{hint}; see sglang-operator --help",
              file=sys.stderr)
        return 2
    return int(plugin(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

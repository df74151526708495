"""`sglang-operator` console script: dispatches to subcommands, importing each one lazily.

  run     the kopf operator                       (sglang_operator.runner)
  render  print the children of an SGLangModel    (sglang_operator.render)
  dev     the local cluster and API emulator      (sglang_operator.dev.cli; the operator never imports it)
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "run": "sglang_operator.runner",
    "render": "sglang_operator.render",
    "dev": "sglang_operator.dev.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`sglang-engine` console script. `sglang-engine serve ...` (see settings.py for the flags)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        print("usage: sglang-engine serve --model MODEL [flags] [-- EXTRA_SGLANG_ARGS]", file=sys.stderr)
        return 2
    from sglang_engine.server.main import serve  # lazy: keeps `--help` fast

    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""`sglang-operator render -f model.yaml [--namespace NS]`: print the children the operator would create.

Offline (no cluster): the same parse and builders as the running operator, so GitOps reviews and schema checks
see exactly what will be applied. Reads every SGLangModel document in the file (`-f -` for stdin) and prints
multi-document YAML. An invalid spec exits 1 naming the field. The default engine image and pod defaults come
from the same env vars as `sglang-operator run` (see settings.py). ownerReferences carry the CR's
metadata.uid, which is empty for a CR that was never applied.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from sglang_operator.builders import Owner, build_children
from sglang_operator.builders.common import API_VERSION, KIND
from sglang_operator.settings import SettingsError, load_settings
from sglang_operator.spec import SpecError
from sglang_operator.tenancy import admit


class RenderError(ValueError):
    pass


def render_documents(docs: list[Any], namespace: str | None = None, settings: Any = None) -> list[dict]:
    """Children of every SGLangModel in `docs` (other kinds are skipped); raises SpecError / RenderError."""
    settings = settings or load_settings([])
    out: list[dict] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != API_VERSION:
            got = doc.get("apiVersion")
            raise RenderError(f"document {index}: apiVersion must be {API_VERSION}, got {got!r}")
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            raise RenderError(f"document {index}: metadata.name is required")
        body = {"metadata": {**meta, "namespace": namespace or meta.get("namespace") or "default"}}
        out += build_children(Owner.from_body(body), admit(doc.get("spec"), settings), settings)
    if not out:
        raise RenderError(f"no {KIND} ({API_VERSION}) document found")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sglang-operator render", description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--filename", required=True, help="SGLangModel YAML file, or - for stdin")
    parser.add_argument("-n", "--namespace",
                        help="namespace for the children (default: the CR's, else default)")
    args = parser.parse_args(argv)
    try:
        if args.filename == "-":
            docs = list(yaml.safe_load_all(sys.stdin))
        else:
            with open(args.filename) as fh:
                docs = list(yaml.safe_load_all(fh))
        children = render_documents(docs, args.namespace, load_settings([]))
    except (OSError, yaml.YAMLError, SpecError, RenderError, SettingsError) as exc:
        print(f"error: {args.filename}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(children, sort_keys=False))
    return 0

"""Label and field selectors, parsed once per request into predicates over objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

Obj = dict[str, Any]
_SET_EXPR = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    requirements = []
    for term in _split_top_level(text or ""):
        set_match = _SET_EXPR.match(term)
        if set_match:
            key, op, values = set_match.groups()
            requirements.append(
                Requirement(key, op, tuple(v.strip() for v in values.split(",") if v.strip()))
            )
        elif "!=" in term:
            key, value = term.split("!=", 1)
            requirements.append(Requirement(key.strip(), "!=", (value.strip(),)))
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            requirements.append(Requirement(key.strip(), "=", (value.strip(),)))
        elif term.startswith("!"):
            requirements.append(Requirement(term[1:].strip(), "!exists"))
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", term):
            requirements.append(Requirement(term, "exists"))
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector term {term!r}")
    return requirements


def field_value(obj: Obj, path: str) -> str:
    """The string form of a dotted field path, "" when absent (how the apiserver compares them)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """(path, equal, value) triples from `metadata.name=x,status.phase!=Running`."""
    terms = []
    for term in _split_top_level(text or ""):
        if "!=" in term:
            path, value = term.split("!=", 1)
            terms.append((path.strip(), False, value.strip()))
        elif "=" in term:
            path, value = re.split(r"==?", term, maxsplit=1)
            terms.append((path.strip(), True, value.strip()))
        else:
            raise bad_request(f"invalid field selector: {term!r}: expected key=value or key!=value")
    return terms


def label_selector_from_spec(selector: Obj | None) -> str:
    """Render a LabelSelector (matchLabels + matchExpressions) as the string form Scale.status uses."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator", "")
        values = ",".join(expr.get("values") or [])
        terms.append(
            {
                "In": f"{expr['key']} in ({values})",
                "NotIn": f"{expr['key']} notin ({values})",
                "Exists": expr["key"],
                "DoesNotExist": f"!{expr['key']}",
            }.get(op, "")
        )
    return ",".join(t for t in terms if t)


def compile_selectors(label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)

    def matches(obj: Obj) -> bool:
        obj_labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(req.matches(obj_labels) for req in labels):
            return False
        return all((field_value(obj, path) == value) == equal for path, equal, value in fields)

    return matches

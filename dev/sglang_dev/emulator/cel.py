"""A small CEL evaluator for CRD `x-kubernetes-validations` rules.

Covers the expression forms CRDs commonly use: literals, `self` field access and indexing, `has()`, `size()`,
string methods (startsWith, endsWith, contains, matches, split), list macros (all, exists, exists_one, filter,
map), arithmetic, comparisons, `in`, `!`, `&&`, `||` and `?:`; `messageExpression` too. A rule using
anything else (or `oldSelf`, whose transition rules need the previous object) is skipped rather than guessed
at; so is a rule whose evaluation errors, so the emulator never refuses what a real apiserver would accept
because of this evaluator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .errors import FieldError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?)
  | (?P<int>\d+)(?P<unsigned>[uU])?
  | (?P<string>[rR]?(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'))
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""",
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "`": "`",
}


class Unsupported(Exception):
    """The rule uses something this evaluator does not implement: skip the rule."""


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise Unsupported(f"unexpected character {text[pos]!r}")
        pos = match.end()
        kind = match.lastgroup or "ws"
        kind = "int" if kind == "unsigned" else kind
        value = match.group(kind)
        if kind == "ws":
            continue
        if kind == "string":
            raw = value[0] in "rR"
            body = value[2:-1] if raw else value[1:-1]
            tokens.append(("lit", body if raw else _unescape(body)))
        elif kind == "int":
            tokens.append(("lit", int(match.group("int"))))
        elif kind == "float":
            tokens.append(("lit", float(value)))
        elif kind == "ident" and value in ("true", "false", "null"):
            tokens.append(("lit", {"true": True, "false": False, "null": None}[value]))
        else:
            tokens.append((kind, value))
    tokens.append(("end", None))
    return tokens


# Parsing produces nested tuples: ("lit", v), ("var", name), ("get", obj, field), ("index", obj, key),
# ("call", name, target|None, [args]), ("unary", op, x), ("bin", op, a, b), ("cond", c, a, b), ("list", [..]).
_BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self, value: str | None = None) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        if value is not None and token[1] != value:
            raise Unsupported(f"expected {value!r}, got {token[1]!r}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        node = self.conditional()
        if self.peek()[0] != "end":
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return node

    def conditional(self) -> Any:
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            then = self.conditional()
            self.take(":")
            return ("cond", cond, then, self.conditional())
        return cond

    def binary(self, level: int) -> Any:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] in ("op", "ident") and self.peek()[1] in _BINARY[level]:
            op = self.take()[1]
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def unary(self) -> Any:
        if self.peek()[1] in ("!", "-") and self.peek()[0] == "op":
            op = self.take()[1]
            return ("unary", op, self.unary())
        return self.postfix(self.primary())

    def args(self) -> list[Any]:
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            args.append(self.conditional())
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return args

    def postfix(self, node: Any) -> Any:
        while True:
            value = self.peek()[1]
            if value == ".":
                self.take(".")
                name = self.take()[1]
                node = ("call", name, node, self.args()) if self.peek()[1] == "(" else ("get", node, name)
            elif value == "[":
                self.take("[")
                key = self.conditional()
                self.take("]")
                node = ("index", node, key)
            else:
                return node

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if value == "(":
            node = self.conditional()
            self.take(")")
            return node
        if value == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.conditional())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return ("list", items)
        if kind == "ident":
            if self.peek()[1] == "(":
                return ("call", value, None, self.args())
            return ("var", value)
        raise Unsupported(f"unexpected {value!r}")


def _size(value: Any) -> int:
    if isinstance(value, (str, list, dict)):
        return len(value)
    raise Unsupported("size() of a scalar")


class _Evaluator:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def eval(self, node: Any) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "var":
            if node[1] not in self.env:
                raise Unsupported(f"unknown variable {node[1]}")
            return self.env[node[1]]
        if kind == "list":
            return [self.eval(item) for item in node[1]]
        if kind == "get":
            target = self.eval(node[1])
            if not isinstance(target, dict) or node[2] not in target:
                raise Unsupported(f"no such key: {node[2]}")
            return target[node[2]]
        if kind == "index":
            target, key = self.eval(node[1]), self.eval(node[2])
            try:
                return target[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise Unsupported(f"no such key: {key}") from exc
        if kind == "unary":
            value = self.eval(node[2])
            return (not value) if node[1] == "!" else -value
        if kind == "cond":
            return self.eval(node[2]) if self.eval(node[1]) else self.eval(node[3])
        if kind == "bin":
            return self.binary(node[1], node[2], node[3])
        return self.call(node[1], node[2], node[3])

    def binary(self, op: str, left: Any, right: Any) -> Any:
        if op == "&&":  # CEL's commutative logic: short-circuit either way, as far as this needs
            return bool(self.eval(left)) and bool(self.eval(right))
        if op == "||":
            return bool(self.eval(left)) or bool(self.eval(right))
        a, b = self.eval(left), self.eval(right)
        if op == "in":
            return a in b
        if op in ("/", "%") and isinstance(a, int) and isinstance(b, int):
            if b == 0:
                raise Unsupported("division by zero")
            quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
            return quotient if op == "/" else a - quotient * b
        ops = {
            "==": lambda: a == b,
            "!=": lambda: a != b,
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
            "+": lambda: a + b,
            "-": lambda: a - b,
            "*": lambda: a * b,
            "/": lambda: a / b,
        }
        return ops[op]()

    def call(self, name: str, target_node: Any, arg_nodes: list[Any]) -> Any:
        if target_node is None:
            return self.function(name, arg_nodes)
        if name in ("all", "exists", "exists_one", "filter", "map"):
            return self.macro(name, self.eval(target_node), arg_nodes)
        target = self.eval(target_node)
        args = [self.eval(a) for a in arg_nodes]
        if name == "size":
            return _size(target)
        if isinstance(target, str) and name == "split" and len(args) == 1:  # Kubernetes' ext strings library
            return target.split(args[0])
        if isinstance(target, str) and name in ("startsWith", "endsWith", "contains", "matches"):
            if name == "matches":
                return re.search(args[0], target) is not None
            return {
                "startsWith": target.startswith,
                "endsWith": target.endswith,
                "contains": lambda s: s in target,
            }[name](args[0])
        raise Unsupported(f"method {name}")

    def function(self, name: str, arg_nodes: list[Any]) -> Any:
        if name == "has":
            [arg] = arg_nodes
            if arg[0] != "get":
                raise Unsupported("has() needs a field selection")
            target = self.eval(arg[1])
            return isinstance(target, dict) and arg[2] in target
        args = [self.eval(a) for a in arg_nodes]
        conversions: dict[str, Callable[[Any], Any]] = {
            "size": _size,
            "int": int,
            "double": float,
            "string": str,
        }
        if name in conversions and len(args) == 1:
            return conversions[name](args[0])
        raise Unsupported(f"function {name}")

    def macro(self, name: str, target: Any, arg_nodes: list[Any]) -> Any:
        if len(arg_nodes) != 2 or arg_nodes[0][0] != "var":
            raise Unsupported(f"{name}() form")
        var, body = arg_nodes[0][1], arg_nodes[1]
        items = list(target.keys()) if isinstance(target, dict) else list(target)
        results = [(item, _Evaluator({**self.env, var: item}).eval(body)) for item in items]
        if name == "all":
            return all(r for _, r in results)
        if name == "exists":
            return any(r for _, r in results)
        if name == "exists_one":
            return sum(1 for _, r in results if r) == 1
        if name == "filter":
            return [item for item, r in results if r]
        return [r for _, r in results]


def evaluate(rule: str, value: Any) -> Any:
    """Evaluate `rule` with `self` bound to `value`; raises Unsupported for what is not covered."""
    if "oldSelf" in rule:
        raise Unsupported("transition rules (oldSelf)")
    return _Evaluator({"self": value}).eval(_Parser(rule).parse())


_REASON_PREFIX = {
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


def _message(rule: dict[str, Any], value: Any) -> str:
    """The rule's messageExpression evaluated on the value; its static message when that fails (as the
    apiserver does), or the rule itself when there is neither."""
    if rule.get("messageExpression"):
        try:
            message = evaluate(rule["messageExpression"], value)
        except (Unsupported, TypeError, ValueError, IndexError, KeyError, re.error, ZeroDivisionError):
            message = None
        if isinstance(message, str) and message.strip():
            return message
    return rule.get("message") or f"failed rule: {rule.get('rule', '').strip()}"


def _shown(value: Any) -> str:
    """The bad value as kube-apiserver prints it for a failed rule: a scalar Go-style (strings quoted),
    nothing for an object or an array (k8s.io/apiextensions-apiserver schema/cel: field.OmitValueType)."""
    if isinstance(value, bool):
        return f"Invalid value: {str(value).lower()}: "
    if isinstance(value, (int, float)):
        return f"Invalid value: {value}: "
    if isinstance(value, str):
        return f"Invalid value: {json.dumps(value, ensure_ascii=False)}: "
    return "Invalid value: "


def _failure(path: str, rule: dict[str, Any], value: Any) -> FieldError:
    message = _message(rule, value)
    reason = rule.get("reason") or "FieldValueInvalid"
    where = path + (rule.get("fieldPath") or "") if path else (rule.get("fieldPath") or "").lstrip(".")
    if reason in _REASON_PREFIX:
        return FieldError(where or "<root>", f"{_REASON_PREFIX[reason]}: {message}", reason)
    return FieldError(where or "<root>", f"{_shown(value)}{message}", reason)


def validate(value: Any, schema: dict[str, Any] | None, path: str = "") -> list[FieldError]:
    """Every failing `x-kubernetes-validations` rule under `schema`, as field errors."""
    if not schema or value is None:
        return []
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            passed = evaluate(rule.get("rule", ""), value)
        except (Unsupported, TypeError, ValueError, re.error, ZeroDivisionError):
            continue
        if passed is False:
            errors.append(_failure(path, rule, value))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            child = f"{path}.{name}" if path else name
            if name in props:
                errors += validate(item, props[name], child)
            elif isinstance(extra, dict):
                errors += validate(item, extra, child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{n}]")
    return errors

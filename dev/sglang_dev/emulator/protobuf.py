"""Decode the Kubernetes protobuf bodies that kubectl's typed commands send, for a few simple kinds.

`kubectl create namespace|configmap|secret|serviceaccount` post `application/vnd.kubernetes.protobuf`
with no JSON fallback, and so does helm for its release Secrets (and their DeleteOptions). The envelope
is `k8s\\0` + runtime.Unknown{typeMeta, raw}; `raw` is the kind's generated message. Field numbers below
come from k8s.io/api's generated.proto for those kinds.
Anything else is refused with 415 and a hint to use `kubectl apply -f` (which sends JSON).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"


class Undecodable(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise Undecodable("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):  # fixed 64/32: not used by these kinds, skipped
            pos += 8 if wire == 1 else 4
        else:
            raise Undecodable(f"unsupported wire type {wire}")


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return value.decode()


def _entry(value: int | bytes, decode_value: Callable[[bytes], Any]) -> tuple[str, Any]:
    assert isinstance(value, bytes)
    parts = dict(fields(value))
    raw = parts.get(2, b"")
    return _text(parts.get(1, b"")), decode_value(raw if isinstance(raw, bytes) else b"")


def _time(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    seconds = dict(fields(value)).get(1, 0)
    assert isinstance(seconds, int)
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _owner_reference(value: int | bytes) -> dict[str, Any]:
    assert isinstance(value, bytes)
    names = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}
    flags = {6: "controller", 7: "blockOwnerDeletion"}
    ref: dict[str, Any] = {}
    for number, item in fields(value):
        if number in names:
            ref[names[number]] = _text(item)
        elif number in flags:
            ref[flags[number]] = bool(item)
    return ref


def object_meta(data: bytes) -> dict[str, Any]:
    strings = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    meta: dict[str, Any] = {}
    for number, value in fields(data):
        if number in strings and value:  # proto2 sends empty optionals: JSON omits them
            meta[strings[number]] = _text(value)
        elif number == 7 and value:
            meta["generation"] = value
        elif number == 8:
            meta["creationTimestamp"] = _time(value)
        elif number in (11, 12):
            key, item = _entry(value, bytes.decode)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = item
        elif number == 13:
            meta.setdefault("ownerReferences", []).append(_owner_reference(value))
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def _map_into(obj: dict[str, Any], name: str, value: int | bytes, decode: Callable[[bytes], Any]) -> None:
    key, item = _entry(value, decode)
    obj.setdefault(name, {})[key] = item


def _configmap(obj: dict[str, Any], number: int, value: int | bytes) -> None:
    if number in (2, 3):
        _map_into(obj, "data" if number == 2 else "binaryData", value, bytes.decode if number == 2 else _b64)
    elif number == 4:
        obj["immutable"] = bool(value)


def _secret(obj: dict[str, Any], number: int, value: int | bytes) -> None:
    if number in (2, 4):
        _map_into(obj, "data" if number == 2 else "stringData", value, _b64 if number == 2 else bytes.decode)
    elif number == 3 and value:
        obj["type"] = _text(value)
    elif number == 5:
        obj["immutable"] = bool(value)


def _namespace(obj: dict[str, Any], number: int, value: int | bytes) -> None:
    if number == 2:
        assert isinstance(value, bytes)
        finalizers = [_text(v) for n, v in fields(value) if n == 1]
        if finalizers:
            obj["spec"] = {"finalizers": finalizers}


def _serviceaccount(obj: dict[str, Any], number: int, value: int | bytes) -> None:
    if number == 3:
        assert isinstance(value, bytes)
        name = dict(fields(value)).get(1, b"")
        obj.setdefault("imagePullSecrets", []).append({"name": _text(name)})
    elif number == 4:
        obj["automountServiceAccountToken"] = bool(value)


def _delete_options(obj: dict[str, Any], number: int, value: int | bytes) -> None:
    if number == 1 and isinstance(value, int):
        obj["gracePeriodSeconds"] = value
    elif number == 2 and isinstance(value, bytes):
        names = {1: "uid", 2: "resourceVersion"}
        obj["preconditions"] = {names[n]: _text(v) for n, v in fields(value) if n in names}
    elif number == 3:
        obj["orphanDependents"] = bool(value)
    elif number == 4:
        obj["propagationPolicy"] = _text(value)
    elif number == 5:
        obj.setdefault("dryRun", []).append(_text(value))


KINDS: dict[str, Callable[[dict[str, Any], int, int | bytes], None]] = {
    "DeleteOptions": _delete_options,
    "ConfigMap": _configmap,
    "Secret": _secret,
    "Namespace": _namespace,
    "ServiceAccount": _serviceaccount,
}


def decode(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object of a protobuf request body; Undecodable for kinds not covered."""
    if not body.startswith(MAGIC):
        raise Undecodable("not a Kubernetes protobuf body (missing the k8s\\0 prefix)")
    envelope = dict(fields(body[len(MAGIC) :]))
    type_meta = envelope.get(1, b"")
    raw = envelope.get(2, b"")
    if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
        raise Undecodable("malformed envelope")
    tm = {n: _text(v) for n, v in fields(type_meta)}
    kind = tm.get(2, "")
    if kind not in KINDS:
        raise Undecodable(
            f"protobuf bodies are understood for {', '.join(sorted(KINDS))} only, not {kind!r}: "
            "send JSON instead (e.g. `kubectl apply -f`)"
        )
    obj: dict[str, Any] = {"apiVersion": tm.get(1, "v1"), "kind": kind}
    for number, value in fields(raw):
        if number == 1 and kind != "DeleteOptions":
            assert isinstance(value, bytes)
            obj["metadata"] = object_meta(value)
        else:
            KINDS[kind](obj, number, value)
    return obj

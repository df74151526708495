"""The pydantic spec and the CRD schema agree field by field: names, types, required, enums, defaults,
bounds."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from sglang_operator.spec import ModelSpec

SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return tp


def _is_int_or_string(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType) and set(get_args(tp)) == {int, str}


def _bounds(field_metadata: list, schema: dict, path: str, kind: str) -> None:
    expect: dict[str, Any] = {}
    for m in field_metadata:
        if isinstance(m, at.Ge):
            expect["minimum"] = m.ge
        elif isinstance(m, at.Gt):
            expect.update(minimum=m.gt, exclusiveMinimum=True)
        elif isinstance(m, at.Le):
            expect["maximum"] = m.le
        elif isinstance(m, at.Lt):
            expect.update(maximum=m.lt, exclusiveMaximum=True)
        elif isinstance(m, at.MinLen):
            expect["minItems" if kind == "array" else "minLength"] = m.min_length
        elif isinstance(m, at.MaxLen):
            expect["maxItems" if kind == "array" else "maxLength"] = m.max_length
        elif getattr(m, "pattern", None):
            expect["pattern"] = m.pattern
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
            "minItems", "maxItems", "pattern")
    actual = {k: schema[k] for k in keys if k in schema}
    assert actual == expect, f"{path}: schema bounds {actual} != model bounds {expect}"


def _compare_type(tp: Any, schema: dict, path: str) -> None:
    tp = _strip_optional(tp)
    if _is_int_or_string(tp):
        assert schema.get("x-kubernetes-int-or-string") is True, f"{path}: expected int-or-string"
        return
    if get_origin(tp) is Literal:
        assert schema["type"] == "string", path
        assert set(schema["enum"]) == set(get_args(tp)), f"{path}: enum differs"
        return
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        assert schema["type"] == "object", path
        _compare_model(tp, schema, path)
        return
    if get_origin(tp) is tuple:
        assert schema["type"] == "array", path
        _compare_type(get_args(tp)[0], schema["items"], f"{path}[]")
        return
    if get_origin(tp) is dict:
        assert schema["type"] == "object", path
        value = get_args(tp)[1]
        if value is Any:
            assert schema.get("x-kubernetes-preserve-unknown-fields") is True, f"{path}: expected free-form"
        else:
            _compare_type(value, schema["additionalProperties"], f"{path}{{}}")
        return
    assert schema.get("type") == SCALARS[tp], f"{path}: schema {schema.get('type')} != model {tp}"


def _compare_model(model: type[BaseModel], schema: dict, path: str) -> None:
    props = schema.get("properties", {})
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    assert set(props) == set(fields), f"{path}: schema-only {set(props) - set(fields)}, " \
                                      f"model-only {set(fields) - set(props)}"
    required = {alias for alias, f in fields.items() if f.is_required()}
    assert set(schema.get("required", [])) == required, f"{path}: required differs"
    for alias, field in fields.items():
        sub, where = props[alias], f"{path}.{alias}"
        assert sub.get("description"), f"{where}: no description"
        _compare_type(field.annotation, sub, where)
        _bounds(field.metadata, sub, where, sub.get("type", ""))
        default = None if field.default is PydanticUndefined else field.default
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            default = default.model_dump(by_alias=True, exclude_defaults=True)
        if default in ((), None, {}) or (default is False and "default" not in sub):
            assert "default" not in sub or sub["default"] == default, f"{where}: default only in schema"
        else:
            assert sub.get("default") == default, f"{where}: default {sub.get('default')!r} != {default!r}"


def test_the_typed_spec_and_the_crd_schema_agree(crd_schema):
    _compare_model(ModelSpec, crd_schema["properties"]["spec"], "spec")


def _walk(schema: dict, path: str):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")


def test_every_field_is_described_and_structural(crd_schema):
    for path, node in _walk(crd_schema, ""):
        if path.endswith(".metadata") or path in ("",):
            continue
        assert node.get("description") or path.count(".") == 0, f"{path}: no description"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type (not structural)"


def test_names_subresources_and_printer_columns(crd):
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("serving.sglang-operator.io", "Namespaced")
    assert spec["names"]["kind"] == "SGLangModel" and spec["names"]["shortNames"] == ["sgm"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                                 "statusReplicasPath": ".status.replicas",
                                                 "labelSelectorPath": ".status.selector"}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Model", "TP", "Ready", "Phase", "Progress", "Reason", "Age"]
    adapters = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["loraAdapters"]
    assert adapters["x-kubernetes-list-type"] == "map" and adapters["x-kubernetes-list-map-keys"] == ["name"]


@pytest.mark.parametrize("version", ["1.30.0", "1.35.0"])
def test_the_crd_itself_is_a_valid_apiextensions_object(crd, version):
    import kubernetes_validate

    kubernetes_validate.validate(crd, version, strict=True)

"""CRD schema semantics: defaulting, pruning (or strict refusal) and validation messages naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import DEFAULT, STRICT, fresh_api, rt, widget
from sglang_dev.emulator import schema
from sglang_dev.emulator.errors import ApiError


def refused(spec_overrides, opts=DEFAULT) -> ApiError:
    api = fresh_api()
    with pytest.raises(ApiError) as err:
        api.create(rt(api, "example.dev/v1alpha1", "widgets"), "default", widget(**spec_overrides), opts)
    return err.value


def test_defaults_fill_absent_fields_including_list_items():
    api = fresh_api()
    obj = api.create(
        rt(api, "example.dev/v1alpha1", "widgets"), "default", widget(parts=[{"name": "p"}]), DEFAULT
    ).obj
    assert obj["spec"] == {
        "model": "m",
        "size": 1,
        "replicas": 1,
        "mode": "fast",
        "parts": [{"name": "p", "weight": 10}],
    }


def test_unknown_fields_are_pruned_or_refused_when_strict():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    result = api.create(widgets, "default", widget(bogus=1, extra={"anything": {"goes": 1}}), DEFAULT)
    assert "bogus" not in result.obj["spec"] and result.obj["spec"]["extra"] == {"anything": {"goes": 1}}
    assert result.warnings == ['unknown field "spec.bogus"']
    err = refused({"bogus": 1}, STRICT)
    assert err.code == 400 and 'strict decoding error: unknown field "spec.bogus"' in err.message


# The same cases run against the real kube-apiserver in tests/real/test_crd_real.py.
REFUSALS_FILE = Path(__file__).parent / "data" / "widget_refusals.yaml"
WIDGET_REFUSALS = yaml.safe_load(REFUSALS_FILE.read_text())["refused"]


@pytest.mark.parametrize(("spec", "expected"), [(c["spec"], c["expected"]) for c in WIDGET_REFUSALS])
def test_validation_errors_name_the_field(spec, expected):
    err = refused(spec)
    assert err.code == 422 and err.reason == "Invalid"
    assert expected in err.message
    assert err.message.startswith('Widget.example.dev "w1" is invalid: ')
    assert err.details["causes"][0]["field"] == expected.split(":")[0]


def test_required_top_level_field():
    api = fresh_api()
    with pytest.raises(ApiError) as err:
        api.create(
            rt(api, "example.dev/v1alpha1", "widgets"),
            "default",
            {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}},
            DEFAULT,
        )
    assert "spec.model: Required value" in err.value.message


def test_prune_keeps_preserved_and_additional_properties():
    s = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "additionalProperties": {"type": "string"}},
            "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    value = {"a": {"k": "v"}, "b": {"x": 1}, "c": 2}
    assert schema.prune(value, s) == ["c"]
    assert value == {"a": {"k": "v"}, "b": {"x": 1}}


@pytest.mark.parametrize(
    ("value", "fails"),
    [
        ({"a": 1}, None),
        ({"b": 1}, None),
        ({}, "must validate one and only one schema (oneOf)"),
        ({"a": 1, "b": 1}, "must validate one and only one schema (oneOf)"),
        ({"a": 1, "c": 1}, "must not validate the schema (not)"),
        ({"a": "x"}, "must match at least one schema (anyOf)"),
    ],
)
def test_schema_combinators(value, fails):
    s = {
        "type": "object",
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "not": {"required": ["c"]},
        "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}},
    }
    messages = [e.message for e in schema.validate(value, s)]
    assert (fails is None and messages == []) or any(fails in m for m in messages), messages


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-01-02T03:04:05Z", True),
        ("2026-01-02T03:04:05.123456+00:00", True),
        ("2026-01-02 03:04", False),
        ("yesterday", False),
    ],
)
def test_date_time_format(value, ok):
    errors = schema.validate(value, {"type": "string", "format": "date-time"}, "t")
    assert (errors == []) is ok
    if not ok:
        assert (
            errors[0].render()
            == f't: Invalid value: "{value}": t in body must be of type date-time: "{value}"'
        )


def test_status_writes_are_validated_and_pruned():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    body = json.dumps({"status": {"replicas": "two"}}).encode()
    with pytest.raises(ApiError) as err:
        api.patch(widgets, "default", "w1", "status", "application/merge-patch+json", body, DEFAULT)
    assert "status.replicas: Invalid value" in err.value.message
    body = json.dumps({"status": {"phase": "Ready", "unknown": 1}}).encode()
    stored = api.patch(widgets, "default", "w1", "status", "application/merge-patch+json", body, DEFAULT).obj
    assert stored["status"] == {"phase": "Ready"}


def test_validation_ratchets_errors_the_stored_object_already_had():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)

    def slip_past_the_schema(obj):  # as if the schema had been stricter when the object was written
        obj["spec"]["size"] = 0

    slip_past_the_schema(api.store.get(widgets.key, "default", "w1"))
    merge = "application/merge-patch+json"
    status = api.patch(
        widgets, "default", "w1", "status", merge, b'{"status": {"phase": "Invalid"}}', DEFAULT
    )
    assert status.obj["status"]["phase"] == "Invalid"  # the unchanged invalid spec does not block status
    labelled = api.patch(
        widgets, "default", "w1", None, merge, b'{"metadata": {"labels": {"a": "b"}}}', DEFAULT
    )
    assert labelled.obj["metadata"]["labels"] == {"a": "b"}
    with pytest.raises(ApiError) as err:  # but a new invalid value is refused
        api.patch(widgets, "default", "w1", None, merge, b'{"spec": {"size": -1}}', DEFAULT)
    assert "spec.size: Invalid value: -1" in err.value.message

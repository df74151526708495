"""CEL validation rules: the evaluator on its own, then rules refusing objects with the field named."""

from __future__ import annotations

import pytest
from helpers import DEFAULT, fresh_api, rt, widget
from sglang_dev.emulator import cel
from sglang_dev.emulator.errors import ApiError


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("self != 0", 0, False),
        ("self.size() <= 2 && size(self) >= 1", "ab", True),
        ("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]+/.+$')", "pvc://Claim/x", False),
        ("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]+/.+$')", "hf/model", True),
        (r"!self.matches('(^|/)\\.\\.(/|$)')", "a/../b", False),
        ("!has(self.a) || !has(self.b) || self.a <= self.b", {"a": 5, "b": 3}, False),
        ("!has(self.a) || !has(self.b) || self.a <= self.b", {"a": 5}, True),
        ("!(has(self.limits) && 'nvidia.com/gpu' in self.limits)", {"limits": {"nvidia.com/gpu": 1}}, False),
        ("self.all(x, x.w > 0) && self.exists_one(x, x.w == 2)", [{"w": 1}, {"w": 2}], True),
        ("self.filter(x, x > 1).size() == 2 ? self.map(x, x * 2)[0] == 2 : false", [1, 2, 3], True),
        ("-7 / 2 == -3 && -7 % 2 == -1 && 1.5 * 2.0 == 3.0", None, True),
        ("'a' + \"b\" == 'ab' && [1, 2] == [1, 2] && 2 in [1, 2]", None, True),
    ],
)
def test_evaluator(rule, value, expected):
    assert cel.evaluate(rule, value) is expected


@pytest.mark.parametrize("rule", ["self.x == oldSelf.x", "self.foo()", "timestamp(self) > 0"])
def test_unsupported_rules_are_reported_as_such(rule):
    with pytest.raises(cel.Unsupported):
        cel.evaluate(rule, {"x": 1})


def test_unsupported_or_erroring_rules_never_refuse():
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.x == oldSelf.x"}, {"rule": "self.missing > 1"}],
    }
    assert cel.validate({"x": 1}, schema) == []


def test_failing_rules_refuse_the_object_naming_the_field():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    with pytest.raises(ApiError) as err:
        api.create(widgets, "default", widget(flags=["--verbose", "--size=3"], servedName="-x"), DEFAULT)
    message = err.value.message
    # As kube-apiserver words them: no value shown for an object or an array (k8s v1.37).
    assert "spec.flags: Invalid value: flags must not set --size or --mode" in message
    assert "spec.servedName: Invalid value: servedName must not start with a dash" in message
    assert api.create(widgets, "default", widget(flags=["--verbose"], servedName="x"), DEFAULT).code == 201


def test_message_expressions_name_the_value_and_fall_back_to_the_message():
    schema = {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
        {"rule": "!self.startsWith('--size')", "message": "static",
         "messageExpression": "self.split('=')[0] + ' is not allowed'"},
        {"rule": "self != '--x'", "message": "static fallback", "messageExpression": "self.nope()"}]}}
    errors = cel.validate(["--verbose", "--size=3", "--x"], schema, "spec.flags")
    assert [(e.field, e.message) for e in errors] == [
        ("spec.flags[1]", 'Invalid value: "--size=3": --size is not allowed'),
        ("spec.flags[2]", 'Invalid value: "--x": static fallback')]

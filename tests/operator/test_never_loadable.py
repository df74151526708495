"""Specs that can never work are refused at apply, naming the field: by the CRD's CEL rules (here through the
API emulator, which evaluates them) and by the operator's typed spec, with the same words.

The cases live in tests/data/never_loadable.yaml so a real kube-apiserver test can run the same list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sglang_dev.emulator import Emulator, install_crds
from sglang_dev.emulator.api import WriteOptions
from sglang_dev.emulator.errors import ApiError
from sglang_engine import protocol
from sglang_operator.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((ROOT / "tests" / "data" / "never_loadable.yaml").read_text())
CRD = ROOT / "crds" / "sglangmodels.serving.sglang-operator.io.yaml"


def _create(spec: dict[str, Any]) -> None:
    emulator = Emulator()
    install_crds(emulator, [yaml.safe_load(CRD.read_text())])
    api = emulator.api
    sgm = api.store.resource("serving.sglang-operator.io", "v1alpha1", "sglangmodels")
    assert sgm is not None
    body = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
            "metadata": {"name": "m"}, "spec": spec}
    api.create(sgm, "default", body, WriteOptions())


@pytest.mark.parametrize("case", CASES["refused"], ids=lambda c: c["case"])
def test_the_typed_spec_refuses_naming_the_field(case):
    with pytest.raises(SpecError) as err:
        parse_spec(case["spec"])
    assert err.value.field.startswith(case["field"]), err.value
    assert case["message"] in err.value.message


@pytest.mark.parametrize("case", CASES["refused"], ids=lambda c: c["case"])
def test_the_crd_refuses_at_apply_naming_the_field(case):
    with pytest.raises(ApiError) as err:
        _create(case["spec"])
    assert err.value.code == 422
    assert f'{case["field"]}: Invalid value: ' in err.value.message, err.value.message
    assert case["message"] in err.value.message, err.value.message


@pytest.mark.parametrize("spec", CASES["accepted"], ids=lambda s: s["model"])
def test_loadable_specs_pass_both(spec):
    parse_spec(spec)
    _create(spec)


def test_the_crd_rules_use_the_shared_source_patterns(crd_schema):
    """The CEL rules and the engine/operator's source_problem are one rule: the same pattern strings."""
    spec = crd_schema["properties"]["spec"]
    model_rules = " ".join(r["rule"] for r in spec["properties"]["model"]["x-kubernetes-validations"])
    adapter_rules = " ".join(r["rule"] for r in spec["properties"]["loraAdapters"]["items"]["properties"][
        "source"]["x-kubernetes-validations"])
    assert f"'{protocol.HUB_MODEL_PATTERN}'" in model_rules
    assert f"'{protocol.PVC_SOURCE_PATTERN}'" in model_rules
    for pattern in (protocol.HUB_ADAPTER_PATTERN, protocol.TINY_LORA_PATTERN, protocol.PVC_SOURCE_PATTERN):
        assert f"'{pattern}'" in adapter_rules
    assert f"'{protocol.TINY_MODEL_SOURCE}'" in model_rules

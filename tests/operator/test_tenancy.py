"""Tenancy allowlists (settings.tenancy, chart values tenancy.*): a CR choosing an image, priority class,
Secret or toleration the admin did not allow is refused naming the field; the operator's own defaults are
not checked; through the running operator nothing is applied and SpecValid says what to fix."""

from __future__ import annotations

import json

import pytest
from sglang_operator.render import render_documents
from sglang_operator.settings import SettingsError, Tenancy, load_settings
from sglang_operator.spec import SpecError
from sglang_operator.tenancy import NotAllowed, admit
from sgm_testlib import FakeEngine, client, eventually, model, running_operator

TENANCY = {"images": ["registry.example.com/*", "ghcr.io/sglang-operator/sglang-engine:*"],
           "priorityClasses": ["llm-*"], "secretNames": ["hf-*", "llm-*"],
           "tolerationKeys": ["nvidia.com/gpu"]}
SETTINGS = load_settings([], {"SGLANG_OPERATOR_TENANCY": json.dumps(TENANCY),
                              "SGLANG_OPERATOR_POD_DEFAULTS": json.dumps(
                                  {"priorityClassName": "system-cluster-critical",
                                   "tolerations": [{"operator": "Exists"}]})})
BASE = {"model": "org/m"}


def refused(spec: dict, settings=SETTINGS) -> NotAllowed:
    with pytest.raises(NotAllowed) as err:
        admit({**BASE, **spec}, settings)
    return err.value


@pytest.mark.parametrize(("spec", "field", "value"), [
    ({"image": "docker.io/evil/miner:1"}, "spec.image", "docker.io/evil/miner:1"),
    ({"image": "registry.example.com.evil.io/x:1"}, "spec.image", "registry.example.com.evil.io/x:1"),
    ({"priorityClassName": "system-node-critical"}, "spec.priorityClassName", "system-node-critical"),
    ({"env": [{"name": "A", "value": "1"},
              {"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "db-admin", "key": "password"}}}]},
     "spec.env[1].valueFrom.secretKeyRef.name", "db-admin"),
    ({"hfTokenSecret": {"name": "someone-elses-token"}}, "spec.hfTokenSecret.name", "someone-elses-token"),
    ({"apiKeySecret": {"name": "tls-key"}}, "spec.apiKeySecret.name", "tls-key"),
    ({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]},
     "spec.tolerations[0].key", "node-role.kubernetes.io/control-plane"),
])
def test_a_choice_outside_the_allowlist_is_refused_naming_field_value_and_what_is_allowed(spec, field,
                                                                                           value):
    err = refused(spec)
    assert err.field == field and repr(value) in err.message, err
    assert "tenancy." in err.message and "ask the cluster admin" in err.message
    assert isinstance(err, SpecError) and err.reason == "NotAllowed"


def test_a_toleration_of_every_taint_is_refused_when_taint_keys_are_listed():
    err = refused({"tolerations": [{"operator": "Exists"}]})
    assert err.field == "spec.tolerations[0].key" and "every taint" in err.message


def test_allowed_choices_pass_and_the_operators_own_defaults_are_not_checked():
    spec = admit({**BASE, "image": "registry.example.com/team/engine@sha256:" + "a" * 64,
                  "priorityClassName": "llm-high",
                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                  "hfTokenSecret": {"name": "hf-token"}, "apiKeySecret": {"name": "llm-key"},
                  "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                          {"name": "K", "valueFrom": {"secretKeyRef": {"name": "llm-extra", "key": "k"}}}]},
                 SETTINGS)
    assert spec.priority_class_name == "llm-high"
    # No image, priority class or tolerations in the CR: the admin's defaults apply, even outside the lists.
    docs = render_documents([model("m", BASE)], settings=SETTINGS)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_empty_lists_allow_anything():
    anything = {"image": "docker.io/any/thing:1", "priorityClassName": "x",
                "tolerations": [{"operator": "Exists"}], "hfTokenSecret": {"name": "whatever"}}
    assert admit({**BASE, **anything}, load_settings([], {})).image == "docker.io/any/thing:1"
    assert Tenancy() == load_settings([], {}).tenancy


def test_render_refuses_what_the_operator_would():
    with pytest.raises(NotAllowed, match=r"spec\.image"):
        render_documents([model("m", {**BASE, "image": "docker.io/evil/miner:1"})], settings=SETTINGS)


def test_bad_tenancy_settings_name_the_variable():
    with pytest.raises(SettingsError, match=r"SGLANG_OPERATOR_TENANCY.*imagez"):
        load_settings([], {"SGLANG_OPERATOR_TENANCY": json.dumps({"imagez": ["x"]})})
    with pytest.raises(SettingsError, match="SGLANG_OPERATOR_TENANCY"):
        load_settings([], {"SGLANG_OPERATOR_TENANCY": json.dumps({"images": [""]})})
    assert load_settings(["--tenancy", json.dumps({"images": ["a/*"]})], {}).tenancy.images == ("a/*",)


@pytest.mark.timeout(90)
async def test_the_running_operator_applies_nothing_and_says_what_to_fix(emulator):
    async with FakeEngine().serve() as engine, running_operator(
            emulator.url, engine.port, tenancy=Tenancy.model_validate(TENANCY)), client(emulator.url) as api:
        await api.create(model("ok", {**BASE, "backend": "transformers"}))
        await eventually(lambda: api.get("Deployment", "default", "ok"), what="an allowed model's Deployment")
        stolen = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db-admin"}}}]
        await api.create(model("bad", {**BASE, "backend": "transformers", "env": stolen}))

        async def refused_status():
            cr = await api.get("SGLangModel", "default", "bad")
            conds = {c["type"]: c for c in (cr.get("status") or {}).get("conditions") or []}
            return conds if conds.get("SpecValid", {}).get("status") == "False" else None

        conds = await eventually(refused_status, what="SpecValid=False")
        assert conds["SpecValid"]["reason"] == "NotAllowed"
        assert conds["SpecValid"]["message"].startswith(
            "spec.env[0].valueFrom.secretKeyRef.name: Secret 'db-admin'")
        assert conds["Degraded"]["status"] == "True"
        for kind in ("Deployment", "ConfigMap", "Service", "NetworkPolicy"):
            assert await api.get(kind, "default", "bad") is None, kind
        events = emulator.list("v1", "events", "default") or []
        assert "SpecNotAllowed" in {e.get("reason") for e in events}

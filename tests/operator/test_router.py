"""spec.router: the spec's policies are SMG's own, the router's children (pure builders), the Service's
switch between router and engines, and Ready held back until SMG's /readiness reports engines (a real SMG
serves engines in tests/engine/test_smg_worker.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from sglang_operator import labels
from sglang_operator.builders import Owner, build_children, child_key
from sglang_operator.builders.router import DISCOVERY_RULES
from sglang_operator.settings import load_settings
from sglang_operator.spec import SMG_POLICIES, SpecError, parse_spec
from sglang_operator.status import RouterView, compute_status
from test_status import observe

OWNER = Owner(name="qwen", namespace="ml", uid="uid-1")
SETTINGS = load_settings([], {})
TINY = {"model": "builtin:tiny", "backend": "transformers", "replicas": 2}


def children(spec: dict) -> dict[str, dict]:
    return {child_key(c): c for c in build_children(OWNER, parse_spec(spec), SETTINGS)}


def test_policies_are_smgs_own_cli_choices() -> None:
    """Read from the installed smg's parser (the `router` extra), not from a copy."""
    out = subprocess.run([sys.executable, "-m", "smg.launch_router", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    choices = out.split("--policy {", 1)[1].split("}", 1)[0].split(",")
    assert tuple(choices) == SMG_POLICIES


def test_off_by_default_the_service_selects_the_engines() -> None:
    kids = children(TINY)
    assert not any(k.startswith("router ") for k in kids)
    assert kids["Service"]["spec"]["selector"] == labels.selector("qwen")
    assert parse_spec(TINY).router is None


def test_on_the_service_selects_the_router_which_discovers_the_engines() -> None:
    kids = children({**TINY, "router": {"enabled": True}, "apiKeySecret": {"name": "k"}})
    assert kids["Service"]["spec"]["selector"] == labels.router_selector("qwen")
    dep = kids["router Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"] == labels.router_selector("qwen")
    assert labels.selector("qwen").items() - dep["spec"]["template"]["metadata"]["labels"].items()
    args = pod["containers"][0]["args"]
    flags = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    assert pod["containers"][0]["command"] == ["smg", "launch"]
    assert flags["--policy"] == "cache_aware" and flags["--service-discovery-namespace"] == "ml"
    assert flags["--service-discovery-port"] == "8000" and flags["--api-key"] == "$(SMG_API_KEY)"
    selector = args[args.index("--selector") + 1:args.index("--service-discovery-port")]
    assert selector == [f"{k}={v}" for k, v in sorted(labels.selector("qwen").items())]
    assert pod["containers"][0]["env"] == [{"name": "SMG_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "k", "key": "api-key"}}}]
    assert pod["serviceAccountName"] == "qwen-router" and pod["automountServiceAccountToken"] is True
    assert pod["containers"][0]["image"] == SETTINGS.engine_image  # never the CR's own image
    assert kids["router Role"]["rules"] == DISCOVERY_RULES == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = kids["router RoleBinding"]
    assert binding["roleRef"]["name"] == "qwen-router"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qwen-router", "namespace": "ml"}]
    for kid in ("router Deployment", "router Role", "router RoleBinding", "router ServiceAccount"):
        assert kids[kid]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_a_multi_node_model_routes_to_the_group_leaders_only() -> None:
    spec = {"model": "org/m", "tensorParallelSize": 2, "nodes": 2, "router": {"enabled": True}}
    args = children(spec)["router Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any("leaderworkerset.sigs.k8s.io/worker-index=0" == a for a in args), args


@pytest.mark.parametrize(("router", "field"), [
    ({"policy": "fastest"}, "spec.router.policy"),
    ({"replicas": 0}, "spec.router.replicas"),
    ({"resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.router.resources.limits"),
    ({"bogus": 1}, "spec.router.bogus"),
])
def test_bad_router_settings_name_the_field(router: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**TINY, "router": router})
    assert err.value.field == field


def _ready_status(router: RouterView | None) -> dict:
    routed = parse_spec({"model": "org/m", "replicas": 2, "router": {"enabled": True},
                         "loraAdapters": [{"name": "sql", "source": "org/sql"},
                                          {"name": "chat", "source": "pvc://c/x"}]})
    obs = dataclasses.replace(observe(spec=routed), router=router)  # every replica ready and loaded
    return compute_status(obs, "2026-01-01T00:00:00Z")


def test_ready_waits_for_the_router_to_route_and_reports_its_engines() -> None:
    waiting = _ready_status(RouterView(0, None, "router: insufficient healthy workers"))
    ready = next(c for c in waiting["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RouterNotReady")
    # The engines are ready but SMG registered none: where its reason is (SMG logs a discovery 403, nothing
    # else shows it).
    assert ready["message"] == (
        "router: insufficient healthy workers; SMG has registered none of the 2 ready engines yet: if that "
        "lasts, its log says why (discovery errors such as RBAC or an unreachable API): kubectl logs -n ml "
        "deploy/qwen-router")
    assert waiting["router"] == {"readyReplicas": 0, "engines": 0,
                                 "message": "router: insufficient healthy workers"}
    serving = _ready_status(RouterView(1, 2))
    assert serving["phase"] == "Ready" and serving["router"]["engines"] == 2
    assert compute_status(observe(), "2026-01-01T00:00:00Z")["router"] is None

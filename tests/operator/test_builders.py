"""Pure builders: the children's fields, names and the restart-relevant revision hash."""

from __future__ import annotations

import json

import pytest
from sglang_operator import labels, names
from sglang_operator.builders import Owner, build_children
from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sglang_operator.settings import load_settings
from sglang_operator.spec import parse_spec
from sgm_testlib import FULL

OWNER = Owner(name="qwen", namespace="ml", uid="uid-1")
SETTINGS = load_settings([], {"SGLANG_OPERATOR_POD_DEFAULTS": json.dumps(
    {"nodeSelector": {"pool": "gpu"}, "imagePullSecrets": ["regcred"], "priorityClassName": "serving"})})


def children(spec: dict, owner: Owner = OWNER, settings=SETTINGS) -> dict[str, dict]:
    return {c["kind"]: c for c in build_children(owner, parse_spec(spec), settings)}


def container(spec: dict) -> dict:
    return children(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def revision(spec: dict) -> str:
    return children(spec)["Deployment"]["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION]


def test_engine_command_carries_the_spec_flags_and_extra_args_after_the_separator():
    args = container(FULL)["args"]
    assert container(FULL)["command"] == ["sglang-engine"] and args[0] == "serve"
    flags = dict(zip(args[1:args.index("--")], args[2:args.index("--")], strict=False))  # noqa: RUF007
    assert flags["--model"] == "/mnt/pvc/weights/qwen/7b" and flags["--tp-size"] == "2"
    assert flags["--config"] == "/etc/sglang-operator/config.json" and flags["--host"] == "0.0.0.0"
    assert flags["--served-model-name"] == "qwen" and flags["--mem-fraction-static"] == "0.8"
    assert flags["--max-lora-rank"] == "16" and "--trust-remote-code" in args
    assert args[args.index("--lora-target-modules") + 1:][:2] == ["q_proj", "v_proj"]
    assert args[args.index("--") + 1:] == ["--schedule-policy", "lpm"]


def test_probes_use_the_port_the_engine_serves_them_on():
    """The engine's own parser reads the operator's args: its probe port is the container port probed."""
    settings = pytest.importorskip("sglang_engine.settings")
    c = container(FULL)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    engine = settings.parse_settings(c["args"][1:])
    assert (engine.port, engine.probe_port) == (ports["http"], ports["probe"])
    assert [str(root) for root in engine.admin_source_roots] == [names.PVC_MOUNT_ROOT]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[kind]["httpGet"]["port"] == "probe", kind


def test_gpus_probes_security_and_secrets():
    c = container(FULL)
    assert c["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": 2}
    assert c["resources"]["requests"] == {"cpu": "4", "nvidia.com/gpu": 2}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    # The startup probe waits for the engine to answer, not for the download (status.loading shows that).
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/livez"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["SGLANG_ENGINE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "chat", "key": "k"}
    assert env["XDG_CACHE_HOME"]["value"] == "/models/xdg"  # the CR's env wins
    assert [e["name"] for e in c["env"]].count("XDG_CACHE_HOME") == 1


def test_volumes_config_directory_shm_cache_and_read_only_pvc_sources():
    pod = children(FULL)["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["config"]["configMap"]["name"] == "qwen-engine-config"
    assert "subPath" not in mounts["/etc/sglang-operator"]
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    for claim in ("weights", "adapters"):
        mount = mounts[f"/mnt/pvc/{claim}"]
        assert mount["readOnly"] and volumes[mount["name"]]["persistentVolumeClaim"]["readOnly"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert pod["shareProcessNamespace"] is True  # the pause process reaps orphaned SGLang schedulers
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_pod_defaults_from_settings_and_cr_overrides():
    pod = children({**FULL, "nodeSelector": {"zone": "a"}})["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "serving"
    assert pod["containers"][0]["image"] == SETTINGS.engine_image
    assert container({**FULL, "image": "my/engine:2"})["image"] == "my/engine:2"


def test_deployment_strategy_replicas_and_selector():
    dep = children(FULL)["Deployment"]["spec"]
    assert dep["replicas"] == 3
    assert dep["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert dep["selector"]["matchLabels"] == labels.selector("qwen")
    assert dep["template"]["metadata"]["labels"].items() >= labels.selector("qwen").items()


def test_adapters_and_generation_change_only_the_configmap():
    base = {"model": "org/m", "loraAdapters": [{"name": "a", "source": "org/a"}]}
    changed = {**base, "loraAdapters": [*base["loraAdapters"], {"name": "b", "source": "org/b"}],
               "generation": {"temperature": 0.1}}
    one, two = children(base), children(changed)
    assert one["Deployment"] == two["Deployment"] and one["Service"] == two["Service"]
    config = json.loads(two["ConfigMap"]["data"]["config.json"])
    assert [a["name"] for a in config["loraAdapters"]] == ["a", "b"]
    assert config["generation"] == {"temperature": 0.1}


def test_restart_relevant_changes_change_the_revision():
    base = {"model": "org/m"}
    for change in ({"model": "org/n"}, {"tensorParallelSize": 2}, {"engine": {"dtype": "half"}},
                   {"image": "x/y:1"}, {"revision": "v2"}, {"env": [{"name": "A", "value": "1"}]}):
        assert revision({**base, **change}) != revision(base), change
    assert revision({**base, "replicas": 5}) == revision(base)


def test_pdb_only_with_more_than_one_replica():
    assert "PodDisruptionBudget" not in children({"model": "m", "replicas": 1})
    pdb = children({"model": "m", "replicas": 2})["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_every_child_is_owned_and_labelled():
    for child in children(FULL).values():
        meta = child["metadata"]
        assert meta["ownerReferences"] == [{"apiVersion": "serving.sglang-operator.io/v1alpha1",
                                            "kind": "SGLangModel", "name": "qwen", "uid": "uid-1",
                                            "controller": True, "blockOwnerDeletion": True}]
        assert meta["namespace"] == "ml"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "sglang-operator"
        keys = {"app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/component"}
        assert keys <= set(meta["labels"])


def test_service_ports_8000_named_http_and_8001_named_probe():
    svc = children(FULL)["Service"]["spec"]
    assert svc["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                            {"name": "probe", "port": 8001, "targetPort": "probe", "protocol": "TCP"}]


def test_long_and_odd_names_fit_63_characters_distinctly():
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    for name in (long_a, "9lives", "m"):
        derived = (names.deployment(name), names.service(name), names.configmap(name), names.instance(name))
        for child in derived:
            assert len(child) <= 63 and child[0].isalpha() and not child.endswith("-")
    assert names.service(long_a) != names.service(long_b)
    assert names.configmap(long_a).endswith("-engine-config")
    assert names.service("qwen") == "qwen" and names.configmap("qwen") == "qwen-engine-config"
    assert names.endpoint("qwen", "ml") == "http://qwen.ml.svc:8000/v1"


def test_version_label_is_label_safe():
    assert labels.version_label("ghcr.io/x/engine:0.1.0") == "0.1.0"
    assert labels.version_label("localhost:5000/engine") == "latest"
    assert labels.version_label("x/engine@sha256:" + "ab" * 32) == "ab" * 6


def test_transformers_backend_requests_no_gpu():
    c = container({"model": "builtin:tiny", "backend": "transformers", "tensorParallelSize": 1})
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})
    assert c["args"][c["args"].index("--backend") + 1] == "transformers"

"""The Helm chart: lint, strict Kubernetes schema validation of each rendering, agreement with the code."""

from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging_tools import CHART, ROOT, VARIANTS, by_kind
from sglang_operator import labels, names
from sglang_operator.builders.deployment import UID as ENGINE_UID
from sglang_operator.settings import ENV_VARS, PodDefaults, load_settings

K8S_VERSIONS = ("1.30", "1.35")
MONITORING_GROUP = "monitoring.coreos.com/v1"


def test_helm_lint_strict(run_helm):
    for args in VARIANTS.values():
        out = run_helm("lint", "--strict", str(CHART), *args)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_manifest_validates_strictly_on_1_30_and_1_35(render, variant):
    docs = render(variant)
    for doc in docs:
        if doc["apiVersion"] == MONITORING_GROUP:
            continue  # not a Kubernetes kind: checked against its own expectation below
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}")


def test_default_rendering_has_the_operator_objects(render):
    kinds = sorted(doc["kind"] for doc in render("default"))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Pod", "Service", "ServiceAccount"]


def test_no_rbac_variant_uses_the_given_service_account(render):
    docs = render("no-rbac")
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "Pod", "Service"]
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"


def test_operator_deployment_is_one_replica_recreate_restricted_with_health_probes(render):
    (deploy,) = by_kind(render("default"), "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SGLANG_OPERATOR_HEALTH_PORT"] == str(port)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["args"] == ["run"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_ha_runs_two_replicas_with_leader_election_on_a_lease_named_after_the_release(render, run_helm):
    docs = render("ha")
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2 and deploy["spec"]["strategy"] == {"type": "RollingUpdate"}
    settings = load_settings([], env=_operator_env(docs))
    assert settings.lease == ("sglang-system", deploy["metadata"]["name"])
    assert settings.leader_lease_seconds == 15
    out = run_helm("template", "rel", str(CHART), "--set", "replicas=2")
    assert out.returncode != 0 and "leaderElection.enabled" in out.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_pod_meets_the_restricted_pod_security_standard(render, variant):
    docs = render(variant)
    pods = [d["spec"] for d in by_kind(docs, "Pod")] + [d["spec"]["template"]["spec"]
                                                         for d in by_kind(docs, "Deployment")]
    assert len(pods) == 2
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        assert all(set(v) & {"emptyDir", "configMap", "secret", "projected"} for v in pod.get("volumes", []))
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
            assert not ctx.get("privileged") and "add" not in ctx["capabilities"]


def _operator_env(docs: list[dict]) -> dict[str, str]:
    (deploy,) = by_kind(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_operator_env_names_are_settings_the_operator_reads(render):
    assert set(_operator_env(render("default"))) <= set(ENV_VARS)


@pytest.mark.parametrize("variant", ["default", "namespaced"])
def test_operator_env_parses_into_settings(render, variant):
    settings = load_settings([], env=_operator_env(render(variant)))
    assert settings.namespaces == (("team-a", "team-b") if variant == "namespaced" else ())
    assert settings.engine_image == "ghcr.io/sglang-operator/sglang-engine:0.1.0"
    assert settings.liveness == "http://0.0.0.0:8080/healthz"
    assert settings.log_format == "json"


def test_engine_network_policy_values_flow_into_operator_settings(run_helm):
    """By default the operator's own pod (release namespace, selector labels) may read /status; metricsFrom
    adds Prometheus; allowOperator false leaves only the peers given."""
    def settings_of(*args: str):
        out = run_helm("template", "rel", str(CHART), "--namespace", "ops", *args)
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        pod_labels = next(d for d in docs if d["kind"] == "Deployment")["spec"]["selector"]["matchLabels"]
        return load_settings([], env=_operator_env(docs)), pod_labels

    settings, pod_labels = settings_of()
    assert [p.as_k8s() for p in settings.network_policy.statusFrom] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
         "podSelector": {"matchLabels": pod_labels}}]
    assert settings.network_policy.metricsFrom == ()
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {}}
    settings, _ = settings_of("--set", "engineNetworkPolicy.allowOperator=false", "--set-json",
                              f"engineNetworkPolicy.metricsFrom={json.dumps([prometheus])}")
    assert settings.network_policy.statusFrom == ()
    assert [p.as_k8s() for p in settings.network_policy.metricsFrom] == [prometheus]
    bad = run_helm("template", "rel", str(CHART), "--set-json",
                   'engineNetworkPolicy.metricsFrom=[{"bogus":1}]')
    assert bad.returncode != 0 and "bogus" in bad.stderr


def test_tenancy_values_flow_into_operator_settings(run_helm):
    tenancy = {"images": ["registry.example.com/*"], "priorityClasses": ["llm-*"], "secretNames": ["hf-*"],
               "tolerationKeys": ["nvidia.com/gpu"]}
    out = run_helm("template", "rel", str(CHART), "--set-json", f"tenancy={json.dumps(tenancy)}")
    assert out.returncode == 0, out.stderr
    settings = load_settings([], env=_operator_env([d for d in yaml.safe_load_all(out.stdout) if d]))
    assert settings.tenancy.model_dump() == {k: tuple(v) for k, v in tenancy.items()}
    default = run_helm("template", "rel", str(CHART))
    default_env = _operator_env([d for d in yaml.safe_load_all(default.stdout) if d])
    assert load_settings([], env=default_env).tenancy == load_settings([], {}).tenancy  # empty: anything
    bad = run_helm("template", "rel", str(CHART), "--set-json", 'tenancy={"registries":["x"]}')
    assert bad.returncode != 0 and "registries" in bad.stderr


def test_engine_values_flow_into_operator_settings(run_helm):
    values = {"engine": {
        "image": {"repository": "registry.example/engine", "tag": "v9", "pullPolicy": "Always"},
        "podDefaults": {"nodeSelector": {"gpu": "a100"}, "runtimeClassName": "nvidia",
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                        "imagePullSecrets": ["regcred"], "priorityClassName": "llm"}},
        "operator": {"resyncSeconds": 15, "logLevel": "debug"}}
    out = run_helm("template", "rel", str(CHART), "--set-json", f"engine={json.dumps(values['engine'])}",
                   "--set-json", f"operator={json.dumps(values['operator'])}")
    assert out.returncode == 0, out.stderr
    settings = load_settings([], env=_operator_env([d for d in yaml.safe_load_all(out.stdout) if d]))
    assert settings.engine_image == "registry.example/engine:v9"
    assert settings.image_pull_policy == "Always"
    assert settings.pod_defaults == PodDefaults.model_validate(values["engine"]["podDefaults"])
    assert settings.resync_seconds == 15 and settings.log_level == "debug"


def test_monitors_match_a_minimal_prometheus_operator_expectation(render):
    docs = render("monitoring")
    monitors = {doc["kind"]: doc for doc in docs if doc["apiVersion"] == MONITORING_GROUP}
    assert set(monitors) == {"PodMonitor", "ServiceMonitor"}
    assert monitors["PodMonitor"]["metadata"]["labels"]["release"] == "prom"  # matches the user's Prometheus
    assert "release" not in monitors["ServiceMonitor"]["metadata"]["labels"]
    engine_labels = {"app.kubernetes.io/name": labels.APP_NAME, labels.MANAGED_BY: labels.MANAGER}
    for kind, endpoints_key in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        mon = monitors[kind]
        assert mon["metadata"]["namespace"] == "sglang-system"
        assert set(mon["spec"]) == {"namespaceSelector", "selector", "podTargetLabels", endpoints_key}
        assert labels.INSTANCE in mon["spec"]["podTargetLabels"]
        assert mon["spec"]["namespaceSelector"] == {"any": True}
        assert mon["spec"]["selector"] == {"matchLabels": engine_labels}
        (endpoint,) = mon["spec"][endpoints_key]
        assert endpoint == {"port": names.PROBE_PORT_NAME, "path": "/metrics",
                            "interval": "30s", "scrapeTimeout": "10s"}


def test_monitors_follow_watched_namespaces(run_helm):
    out = run_helm("template", "rel", str(CHART), "--set", "monitoring.podMonitor.enabled=true",
                   "--set", "watchNamespaces={team-a}")
    assert out.returncode == 0, out.stderr
    (mon,) = by_kind([d for d in yaml.safe_load_all(out.stdout) if d], "PodMonitor")
    assert mon["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_helm_test_hook_calls_the_operator_health_service(render):
    docs = render("default")
    (pod,) = by_kind(docs, "Pod")
    (service,) = by_kind(docs, "Service")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["command"][-1]
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://{service['metadata']['name']}.sglang-system.svc:{port}/healthz"


def test_chart_crd_is_identical_to_the_source_of_truth():
    source = ROOT / "crds" / "sglangmodels.serving.sglang-operator.io.yaml"
    assert (CHART / "crds" / source.name).read_bytes() == source.read_bytes(), (
        "charts/sglang-operator/crds/ differs from crds/: run python scripts/gen_crd_reference.py")
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [source.name]


def test_chart_versions_follow_the_project_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project == chart["version"]


def test_operator_uid_matches_the_image():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    operator_stage = dockerfile.split("AS operator", 1)[1].split("FROM ", 1)[0]
    engine_stage = dockerfile.split("AS engine", 1)[1]
    assert f"USER {values['podSecurityContext']['runAsUser']}:" in operator_stage
    assert f"USER {ENGINE_UID}:{ENGINE_UID}" in engine_stage


def _schema_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_values_schema_accepts_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    errors = [e.message for e in _schema_validator().iter_errors(values)]
    assert errors == []


@pytest.mark.parametrize(("path", "value", "field"), [
    (("operator", "logFromat"), "json", "logFromat"),             # a typo'd key
    (("operator", "logFormat"), "xml", "xml"),                     # a value outside the enum
    (("watchNamespaces",), ["Team_A"], "Team_A"),                  # not a namespace name
    (("engine", "podDefaults", "imagePullSecrets"), [{"name": "x"}], "imagePullSecrets"),  # names only
])
def test_values_schema_rejects_bad_values(path, value, field):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = [f"{list(e.absolute_path)} {e.message}" for e in _schema_validator().iter_errors(values)]
    assert errors and field in " ".join(errors)


def test_helm_refuses_a_typo_naming_it(run_helm):
    out = run_helm("template", "rel", str(CHART), "--set", "operator.logFromat=json")
    assert out.returncode != 0 and "logFromat" in out.stderr


def test_every_value_is_documented():
    """Each leaf of values.yaml has a `# --` comment above it, or is inside a value documented as a whole."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, enclosing = [], []  # enclosing: (indent, has a `# --` comment) of the parent keys
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, value = len(match.group(1)), match.group(2), match.group(3).split(" #")[0].strip()
        while enclosing and enclosing[-1][0] >= indent:
            enclosing.pop()
        comments = []
        for prev in reversed(lines[:number]):
            if not prev.strip().startswith("#"):
                break
            comments.append(prev.strip())
        has_doc = any(c.startswith("# --") for c in comments)
        has_children = number + 1 < len(lines) and lines[number + 1].startswith(" " * (indent + 1))
        is_leaf = bool(value) or not has_children
        if is_leaf and not has_doc and not any(doc for _, doc in enclosing):
            undocumented.append(key)
        enclosing.append((indent, has_doc))
    assert undocumented == []

"""docs/reference.md is generated from the CRD and fresh; docs/security.md cites only tests and files that
exist; the Argo CD health check follows Ready."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from lupa import luajit21  # LuaJIT speaks Lua 5.1, the dialect of Argo CD's gopher-lua
from packaging_tools import ROOT
from sglang_engine.server.metrics import EngineMetrics

HEALTH_KEY = "resource.customizations.health.serving.sglang-operator.io_SGLangModel"


def test_files_generated_from_the_crd_are_fresh():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_crd_reference.py"), "--check"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr


def test_every_test_and_file_the_threat_model_cites_exists():
    """docs/security.md backs each claim with a test: each name it cites (a test function, a prefix ending
    in `_` for a long one, or a test module) and each repository path it names must exist."""
    doc = (ROOT / "docs" / "security.md").read_text()
    defined: set[str] = set()
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        defined |= set(re.findall(r"def (test_\w+)", path.read_text()))
    modules = {p.stem for p in (ROOT / "tests").rglob("test_*.py")}
    cited = set(re.findall(r"\b(test_\w+)", doc))
    assert len(cited) > 30
    missing = [n for n in sorted(cited) if n not in defined | modules and not (
        n.endswith("_") and any(d.startswith(n) for d in defined))]
    assert missing == []
    roots = "tests|operator|engine|scripts|charts|bench|requirements"
    paths = set(re.findall(rf"\b((?:{roots})/[\w./-]+\w)", doc))
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []


def test_reference_documents_every_spec_field():
    crd = yaml.safe_load((ROOT / "crds" / "sglangmodels.serving.sglang-operator.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    reference = (ROOT / "docs" / "reference.md").read_text()
    missing = [name for name in spec if f"| `spec.{name}` |" not in reference]
    assert missing == []


def _health(obj: dict) -> tuple[str, str]:
    configmap = yaml.safe_load((ROOT / "examples" / "gitops" / "argocd-cm-health.yaml").read_text())
    lua = luajit21.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(configmap["data"][HEALTH_KEY])
    return result["status"], result["message"]


def _model(generation: int = 2, status: dict | None = None) -> dict:
    body = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
            "metadata": {"name": "m", "generation": generation}, "spec": {"model": "builtin:tiny"}}
    if status is not None:
        body["status"] = status
    return body


def _cond(kind: str, status: str, message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": "R", "message": message}


@pytest.mark.parametrize(("status", "expected"), [
    (None, "Progressing"),
    ({"observedGeneration": 1, "phase": "Ready", "conditions": [_cond("Ready", "True")]}, "Progressing"),
    ({"observedGeneration": 2, "phase": "Ready", "conditions": [_cond("Ready", "True", "2/2 ready")]},
     "Healthy"),
    ({"observedGeneration": 2, "phase": "Progressing",
      "conditions": [_cond("Progressing", "True"), _cond("Ready", "False", "1/2 ready")]}, "Progressing"),
    ({"observedGeneration": 2, "phase": "Degraded",
      "conditions": [_cond("AdaptersReady", "False"), _cond("Ready", "False", "adapter sql failed")]},
     "Degraded"),
    ({"observedGeneration": 2, "phase": "Failed",
      "conditions": [_cond("SpecValid", "False", "bad extraArgs"), _cond("Ready", "False", "x")]},
     "Degraded"),
])
def test_argocd_health_follows_the_ready_condition(status, expected):
    assert _health(_model(status=status))[0] == expected


def test_argocd_health_message_is_the_conditions_message():
    failed = {"observedGeneration": 2, "phase": "Failed",
              "conditions": [_cond("SpecValid", "False", "bad extraArgs"), _cond("Ready", "False", "x")]}
    assert _health(_model(status=failed)) == ("Degraded", "bad extraArgs")
    ready = {"observedGeneration": 2, "conditions": [_cond("Ready", "True", "2/2 ready")]}
    assert _health(_model(status=ready)) == ("Healthy", "2/2 ready")


def test_documented_metrics_are_the_engines():
    """The metrics operations.md names (its table, the HPA example) are the engine's, with their types."""
    exported = dict(re.findall(r"^# TYPE (\S+) (\S+)$", EngineMetrics().render().decode(), re.MULTILINE))
    text = (ROOT / "docs" / "operations.md").read_text()
    documented = dict(re.findall(r"^\| `(sglang_engine_\w+)` \| (\w+) \|", text, re.MULTILINE))
    assert documented == exported
    assert set(re.findall(r"\bsglang_engine_\w+", text)) <= set(exported)


def test_argocd_health_reports_pod_failures_as_the_operator_computes_them():
    """Statuses from the operator's own compute_status: a crash is Degraded with its message, a pod waiting
    for a GPU is Progressing with the scheduler's message."""
    from sglang_operator.observed import DeploymentView, PodView
    from sglang_operator.pod_health import diagnose
    from sglang_operator.spec import parse_spec
    from sglang_operator.status import Observation, compute_status

    def status_for(pod_status: dict, previous: dict | None = None) -> dict:
        pod = PodView.parse({"metadata": {"name": "m-1", "annotations": {}}, "status": pod_status})
        assert pod.problem == diagnose({"metadata": {"name": "m-1"}, "status": pod_status})
        obs = Observation("m", "ns", 2, parse_spec({"model": "builtin:tiny"}), desired_revision=None,
                          desired_config="{}", deployment=DeploymentView(generation=1, observed_generation=1,
                                                                         replicas=1, updated_replicas=1),
                          pods=(pod,), previous=previous or {})
        return compute_status(obs, "2026-01-01T00:00:00Z")

    crash = status_for({"containerStatuses": [{
        "name": "engine", "ready": False, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "ValueError: boom"}}}]})
    health = _health(_model(status=crash))
    assert health[0] == "Degraded" and "ValueError: boom" in health[1]
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}
    waiting = status_for({"conditions": [unschedulable]})
    assert _health(_model(status=waiting)) == (
        "Progressing", "pod m-1: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")


def test_readme_and_docs_are_self_contained():
    """Every link in README.md and docs/ leads to a file of this repository: no web links, nothing outside."""
    chart = ROOT / "charts" / "sglang-operator"
    pages = [ROOT / "README.md", chart / "README.md", *(ROOT / "docs").glob("*.md")]
    for page in pages:
        text = page.read_text()
        # Markdown links outside code spans (docs/reference.md shows regexes like `[a-z]([-a-z]*)`).
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            path = target.split("#", 1)[0]
            assert not re.match(r"^[a-z]+://", target), f"{page.name}: web link {target}"
            if path:
                resolved = (page.parent / path).resolve()
                assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{page.name}: {target}"
        assert "../shared/" not in text, f"{page.name} points outside the repository"

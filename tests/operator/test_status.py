"""Pure status computation: Ready only when every replica is current, ready and has every adapter loaded."""

from __future__ import annotations

from sglang_operator.observed import DeploymentView, EngineStatus, PodView
from sglang_operator.spec import SpecError, parse_spec
from sglang_operator.status import Observation, compute_status, config_hash, status_changed

REV = "rev-1"
CONFIG = '{"loraAdapters": []}\n'
SPEC = parse_spec({"model": "org/m", "replicas": 2,
                   "loraAdapters": [{"name": "sql", "source": "org/sql"}, {"name": "chat", "source": "pvc://c/x"}]})
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def engine(*loaded: str, failed: str | None = None, hash_: str | None = None) -> EngineStatus:
    sources = {"sql": "org/sql", "chat": "/mnt/pvc/c/x"}
    adapters = [{"name": n, "source": sources[n], "state": "loaded"} for n in loaded]
    if failed:
        adapters.append({"name": failed, "source": sources[failed], "state": "failed",
                         "message": "rank too big"})
    return EngineStatus.model_validate({"ready": True, "configHash": hash_ or config_hash(CONFIG),
                                       "adapters": adapters})


def observe(pods=2, ready=2, updated=2, revision=REV, engines=None, previous=None, spec=SPEC, dep=True,
            replicas=None) -> Observation:
    pod_views = tuple(PodView(name=f"p{i}", ip=f"10.0.0.{i}", ready=i < ready, revision=revision)
                      for i in range(pods))
    deployment = DeploymentView(generation=3, observed_generation=3, template_revision=REV,
                                replicas=pods if replicas is None else replicas,
                                updated_replicas=updated, ready_replicas=ready) if dep else None
    if engines is None:
        engines = {p.name: engine("sql", "chat") for p in pod_views if p.ready}
    return Observation("qwen", "ml", 7, spec, desired_revision=REV, desired_config=CONFIG,
                       deployment=deployment, pods=pod_views, engines=engines, previous=previous or {})


def cond(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_all_current_ready_and_loaded_is_ready():
    status = compute_status(observe(), T0)
    assert status["phase"] == "Ready" and cond(status, "Ready")["status"] == "True"
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (2, 2, 2)
    assert status["adapters"] == [{"name": "sql", "source": "org/sql", "loaded": 2, "message": ""},
                                  {"name": "chat", "source": "pvc://c/x", "loaded": 2, "message": ""}]
    assert status["selector"] == "app.kubernetes.io/instance=qwen,app.kubernetes.io/name=sglang-engine"
    assert status["endpoint"] == "http://qwen.ml.svc:8000/v1" and status["observedGeneration"] == 7


def test_an_adapter_missing_on_one_pod_holds_ready_back():
    status = compute_status(observe(engines={"p0": engine("sql", "chat"), "p1": engine("sql")}), T0)
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["reason"] == "AdaptersNotReady"
    assert cond(status, "AdaptersReady")["reason"] == "AdaptersLoading"
    assert [a["loaded"] for a in status["adapters"]] == [2, 1]


def test_a_failed_adapter_degrades_with_the_backend_message():
    engines = {"p0": engine("sql", failed="chat"), "p1": engine("sql", "chat")}
    status = compute_status(observe(engines=engines), T0)
    assert status["phase"] == "Degraded" and cond(status, "AdaptersReady")["reason"] == "AdapterFailed"
    assert "rank too big" in status["adapters"][1]["message"]


def test_old_revision_pods_do_not_count():
    status = compute_status(observe(revision="rev-0", engines={}), T0)
    assert status["readyReplicas"] == 0 and cond(status, "Ready")["status"] == "False"
    assert cond(status, "Progressing")["status"] == "True" and status["phase"] == "Progressing"


def test_a_rollout_with_an_extra_old_pod_is_not_ready():
    status = compute_status(observe(pods=2, replicas=3), T0)
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Progressing")["reason"] == "RollingOut"


def test_unapplied_config_or_unreachable_engine_is_not_ready():
    stale = observe(engines={"p0": engine("sql", "chat", hash_="old"), "p1": engine("sql", "chat")})
    assert cond(compute_status(stale, T0), "AdaptersReady")["reason"] == "ConfigPending"
    refused = engine("sql", "chat").model_copy(update={"config_error": "malformed config file: x"})
    rejected = compute_status(observe(engines={"p0": refused, "p1": engine("sql", "chat")}), T0)
    assert cond(rejected, "AdaptersReady")["reason"] == "ConfigRejected"
    assert "p0: malformed config file" in cond(rejected, "AdaptersReady")["message"]
    down = observe(engines={"p0": "GET /status failed", "p1": engine("sql", "chat")})
    assert cond(compute_status(down, T0), "AdaptersReady")["reason"] == "EngineUnreachable"


def test_no_deployment_is_pending_and_zero_replicas_is_not_ready():
    assert compute_status(observe(dep=False, pods=0, ready=0), T0)["phase"] == "Pending"
    zero = parse_spec({"model": "org/m", "replicas": 0})
    status = compute_status(observe(pods=0, ready=0, updated=0, spec=zero), T0)
    assert cond(status, "Ready")["reason"] == "ScaledToZero"


def test_invalid_spec_is_failed_with_the_field_named():
    obs = Observation("qwen", "ml", 8, None, spec_error=SpecError("spec.engine.extraArgs[0]", "owned"))
    status = compute_status(obs, T0)
    assert status["phase"] == "Failed" and cond(status, "SpecValid")["status"] == "False"
    assert "spec.engine.extraArgs[0]" in cond(status, "SpecValid")["message"]


def test_transition_times_are_kept_while_unchanged_so_a_steady_world_writes_nothing():
    first = compute_status(observe(), T0)
    again = compute_status(observe(previous=first), T1)
    assert again == first and not status_changed(first, again)
    degraded = compute_status(observe(ready=1, previous=first), T1)
    assert cond(degraded, "Ready")["lastTransitionTime"] == T1
    assert cond(degraded, "SpecValid")["lastTransitionTime"] == T0
    assert degraded["phase"] == "Degraded" and status_changed(first, degraded)


def test_a_new_adapter_being_applied_is_progress_not_degradation():
    """Ready pods applying a new config: phase Progressing, Progressing=True (ApplyingConfig),
    not Degraded."""
    first = compute_status(observe(), T0)
    assert first["phase"] == "Ready"
    stale = {f"p{i}": engine("sql", hash_="an-older-config") for i in range(2)}
    pending = compute_status(observe(engines=stale, previous=first), T1)
    loading = compute_status(observe(engines={f"p{i}": engine("sql") for i in range(2)}, previous=first), T1)
    for status, reason in ((pending, "ConfigPending"), (loading, "AdaptersLoading")):
        assert cond(status, "AdaptersReady")["reason"] == reason
        assert cond(status, "Ready")["status"] == "False"
        assert cond(status, "Progressing")["reason"] == "ApplyingConfig"
        assert status["phase"] == "Progressing"


def _crashing(name: str = "p1") -> PodView:
    from sglang_operator.pod_health import PodProblem

    return PodView(name=name, revision=REV, problem=PodProblem("EngineCrashed", f"pod {name}: exit 1", True))


def test_a_crashing_pod_sets_ready_false_with_its_reason_and_degrades():
    base = observe(pods=1, ready=1, updated=2, replicas=2)
    obs = Observation(**{**base.__dict__, "pods": (*base.pods, _crashing())})
    status = compute_status(obs, T0)
    assert (cond(status, "Ready")["reason"], cond(status, "Ready")["message"]) == ("EngineCrashed",
                                                                                   "pod p1: exit 1")
    assert cond(status, "Degraded")["status"] == "True" and status["phase"] == "Degraded"
    recovered = compute_status(observe(previous=status), T1)
    assert cond(recovered, "Degraded")["status"] == "False" and recovered["phase"] == "Ready"


def test_an_unschedulable_pod_waits_without_degrading():
    from sglang_operator.pod_health import PodProblem

    waiting = PodView(name="p1", revision=REV, problem=PodProblem("Unschedulable", "pod p1: no GPU", False))
    base = observe(pods=1, ready=1, updated=2, replicas=2)
    status = compute_status(Observation(**{**base.__dict__, "pods": (*base.pods, waiting)}), T0)
    assert cond(status, "Ready")["reason"] == "Unschedulable"
    assert cond(status, "Degraded")["status"] == "False" and status["phase"] == "Progressing"


def test_a_failed_adapter_is_the_ready_reason():
    engines = {"p0": engine("sql", failed="chat"), "p1": engine("sql", "chat")}
    status = compute_status(observe(engines=engines), T0)
    assert cond(status, "Ready")["reason"] == "AdapterFailed"
    assert "rank too big" in cond(status, "Ready")["message"]
    assert cond(status, "Degraded")["reason"] == "AdapterFailed"


def test_one_event_per_change_of_failure_and_one_on_recovery():
    from sglang_operator.reconcile import problem_events

    base = observe(pods=1, ready=1, updated=2, replicas=2)
    broken = compute_status(Observation(**{**base.__dict__, "pods": (*base.pods, _crashing())}), T0)
    assert problem_events({}, broken) == [("Warning", "EngineCrashed", "pod p1: exit 1")]
    assert problem_events(broken, broken) == []  # a resync of the same world
    fine = compute_status(observe(previous=broken), T1)
    assert problem_events(broken, fine) == [("Normal", "Recovered", "no longer EngineCrashed")]

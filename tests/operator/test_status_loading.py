"""Pure status of a model whose replicas are still loading: the slowest replica's phase and progress on
status.loading (the Progress column), in the Progressing message, failures with their reason, events only at
phase changes, and the poll that follows the progress."""

from __future__ import annotations

from pathlib import Path

import yaml
from sglang_engine.protocol import LOAD_PHASES, LoadProgress
from sglang_operator.handlers import SAFETY_RESYNC, Seen, _settled, resync_plan
from sglang_operator.observed import DeploymentView, EngineStatus, PodView
from sglang_operator.reconcile import Result, loading_events
from sglang_operator.spec import parse_spec
from sglang_operator.status import Observation, compute_status, config_hash

REV = "rev-1"
CONFIG = '{"loraAdapters": []}\n'
SPEC = parse_spec({"model": "org/m", "replicas": 2})
T0 = "2026-01-01T00:00:00Z"
GB = 10**9
ROOT = Path(__file__).resolve().parents[2]


def reply(**loading: object) -> EngineStatus:
    return EngineStatus.model_validate({"ready": False, "configHash": config_hash(CONFIG),
                                        "loading": LoadProgress(**loading).to_json()})  # type: ignore[arg-type]


def observe(engines: dict[str, EngineStatus | str], ready: int = 0, previous: dict | None = None,
            deadline: bool = False) -> Observation:
    pods = tuple(PodView(name=f"p{i}", ip=f"10.0.0.{i}", ready=i < ready, revision=REV) for i in range(2))
    dep = DeploymentView(generation=3, observed_generation=3, template_revision=REV, replicas=2,
                         updated_replicas=2, ready_replicas=ready, progress_deadline_exceeded=deadline)
    return Observation("qwen", "ml", 7, SPEC, desired_revision=REV, desired_config=CONFIG, deployment=dep,
                       pods=pods, engines=engines, previous=previous or {})


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_the_slowest_replica_is_shown_with_its_summary() -> None:
    engines = {"p0": reply(phase="LoadingWeights", shards_done=1, shards_total=4),
               "p1": reply(phase="Downloading", bytes_done=int(6.9 * GB), bytes_total=16 * GB, files_done=2,
                           files_total=7, bytes_per_second=4e7, eta_seconds=240, message="org/m@main")}
    status = compute_status(observe(engines), T0)
    assert status["loading"] == {
        "pod": "p1", "replicas": 2, "summary": "Downloading 43% (6.9/16 GB, ~4m)", "percent": 43,
        "phase": "Downloading", "bytesDone": int(6.9 * GB), "bytesTotal": 16 * GB, "filesDone": 2,
        "filesTotal": 7, "bytesPerSecond": 4e7, "etaSeconds": 240, "permanent": False,
        "message": "org/m@main"}
    assert status["phase"] == "Progressing"
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingOut")
    assert progressing["message"] == \
        "0/2 replicas ready on the current revision; p1: Downloading 43% (6.9/16 GB, ~4m)"
    assert cond(status, "Ready")["reason"] == "ReplicasNotReady" and "Downloading 43%" in \
        cond(status, "Ready")["message"]


def test_no_loading_once_every_replica_serves_or_none_reports() -> None:
    assert compute_status(observe({}), T0)["loading"] is None  # engines not listening yet
    assert compute_status(observe({"p0": "GET /status failed: refused"}), T0)["loading"] is None
    serving = {"p0": reply(phase="Serving"), "p1": reply(phase="Serving")}
    assert compute_status(observe(serving), T0)["loading"] is None


def test_a_permanent_download_failure_degrades_with_its_reason() -> None:
    engines = {"p0": reply(phase="Downloading", bytes_done=1, bytes_total=2),
               "p1": reply(phase="Failed", reason="GatedRepo", permanent=True,
                           message="org/m is gated: ... (spec.hfTokenSecret)")}
    status = compute_status(observe(engines), T0)
    assert status["phase"] == "Degraded"
    ready, degraded = cond(status, "Ready"), cond(status, "Degraded")
    assert (ready["reason"], degraded["reason"], degraded["status"]) == ("GatedRepo", "GatedRepo", "True")
    assert degraded["message"] == "pod p1: cannot load the model: org/m is gated: ... (spec.hfTokenSecret)"
    assert status["loading"]["summary"].startswith("Failed (GatedRepo)")


def test_a_download_being_retried_is_not_degraded() -> None:
    status = compute_status(observe({"p0": reply(phase="Failed", reason="DownloadFailed",
                                                 message="ConnectError: refused")}), T0)
    assert status["phase"] == "Progressing" and cond(status, "Degraded")["status"] == "False"
    assert cond(status, "Ready")["reason"] == "DownloadFailed"
    assert "retrying the download" in cond(status, "Ready")["message"]


def test_a_long_download_outlives_the_deployments_progress_deadline() -> None:
    engines = {"p0": reply(phase="Downloading", bytes_done=1, bytes_total=2)}
    status = compute_status(observe(engines, deadline=True), T0)
    assert status["phase"] == "Progressing" and cond(status, "Degraded")["status"] == "False"
    stuck = compute_status(observe({}, deadline=True), T0)
    assert stuck["phase"] == "Degraded" and cond(stuck, "Degraded")["reason"] == "ProgressDeadlineExceeded"


def test_events_at_phase_changes_only() -> None:
    def loading(phase: str, percent: int, **more: object) -> dict:
        return {"loading": {"phase": phase, "pod": "p0", "summary": f"{phase} {percent}%", **more}}

    assert loading_events({}, loading("Downloading", 1)) == [
        ("Normal", "Downloading", "pod p0: Downloading 1%")]
    assert loading_events(loading("Downloading", 1), loading("Downloading", 50)) == []  # not per percent
    assert loading_events(loading("Downloading", 99), loading("LoadingWeights", 0))[0][1] == "LoadingWeights"
    assert loading_events(loading("WarmingUp", 0), {"loading": None}) == []  # Ready has its own event
    retry = loading("Failed", 0, reason="DownloadFailed", permanent=False)
    assert loading_events(loading("Downloading", 5), retry)[0][:2] == ("Warning", "DownloadFailed")
    gated = loading("Failed", 0, reason="GatedRepo", permanent=True)
    assert loading_events(loading("Downloading", 5), gated) == []  # the Degraded warning says it


def test_the_operator_polls_while_replicas_load() -> None:
    status = compute_status(observe({"p0": reply(phase="Downloading", bytes_done=1, bytes_total=2)}), T0)
    assert not _settled(status)
    assert not _settled({"phase": "Progressing", "replicas": 2, "readyReplicas": 0})  # engines not up yet
    assert _settled({"phase": "Degraded", "replicas": 1, "readyReplicas": 0})  # a crash loop: pod events
    ready = {"phase": "Ready", "replicas": 2, "readyReplicas": 2,
             "conditions": [{"type": "AdaptersReady", "status": "True"}]}
    assert _settled(ready)
    # The router registers a Ready engine after the fact, without an event: polled until it routes to all.
    assert not _settled({**ready, "router": {"readyReplicas": 1, "engines": 1}})
    assert _settled({**ready, "router": {"readyReplicas": 1, "engines": 2}})


def test_the_resync_asks_only_what_no_watch_reports() -> None:
    """Pods without an IP have no engine to poll (their scheduling and start come by the pod watch): a
    model waiting for a node costs no request at rest; a settled model's engines are asked, not the API."""
    starting = {"phase": "Progressing", "replicas": 1, "readyReplicas": 0}
    pod = PodView(name="p0", ip="10.0.0.1", revision=REV)
    assert resync_plan(Result(starting, {}, False)) == "watched"  # pending: nothing to ask
    assert resync_plan(Result(starting, {}, False, asked=(pod,))) == "poll"  # an engine loading
    assert resync_plan(Result({"phase": "Running"}, {}, False, asked=(pod,))) == "engines"
    assert resync_plan(Result(starting, {}, False, unwatched=True)) == "full"  # e.g. LeaderWorkerSet missing
    watched, engines, full = Seen(100.0, "watched"), Seen(100.0, "engines"), Seen(100.0, "full")
    assert not watched.due(100.0 + 3600, 60) and watched.due(100.0 + SAFETY_RESYNC, 60)
    assert not engines.due(159.0, 60) and engines.due(160.0, 60) and not engines.full(160.0)
    assert not Seen(100.0, "engines", checked=150.0).due(160.0, 60)  # asked 10 s ago
    assert full.due(160.0, 60) and full.full(160.0) and Seen(100.0, "poll").due(105.0, 60)


def test_the_crd_lists_the_engines_phases_and_the_progress_column() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "sglangmodels.serving.sglang-operator.io.yaml").read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["loading"]
    assert tuple(schema["properties"]["phase"]["enum"]) == LOAD_PHASES
    assert {"name": "Progress", "type": "string", "jsonPath": ".status.loading.summary"}.items() <= next(
        c for c in version["additionalPrinterColumns"] if c["name"] == "Progress").items()

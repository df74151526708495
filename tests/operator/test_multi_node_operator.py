"""Multi-node models (spec.nodes > 1): the spec's checks, the LeaderWorkerSet the builders render instead of a
Deployment, the leader-only Service, and status from the LWS and its leaders."""

from __future__ import annotations

import pytest
from sglang_engine.protocol import DIST_INIT_PORT
from sglang_engine.settings import parse_settings
from sglang_operator import labels, names
from sglang_operator.builders import Owner, build_children
from sglang_operator.builders.deployment import REVISION_ANNOTATION
from sglang_operator.builders.leaderworkerset import WORKER_INDEX_LABEL, template_of
from sglang_operator.observed import DeploymentView, EngineStatus, PodView
from sglang_operator.pod_health import PodProblem
from sglang_operator.settings import load_settings
from sglang_operator.spec import SpecError, parse_spec
from sglang_operator.status import GROUP_RECREATED, WORKLOAD_MISSING, Observation, compute_status, config_hash

OWNER = Owner(name="big", namespace="ml", uid="uid-1")
SETTINGS = load_settings([], {})
TWO_NODES = {"model": "org/big", "tensorParallelSize": 16, "nodes": 2, "replicas": 2,
             "loraAdapters": [{"name": "sql", "source": "org/sql"}]}


def children(spec: dict) -> dict[str, dict]:
    return {c["kind"]: c for c in build_children(OWNER, parse_spec(spec), SETTINGS)}


@pytest.mark.parametrize(("spec", "field", "said"), [
    ({"tensorParallelSize": 6, "nodes": 4}, "spec.nodes", "must divide tensorParallelSize"),
    ({"tensorParallelSize": 32, "nodes": 2}, "spec.tensorParallelSize", "more than 8 per node"),
    ({"tensorParallelSize": 2, "nodes": 2, "backend": "transformers"}, "spec.backend", "sglang backend"),
    ({"tensorParallelSize": 16, "nodes": 9}, "spec.nodes", "less than or equal to 8"),
])
def test_nodes_that_cannot_split_the_model_are_refused_naming_the_field(spec: dict, field: str,
                                                                         said: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", **spec})
    assert err.value.field == field and said in err.value.message


def test_a_multi_node_model_is_a_leaderworkerset_of_groups_not_a_deployment() -> None:
    kids = children(TWO_NODES)
    assert "Deployment" not in kids and list(kids) == ["NetworkPolicy", "ConfigMap", "LeaderWorkerSet",
                                                       "Service", "PodDisruptionBudget"]
    lws = kids["LeaderWorkerSet"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["metadata"]["name"] == names.leaderworkerset("big") == "big-lws"
    assert lws["metadata"]["ownerReferences"][0]["name"] == "big"
    group = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == 2 and group["size"] == 2
    assert group["restartPolicy"] == "RecreateGroupOnPodRestart"
    rollout = lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]
    assert rollout == {"maxSurge": 1, "maxUnavailable": 0}
    pod = group["workerTemplate"]["spec"]
    container = pod["containers"][0]
    # Each node requests its share of the GPUs; the engine gets the node count, LWS's env gives the rest.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    args = container["args"]
    assert args[args.index("--tp-size") + 1] == "16" and args[args.index("--nnodes") + 1] == "2"
    assert {"name": "dist-init", "containerPort": DIST_INIT_PORT, "protocol": "TCP"} in container["ports"]
    assert group["workerTemplate"]["metadata"]["labels"] == labels.child_labels("big", "engine",
                                                                                SETTINGS.engine_image)


def test_the_service_sends_requests_to_the_group_leaders_only() -> None:
    svc = children(TWO_NODES)["Service"]
    assert svc["spec"]["selector"] == {**labels.selector("big"), WORKER_INDEX_LABEL: "0"}
    # LWS names its own headless Service after the LWS ("big-lws"): the model's Service keeps its name.
    assert svc["metadata"]["name"] == "big" != names.leaderworkerset("big")
    assert "leaderworkerset" not in str(children({"model": "org/m"})["Service"]["spec"]["selector"])


def test_every_node_of_the_group_parses_the_same_args_with_its_rank_from_lws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    args = template_of(children(TWO_NODES)["LeaderWorkerSet"])["spec"]["containers"][0]["args"]
    monkeypatch.setenv("LWS_LEADER_ADDRESS", "big-lws-0.big-lws.ml")
    monkeypatch.setenv("LWS_GROUP_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("LWS_WORKER_INDEX", rank)
        settings = parse_settings(args[1:])
        assert (settings.tp_size, settings.nnodes, settings.node_rank) == (16, 2, int(rank))
        assert settings.dist_init_addr == f"big-lws-0.big-lws.ml:{DIST_INIT_PORT}"


def test_adapters_do_not_restart_a_group_but_nodes_and_the_model_do() -> None:
    def revision(spec: dict) -> str:
        return template_of(children(spec)["LeaderWorkerSet"])["metadata"]["annotations"][REVISION_ANNOTATION]

    base = revision(TWO_NODES)
    assert revision({**TWO_NODES, "loraAdapters": [{"name": "chat", "source": "org/chat"}]}) == base
    assert revision({**TWO_NODES, "replicas": 5}) == base
    assert revision({**TWO_NODES, "nodes": 4}) != base
    assert revision({**TWO_NODES, "model": "org/bigger"}) != base


def test_long_names_leave_room_for_group_and_rank_in_pod_host_names() -> None:
    lws = names.leaderworkerset("x" * 80)
    assert len(lws) <= 57 and len(f"{lws}-999-7") <= 63


# ------------------------------------------------------------------------------------------------- status

REV = "rev-1"
CONFIG = '{"loraAdapters": []}\n'


def pod(name: str, rank: int, ready: bool = True) -> PodView:
    return PodView(name=name, ip=f"10.0.0.{len(name)}", ready=ready, revision=REV, leader=rank == 0)


def observe(pods: tuple[PodView, ...], ready_groups: int, **kw: object) -> Observation:
    spec = parse_spec({**TWO_NODES, "loraAdapters": []})
    lws = DeploymentView(generation=1, observed_generation=1, template_revision=REV, replicas=2,
                         updated_replicas=2, ready_replicas=ready_groups)
    reply = EngineStatus.model_validate({"ready": True, "configHash": config_hash(CONFIG), "adapters": []})
    engines = {p.name: reply for p in pods if p.ready and p.leader}
    return Observation("big", "ml", 1, spec, desired_revision=REV, desired_config=CONFIG, deployment=lws,
                       pods=pods, engines=engines, **kw)  # type: ignore[arg-type]


def test_ready_counts_groups_by_their_leaders_and_workers_are_never_asked_for_status() -> None:
    pods = (pod("big-lws-0", 0), pod("big-lws-0-1", 1), pod("big-lws-1", 0), pod("big-lws-1-1", 1))
    status = compute_status(observe(pods, ready_groups=2), "2026-01-01T00:00:00Z")
    assert status["phase"] == "Ready" and status["readyReplicas"] == 2
    one_down = (pod("big-lws-0", 0), pod("big-lws-0-1", 1), pod("big-lws-1", 0, ready=False),
                pod("big-lws-1-1", 1))
    status = compute_status(observe(one_down, ready_groups=1, previous=status), "2026-01-01T00:01:00Z")
    assert status["phase"] == "Degraded" and status["readyReplicas"] == 1


def test_a_cluster_without_leaderworkerset_is_a_condition_not_a_crash() -> None:
    obs = observe((), ready_groups=0)
    obs = Observation(**{**obs.__dict__, "deployment": None, "workload_error": "install LWS"})
    status = compute_status(obs, "2026-01-01T00:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Degraded" and ready["reason"] == WORKLOAD_MISSING
    assert ready["message"] == "install LWS"


def test_lws_status_and_template_parse_like_a_deployments() -> None:
    lws = children(TWO_NODES)["LeaderWorkerSet"]
    live = {**lws, "metadata": {**lws["metadata"], "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}}
    view = DeploymentView.parse(live)
    assert (view.replicas, view.ready_replicas, view.updated_replicas) == (2, 1, 2)
    assert view.template_revision == template_of(lws)["metadata"]["annotations"][REVISION_ANNOTATION]
    worker = PodView.parse({"metadata": {"name": "big-lws-0-1", "labels": {WORKER_INDEX_LABEL: "1"}}})
    leader = PodView.parse({"metadata": {"name": "big-lws-0", "labels": {WORKER_INDEX_LABEL: "0"}}})
    deployment_pod = PodView.parse({"metadata": {"name": "d"}})
    assert (worker.leader, leader.leader, deployment_pod.leader) == (False, True, True)


# ---------------------------------------------------------------------------------- the operator, live

async def test_without_the_lws_api_a_multi_node_model_gets_a_condition_not_a_crash_loop(emulator) -> None:
    from sgm_testlib import FakeEngine, client, eventually, model, running_operator

    async def missing(api):
        cr = await api.get("SGLangModel", "default", "big")
        ready = next(c for c in cr["status"]["conditions"] if c["type"] == "Ready")
        return cr if ready["reason"] == WORKLOAD_MISSING else None

    spec = {"model": "org/big", "tensorParallelSize": 4, "nodes": 2}
    async with FakeEngine().serve() as engine, running_operator(emulator.url, engine.port), \
            client(emulator.url) as api:
        await api.create(model("big", spec))
        cr = await eventually(lambda: missing(api), what="LeaderWorkerSetMissing")
        assert cr["status"]["phase"] == "Degraded" and "leaderworkerset.x-k8s.io" in str(cr["status"])
        assert await api.get("Service", "default", "big") is not None  # the rest is in place meanwhile
        assert await api.get("Deployment", "default", "big") is None


def test_a_worker_that_cannot_join_is_named_in_the_ready_condition() -> None:
    """The common case of a node that never joins: its pod cannot be scheduled (no node with 8 free GPUs)."""
    waiting = PodProblem("Unschedulable", "pod big-lws-0-1: 0/3 nodes are available: 3 Insufficient "
                         "nvidia.com/gpu", False)
    pods = (pod("big-lws-0", 0, ready=False), PodView(name="big-lws-0-1", revision=REV, leader=False,
                                                      problem=waiting))
    status = compute_status(observe(pods, ready_groups=0), "2026-01-01T00:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Unschedulable" and "big-lws-0-1" in ready["message"], ready
    assert status["phase"] == "Progressing"


def test_a_worker_that_never_joined_stays_named_after_its_group_is_recreated() -> None:
    """The worker's last words (its rank, the leader's address, SGLang's error) are in its pod status only
    until LeaderWorkerSet recreates the group, seconds later: Degraded keeps them while the new group starts,
    for this generation, until the model is Ready or a pod shows a problem of its own."""
    from sglang_operator.reconcile import problem_events

    said = ("pod big-lws-0-1: the model could not be loaded: SGLang exited with code 137 during startup: "
            "GroupError: node rank 1: the leader at big-lws-0.big-lws.ml:20000 did not answer within 30 s; "
            "node rank 1 of 2: SGLang starts only once all 2 nodes have joined at big-lws-0.big-lws.ml:20000")
    failed = PodView(name="big-lws-0-1", revision=REV, leader=False,
                     problem=PodProblem("ModelLoadFailed", said, True))
    starting = (pod("big-lws-0", 0, ready=False), pod("big-lws-0-1", 1, ready=False))
    broken = compute_status(observe((pod("big-lws-0", 0, ready=False), failed), ready_groups=0), "t0")
    assert broken["phase"] == "Degraded"

    recreated = compute_status(observe(starting, ready_groups=0, previous=broken), "t1")
    ready, degraded = (next(c for c in recreated["conditions"] if c["type"] == t)
                       for t in ("Ready", "Degraded"))
    assert recreated["phase"] == "Degraded" and ready["reason"] == degraded["reason"] == "ModelLoadFailed"
    assert ready["message"] == said + GROUP_RECREATED, ready
    again = compute_status(observe(starting, ready_groups=0, previous=recreated), "t2")
    assert again == recreated and problem_events(recreated, again) == []  # a resync writes and posts nothing

    up = (pod("big-lws-0", 0), pod("big-lws-0-1", 1), pod("big-lws-1", 0), pod("big-lws-1-1", 1))
    assert compute_status(observe(up, ready_groups=2, previous=recreated), "t3")["phase"] == "Ready"
    fixed = Observation(**{**observe(starting, ready_groups=0, previous=recreated).__dict__, "generation": 2})
    ready = next(c for c in compute_status(fixed, "t3")["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReplicasNotReady", ready  # a new spec: the old failure is not carried

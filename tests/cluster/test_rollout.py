"""The Deployment controller's arithmetic: rollout steps within maxSurge/maxUnavailable, and status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sglang_dev.cluster import rollout
from sglang_dev.cluster.rollout import PodView, Strategy, plan_rollout


def test_template_hash_is_stable_and_tracks_the_template() -> None:
    template = {"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "engine"}]}}
    same = {"spec": {"containers": [{"name": "engine"}]}, "metadata": {"labels": {"a": "1"}}}
    changed = {"metadata": {"labels": {"a": "2"}}, "spec": {"containers": [{"name": "engine"}]}}
    assert rollout.template_hash(template) == rollout.template_hash(same)
    assert rollout.template_hash(template) != rollout.template_hash(changed)
    assert len(rollout.template_hash(template)) == 10


@pytest.mark.parametrize(("spec", "replicas", "expected"), [
    ({}, 4, Strategy("RollingUpdate", 1, 1)),  # 25% of 4: surge rounds up, unavailable down
    ({}, 3, Strategy("RollingUpdate", 1, 0)),
    ({"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}, 2,
     Strategy("RollingUpdate", 1, 0)),
    ({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}, 2,
     Strategy("RollingUpdate", 0, 1)),
    ({"strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "50%"}}}, 3,
     Strategy("RollingUpdate", 2, 1)),
    ({"strategy": {"type": "Recreate"}}, 3, Strategy("Recreate", 0, 3)),
])
def test_parse_strategy(spec: dict, replicas: int, expected: Strategy) -> None:
    assert rollout.parse_strategy(spec, replicas) == expected


@pytest.mark.parametrize(("value", "field"), [("lots", "maxSurge"), (-1, "maxUnavailable")])
def test_bad_strategy_names_the_field(value: object, field: str) -> None:
    spec = {"strategy": {"rollingUpdate": {field: value}}}
    with pytest.raises(rollout.DeploymentError, match=f"spec.strategy.rollingUpdate.{field}"):
        rollout.parse_strategy(spec, 2)


def _pods(prefix: str, thash: str, ready: int, unready: int = 0) -> list[PodView]:
    return ([PodView(f"{prefix}-r{i}", thash, True, created=f"2026-01-01T00:00:0{i}Z") for i in range(ready)]
            + [PodView(f"{prefix}-u{i}", thash, False, created=f"2026-01-01T00:01:0{i}Z")
               for i in range(unready)])


def test_fresh_deployment_creates_every_replica() -> None:
    assert plan_rollout(3, Strategy("RollingUpdate", 1, 0), "new", []) == rollout.RolloutPlan(3, ())


def test_scale_down_removes_unready_then_newest() -> None:
    pods = _pods("p", "h", ready=3, unready=1)
    plan = plan_rollout(2, Strategy("RollingUpdate", 1, 0), "h", pods)
    assert plan.create == 0
    assert plan.delete == ("p-u0", "p-r2")


def test_failed_pods_are_replaced() -> None:
    pods = [PodView("a", "h", False, failed=True), PodView("b", "h", True)]
    assert plan_rollout(2, Strategy("RollingUpdate", 1, 0), "h", pods) == rollout.RolloutPlan(1, ("a",))


def test_surge_one_unavailable_zero_keeps_capacity() -> None:
    strategy = Strategy("RollingUpdate", 1, 0)
    old = _pods("old", "h1", ready=2)
    # Step 1: one surge pod, no old pod goes while it is not ready.
    assert plan_rollout(2, strategy, "h2", old) == rollout.RolloutPlan(1, ())
    assert plan_rollout(2, strategy, "h2", old + _pods("new", "h2", 0, 1)) == rollout.RolloutPlan(0, ())
    # Step 2: once it is ready, one old pod goes.
    plan = plan_rollout(2, strategy, "h2", old + _pods("new", "h2", 1))
    assert plan.create == 0 and len(plan.delete) == 1 and plan.delete[0].startswith("old")


def test_recreate_deletes_old_before_creating() -> None:
    strategy = Strategy("Recreate", 0, 2)
    old = _pods("old", "h1", ready=2)
    assert plan_rollout(2, strategy, "h2", old) == rollout.RolloutPlan(0, ("old-r0", "old-r1"))
    assert plan_rollout(2, strategy, "h2", []) == rollout.RolloutPlan(2, ())
    # ... and waits until the old pods have finished terminating.
    going = [PodView("old-r0", "h1", False, terminating=True)]
    assert plan_rollout(2, strategy, "h2", going) == rollout.RolloutPlan(0, ())


def test_terminating_pods_count_for_nothing() -> None:
    pods = [PodView("a", "h", True, terminating=True), PodView("b", "h", True)]
    assert plan_rollout(2, Strategy("RollingUpdate", 1, 0), "h", pods) == rollout.RolloutPlan(1, ())
    counts = rollout.count_pods("h", pods)
    assert (counts.replicas, counts.ready) == (1, 1)


def _simulate(replicas: int, strategy: Strategy, start: int) -> list[tuple[int, int]]:
    """Roll `start` ready old pods to `replicas` new ones; new pods become ready one step after creation.
    Returns (live pods, ready pods) after each step."""
    pods = _pods("old", "h1", ready=start)
    counter = 0
    history = []
    for _ in range(100):
        plan = plan_rollout(replicas, strategy, "h2", pods)
        pods = [p for p in pods if p.name not in plan.delete]
        history.append((len(pods) + plan.create, sum(p.ready for p in pods)))
        # pods created in the previous step are ready now
        pods = [PodView(p.name, p.template_hash, True, created=p.created) for p in pods]
        for _ in range(plan.create):
            counter += 1
            pods.append(PodView(f"new-{counter}", "h2", False, created=f"{counter:05d}"))
        if not plan.create and not plan.delete and all(p.template_hash == "h2" and p.ready for p in pods) \
                and len(pods) == replicas:
            return history
    raise AssertionError(f"rollout did not converge: {pods}")


@settings(max_examples=60, deadline=None)
@given(replicas=st.integers(1, 6), surge=st.integers(0, 3), unavailable=st.integers(0, 3))
def test_rollout_converges_within_its_budget(replicas: int, surge: int, unavailable: int) -> None:
    strategy = rollout.parse_strategy(
        {"strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}, replicas)
    history = _simulate(replicas, strategy, start=replicas)
    for live, ready in history:
        assert live <= replicas + strategy.max_surge
        assert ready >= replicas - strategy.max_unavailable


def test_status_counts_and_conditions() -> None:
    strategy = Strategy("RollingUpdate", 1, 0)
    pods = _pods("old", "h1", 1) + _pods("new", "h2", 1, 1)
    counts = rollout.count_pods("h2", pods)
    status = rollout.deployment_status("m", 2, 7, strategy, counts, {}, "T1")
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (3, 2, 2)
    assert status["availableReplicas"] == 2 and status["unavailableReplicas"] == 0
    assert status["observedGeneration"] == 7
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Progressing"]["reason"] == "ReplicaSetUpdated"
    # Unchanged conditions keep their transition time; a change gets a new one.
    again = rollout.deployment_status("m", 2, 7, strategy, counts, status, "T2")
    assert again == status
    done = rollout.deployment_status("m", 2, 7, strategy, rollout.count_pods("h2", _pods("new", "h2", 2)),
                                     status, "T3")
    progressing = {c["type"]: c for c in done["conditions"]}["Progressing"]
    assert progressing["reason"] == "NewReplicaSetAvailable" and progressing["lastTransitionTime"] == "T3"


def test_build_pod_from_template() -> None:
    owner = rollout.Owner("apps/v1", "Deployment", "tiny", "uid-1")
    template = rollout.PodTemplate({"app": "tiny"}, {"rev": "1"}, {"containers": [{"name": "engine"}]})
    pod = rollout.build_pod(owner, "ns", template, "abc", "xyz12")
    assert pod["metadata"]["name"] == "tiny-abc-xyz12"
    assert pod["metadata"]["labels"] == {"app": "tiny", rollout.HASH_LABEL: "abc"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    assert pod["spec"]["restartPolicy"] == "Always"

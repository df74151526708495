"""Leader election's decisions (operator/sglang_operator/leader.py), without a cluster; the takeover itself is
tested on the real control plane (tests/real/test_operator_ha_real.py)."""

from __future__ import annotations

import pytest
from sglang_operator.leader import LeaseTimings, Observation, decide, lease_body
from sglang_operator.settings import SettingsError, load_settings


def lease(holder: str | None, renew: str = "t1", duration: int = 15, transitions: int = 0) -> dict:
    return {"metadata": {"name": "op", "namespace": "sys", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": duration,
                     "acquireTime": "t0", "leaseTransitions": transitions}}


def test_a_missing_or_released_lease_is_taken_and_our_own_is_renewed():
    seen = Observation()
    assert decide(None, "me", seen, 0.0) == "take"
    assert decide(lease(None), "me", seen, 0.0) == "take"
    assert decide(lease("me"), "me", seen, 0.0) == "renew"


def test_another_holder_is_waited_for_a_full_duration_on_our_own_clock_after_its_last_change():
    seen = Observation()
    held = lease("other", renew="t1")
    seen.see(held, 100.0)
    assert decide(held, "me", seen, 114.9) == "wait"
    renewed = lease("other", renew="t2")  # the holder renewed: the clock starts again
    seen.see(renewed, 110.0)
    assert decide(renewed, "me", seen, 124.9) == "wait"
    seen.see(renewed, 125.0)  # unchanged record: the clock keeps running
    assert decide(renewed, "me", seen, 125.0) == "take"


def test_taking_over_counts_a_transition_and_keeps_the_resource_version_for_a_conditional_put():
    body = lease_body("sys", "op", "me", LeaseTimings(), lease("other", transitions=2), "now")
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "now",
                            "renewTime": "now", "leaseTransitions": 3}
    renewal = lease_body("sys", "op", "me", LeaseTimings(), lease("me", transitions=3), "later")["spec"]
    assert (renewal["acquireTime"], renewal["renewTime"], renewal["leaseTransitions"]) == ("t0", "later", 3)
    assert lease_body("sys", "op", "me", LeaseTimings(), None, "now")["spec"]["leaseTransitions"] == 0


def test_the_leader_gives_up_before_a_standby_may_take_over():
    timings = LeaseTimings.for_duration(6)
    assert timings.retry < timings.renew_deadline < timings.duration
    assert LeaseTimings.for_duration(15) == LeaseTimings()


def test_the_lease_setting_names_namespace_and_name():
    settings = load_settings(["--leader-lease", "sglang-system/sglang-operator"], env={})
    assert settings.lease == ("sglang-system", "sglang-operator")
    assert load_settings([], env={}).lease is None
    with pytest.raises(SettingsError, match="--leader-lease / SGLANG_OPERATOR_LEADER_LEASE"):
        load_settings(["--leader-lease", "no-slash"], env={})
    with pytest.raises(SettingsError, match="--leader-lease-seconds"):
        load_settings(["--leader-lease-seconds", "1"], env={})

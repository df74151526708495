"""apply: which live objects need a write, and what a replace keeps."""

from __future__ import annotations

import copy

from sglang_operator.apply import APPLIED_ANNOTATION, contains, for_replace, needs_write, stamped
from sglang_operator.builders import Owner, build_children
from sglang_operator.settings import OperatorSettings
from sglang_operator.spec import parse_spec

DESIRED = {c["kind"]: c for c in build_children(Owner("m", "ns", "u"), parse_spec({"model": "org/m"}),
                                                 OperatorSettings())}


def as_served(obj: dict) -> dict:
    """What an API server returns: our fields plus defaults, status, metadata and normalized quantities."""
    live = copy.deepcopy(stamped(obj))
    live["metadata"].update(uid="x", resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z")
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    if obj["kind"] == "Deployment":
        pod = live["spec"]["template"]["spec"]
        pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
        pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
        limits = pod["containers"][0]["resources"]["limits"]
        limits["nvidia.com/gpu"] = str(limits["nvidia.com/gpu"])
        live["status"] = {"replicas": 1}
    if obj["kind"] == "Service":
        live["spec"].update(clusterIP="10.0.0.5", clusterIPs=["10.0.0.5"], sessionAffinity="None")
    return live


def test_a_served_object_with_defaults_needs_no_write():
    for obj in DESIRED.values():
        assert not needs_write(as_served(obj), obj), obj["kind"]


def test_a_hand_edit_or_a_spec_change_needs_a_write():
    live = as_served(DESIRED["Deployment"])
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    assert needs_write(live, DESIRED["Deployment"])
    live = as_served(DESIRED["Service"])
    del live["metadata"]["annotations"][APPLIED_ANNOTATION]
    assert needs_write(live, DESIRED["Service"])
    changed = copy.deepcopy(DESIRED["ConfigMap"])
    changed["data"]["config.json"] = "{}"
    assert needs_write(as_served(DESIRED["ConfigMap"]), changed)


def test_replace_keeps_server_fields_and_foreign_annotations():
    live = as_served(DESIRED["Service"])
    out = for_replace(live, DESIRED["Service"])
    assert out["spec"]["clusterIP"] == "10.0.0.5" and out["metadata"]["resourceVersion"] == "7"
    assert "sessionAffinity" not in out["spec"]  # re-defaulted by the server, not ours to keep
    live = as_served(DESIRED["Deployment"])
    out = for_replace(live, DESIRED["Deployment"])
    assert out["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert contains(out, stamped(DESIRED["Deployment"]))


def test_contains_is_strict_about_lists_and_booleans():
    assert contains({"a": [1, 2], "b": "x"}, {"a": [1, 2]})
    assert not contains({"a": [1, 2, 3]}, {"a": [1, 2]})
    assert not contains({"a": "True"}, {"a": True})
    assert contains({"gpu": "2"}, {"gpu": 2}) and not contains({"gpu": "3"}, {"gpu": 2})

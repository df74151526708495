"""Patch flavours (pure functions) and deletion: finalizers and ownerReference cascades."""

from __future__ import annotations

import json

import pytest
from helpers import DEFAULT, deployment, fresh_api, merge, rt, widget
from sglang_dev.emulator import patch
from sglang_dev.emulator.api import WriteOptions
from sglang_dev.emulator.errors import ApiError


def test_merge_patch_merges_objects_and_null_deletes():
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert patch.merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2]}  # the input is never mutated


def test_json_patch_operations():
    doc = {"a": [1, 2], "b": {"c": "x"}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "remove", "path": "/a/0"},
        {"op": "replace", "path": "/b/c", "value": "y"},
        {"op": "copy", "from": "/b/c", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e"},
        {"op": "test", "path": "/e", "value": "y"},
        {"op": "add", "path": "/k~1v", "value": 1},
    ]
    assert patch.json_patch(doc, ops) == {"a": [2, 3], "b": {"c": "y"}, "e": "y", "k/v": 1}
    with pytest.raises(ApiError) as err:
        patch.json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert err.value.code == 422


def test_strategic_merge_uses_merge_keys_and_directives():
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "1", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "1"},
            ],
            "volumes": [{"name": "v1"}, {"name": "v2"}],
        },
        "metadata": {"finalizers": ["x"]},
    }
    body = {
        "spec": {
            "containers": [
                {"name": "a", "image": "2", "ports": [{"containerPort": 81}]},
                {"name": "c", "image": "1"},
                {"name": "b", "$patch": "delete"},
            ],
            "volumes": [{"name": "v2", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
        },
        "metadata": {"finalizers": ["y"]},
    }
    result = patch.strategic_merge(pod, body)
    assert [c["name"] for c in result["spec"]["containers"]] == ["a", "c"]
    assert result["spec"]["containers"][0]["image"] == "2"
    assert [p["containerPort"] for p in result["spec"]["containers"][0]["ports"]] == [80, 81]
    assert result["spec"]["volumes"] == [{"name": "v1"}]
    assert result["metadata"]["finalizers"] == ["x", "y"]
    replaced = patch.strategic_merge(pod, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}


def test_strategic_merge_is_refused_for_custom_resources():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    body = json.dumps({"spec": {"size": 2}}).encode()
    with pytest.raises(ApiError) as err:
        api.patch(widgets, "default", "w1", None, patch.STRATEGIC_PATCH, body, DEFAULT)
    assert err.value.code == 415


def apply(api, rt_, obj, manager="m"):
    body = json.dumps(obj).encode()
    return api.patch(
        rt_,
        "default",
        obj["metadata"]["name"],
        None,
        patch.APPLY_PATCH,
        body,
        WriteOptions(field_manager=manager),
    )


def test_apply_patch_creates_then_merges_list_maps_by_key():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    created = apply(api, widgets, widget(parts=[{"name": "a", "weight": 1}]))
    assert created.code == 201
    updated = apply(
        api, widgets, widget(parts=[{"name": "a", "weight": 1}, {"name": "b"}]), manager="other"
    ).obj
    assert updated["spec"]["parts"] == [{"name": "a", "weight": 1}, {"name": "b", "weight": 10}]
    managers = {e["manager"]: e for e in updated["metadata"]["managedFields"]}
    assert set(managers) == {"m", "other"} and managers["m"]["operation"] == "Apply"
    assert 'k:{"name":"a"}' in managers["m"]["fieldsV1"]["f:spec"]["f:parts"]


def test_apply_removes_what_a_manager_stopped_applying_unless_another_owns_it():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    first = widget(size=3, parts=[{"name": "a"}, {"name": "b"}])
    first["metadata"]["labels"] = {"keep": "1", "drop": "1"}
    apply(api, widgets, first)
    apply(api, widgets, widget(mode="slow"), manager="helper")  # another manager owns spec.mode
    second = widget(mode="slow", parts=[{"name": "a"}])
    second["metadata"]["labels"] = {"keep": "1"}
    result = apply(api, widgets, second).obj
    assert result["metadata"]["labels"] == {"keep": "1"}
    assert [p["name"] for p in result["spec"]["parts"]] == ["a"]
    assert result["spec"]["size"] == 1  # dropped by its only manager, so the schema default is back
    third = apply(api, widgets, widget(parts=[{"name": "a"}])).obj
    assert third["spec"]["mode"] == "slow"  # still owned by "helper"
    again = apply(api, widgets, widget(parts=[{"name": "a"}])).obj
    assert again["metadata"]["resourceVersion"] == third["metadata"]["resourceVersion"]  # no-op apply


def test_apply_needs_a_field_manager():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    with pytest.raises(ApiError) as err:
        api.patch(widgets, "default", "w1", None, patch.APPLY_PATCH, json.dumps(widget()).encode(), DEFAULT)
    assert err.value.code == 422 and "fieldManager: Required value" in err.value.message


def owned(name: str, owner: dict) -> dict:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_deleting_an_owner_cascades_to_its_dependents_and_theirs():
    api = fresh_api()
    widgets, deploys, cms = (
        rt(api, "example.dev/v1alpha1", "widgets"),
        rt(api, "apps/v1", "deployments"),
        rt(api, "v1", "configmaps"),
    )
    owner = api.create(widgets, "default", widget(), DEFAULT).obj
    child = api.create(deploys, "default", {**deployment("child"), **owned("child", owner)}, DEFAULT).obj
    api.create(cms, "default", owned("grandchild", child), DEFAULT)
    api.create(cms, "default", {"metadata": {"name": "bystander"}}, DEFAULT)
    api.delete(widgets, "default", "w1", DEFAULT)
    assert api.store.get(deploys.key, "default", "child") is None
    assert api.store.get(cms.key, "default", "grandchild") is None
    assert api.store.get(cms.key, "default", "bystander") is not None


def test_orphan_propagation_keeps_dependents_without_the_reference():
    api = fresh_api()
    widgets, cms = rt(api, "example.dev/v1alpha1", "widgets"), rt(api, "v1", "configmaps")
    owner = api.create(widgets, "default", widget(), DEFAULT).obj
    api.create(cms, "default", owned("child", owner), DEFAULT)
    api.delete(widgets, "default", "w1", WriteOptions(propagation="Orphan"))
    assert "ownerReferences" not in api.store.get(cms.key, "default", "child")["metadata"]


def test_finalizers_hold_deletion_until_removed():
    api = fresh_api()
    widgets, cms = rt(api, "example.dev/v1alpha1", "widgets"), rt(api, "v1", "configmaps")
    owner = api.create(
        widgets, "default", {**widget(), "metadata": {"name": "w1", "finalizers": ["x/y"]}}, DEFAULT
    ).obj
    api.create(cms, "default", owned("child", owner), DEFAULT)
    marked = api.delete(widgets, "default", "w1", DEFAULT).obj
    assert marked["metadata"]["deletionTimestamp"]
    assert api.store.get(cms.key, "default", "child") is not None  # the owner still exists
    api.patch(widgets, "default", "w1", None, *merge({"metadata": {"finalizers": None}}), DEFAULT)
    assert api.store.get(widgets.key, "default", "w1") is None
    assert api.store.get(cms.key, "default", "child") is None


def test_deleting_a_namespace_or_a_crd_removes_what_lives_in_it():
    api = fresh_api()
    nss, cms = rt(api, "v1", "namespaces"), rt(api, "v1", "configmaps")
    api.create(nss, None, {"metadata": {"name": "team"}}, DEFAULT)
    api.create(cms, "team", {"metadata": {"name": "c"}}, DEFAULT)
    api.delete(nss, None, "team", DEFAULT)
    assert api.store.get(cms.key, "team", "c") is None
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    api.delete(
        rt(api, "apiextensions.k8s.io/v1", "customresourcedefinitions"), None, "widgets.example.dev", DEFAULT
    )
    assert api.store.resource("example.dev", "v1alpha1", "widgets") is None
    assert api.store.items(("example.dev", "widgets")) == []


def test_a_running_pod_terminates_gracefully_until_its_kubelet_confirms():
    api = fresh_api(widgets=False)
    api.graceful_pods = True
    pods = rt(api, "v1", "pods")
    spec = {"containers": [{"name": "c", "image": "x:1"}], "terminationGracePeriodSeconds": 45}
    api.create(pods, "default", {"metadata": {"name": "pending"}, "spec": spec}, DEFAULT)
    api.delete(pods, "default", "pending", DEFAULT)  # never ran anywhere: gone at once
    assert api.store.get(pods.key, "default", "pending") is None

    api.create(pods, "default", {"metadata": {"name": "p"}, "spec": spec}, DEFAULT)
    api.patch(pods, "default", "p", "status", *merge({"status": {"phase": "Running"}}), DEFAULT)
    marked = api.delete(pods, "default", "p", DEFAULT).obj
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 45 and marked["metadata"]["deletionTimestamp"]
    api.patch(pods, "default", "p", "status", *merge({"status": {"phase": "Running", "x": 1}}), DEFAULT)
    assert api.store.get(pods.key, "default", "p") is not None  # status writes while terminating are fine
    api.delete(pods, "default", "p", WriteOptions(grace_period=0))  # the kubelet stopped it
    assert api.store.get(pods.key, "default", "p") is None


def test_deleting_a_deployment_terminates_its_running_pods_gracefully():
    api = fresh_api(widgets=False)
    api.graceful_pods = True
    deploys, pods = rt(api, "apps/v1", "deployments"), rt(api, "v1", "pods")
    owner = api.create(deploys, "default", deployment(), DEFAULT).obj
    pod = {
        **owned("web-1", owner),
        "spec": {"nodeName": "local", "containers": [{"name": "c", "image": "x"}]},
    }
    api.create(pods, "default", pod, DEFAULT)
    api.delete(deploys, "default", "web", DEFAULT)
    assert api.store.get(pods.key, "default", "web-1")["metadata"]["deletionGracePeriodSeconds"] == 30


def test_pods_go_at_once_unless_graceful_deletion_is_enabled():
    api = fresh_api(widgets=False)
    pods = rt(api, "v1", "pods")
    api.create(
        pods, "default", {"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []}}, DEFAULT
    )
    api.delete(pods, "default", "p", DEFAULT)
    assert api.store.get(pods.key, "default", "p") is None

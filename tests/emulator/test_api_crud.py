"""CRUD semantics on the API layer: metadata stamping, resourceVersion conflicts, generation, subresources."""

from __future__ import annotations

import json

import pytest
from helpers import DEFAULT, deployment, fresh_api, merge, rt, widget
from sglang_dev.emulator.api import WriteOptions
from sglang_dev.emulator.errors import ApiError


def test_create_stamps_metadata_and_get_returns_it():
    api = fresh_api()
    deploys = rt(api, "apps/v1", "deployments")
    created = api.create(deploys, "default", deployment(), DEFAULT).obj
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0 and meta["generation"] == 1
    assert api.get(deploys, "default", "web") == created
    with pytest.raises(ApiError) as err:
        api.create(deploys, "default", deployment(), DEFAULT)
    assert err.value.code == 409 and err.value.reason == "AlreadyExists"


def test_create_refuses_missing_namespace_and_bad_names():
    api = fresh_api()
    cms = rt(api, "v1", "configmaps")
    with pytest.raises(ApiError) as err:
        api.create(cms, "nope", {"metadata": {"name": "a"}}, DEFAULT)
    assert err.value.code == 404 and 'namespaces "nope" not found' in err.value.message
    with pytest.raises(ApiError) as err:
        api.create(cms, "default", {"metadata": {"name": "Bad_Name"}}, DEFAULT)
    assert err.value.code == 422 and "metadata.name" in err.value.message


def test_generate_name_makes_a_unique_name():
    api = fresh_api()
    events = rt(api, "v1", "events")
    a = api.create(events, "default", {"metadata": {"generateName": "ev-"}}, DEFAULT).obj
    b = api.create(events, "default", {"metadata": {"generateName": "ev-"}}, DEFAULT).obj
    assert a["metadata"]["name"].startswith("ev-") and a["metadata"]["name"] != b["metadata"]["name"]


def test_stale_resource_version_conflicts_on_put_and_patch():
    api = fresh_api()
    cms = rt(api, "v1", "configmaps")
    first = api.create(cms, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}, DEFAULT).obj
    second = api.replace(cms, "default", "c", None, {**first, "data": {"a": "2"}}, DEFAULT).obj
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as err:
        api.replace(cms, "default", "c", None, {**first, "data": {"a": "3"}}, DEFAULT)
    assert err.value.code == 409 and "the object has been modified" in err.value.message
    stale = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "data": {"a": "4"}}
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "c", None, *merge(stale), DEFAULT)
    assert err.value.code == 409
    assert api.get(cms, "default", "c")["data"] == {"a": "2"}


def test_failed_json_patch_test_is_422_and_changes_nothing():
    api = fresh_api()
    cms = rt(api, "v1", "configmaps")
    api.create(cms, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}, DEFAULT)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
        {"op": "replace", "path": "/data/a", "value": "2"},
    ]
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "c", None, "application/json-patch+json", json.dumps(ops).encode(), DEFAULT)
    assert err.value.code == 422
    assert api.get(cms, "default", "c")["data"] == {"a": "1"}


def test_noop_write_keeps_resource_version():
    api = fresh_api()
    cms = rt(api, "v1", "configmaps")
    created = api.create(cms, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}, DEFAULT).obj
    again = api.patch(cms, "default", "c", None, *merge({"data": {"a": "1"}}), DEFAULT).obj
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generation_bumps_on_spec_changes_only():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    labelled = api.patch(
        widgets, "default", "w1", None, *merge({"metadata": {"labels": {"x": "y"}}}), DEFAULT
    )
    assert labelled.obj["metadata"]["generation"] == 1
    status = api.patch(widgets, "default", "w1", "status", *merge({"status": {"phase": "Ready"}}), DEFAULT)
    assert status.obj["metadata"]["generation"] == 1 and status.obj["status"]["phase"] == "Ready"
    changed = api.patch(widgets, "default", "w1", None, *merge({"spec": {"size": 3}}), DEFAULT)
    assert changed.obj["metadata"]["generation"] == 2


def test_status_subresource_is_separated_from_the_main_resource():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    created = api.create(widgets, "default", {**widget(), "status": {"phase": "Fake"}}, DEFAULT).obj
    assert "phase" not in created.get("status", {})  # status is dropped on create
    main = api.patch(
        widgets, "default", "w1", None, *merge({"spec": {"size": 2}, "status": {"phase": "X"}}), DEFAULT
    ).obj
    assert main["spec"]["size"] == 2 and "phase" not in main.get("status", {})
    via_status = api.patch(
        widgets,
        "default",
        "w1",
        "status",
        *merge({"spec": {"size": 5}, "status": {"phase": "Ready"}}),
        DEFAULT,
    ).obj
    assert via_status["spec"]["size"] == 2 and via_status["status"]["phase"] == "Ready"


def test_scale_subresource_for_deployments_and_custom_resources():
    api = fresh_api()
    deploys = rt(api, "apps/v1", "deployments")
    api.create(deploys, "default", deployment(replicas=2), DEFAULT)
    scale = api.get(deploys, "default", "web", "scale")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"]["selector"] == "app=web"
    scaled = api.patch(deploys, "default", "web", "scale", *merge({"spec": {"replicas": 4}}), DEFAULT).obj
    assert scaled["kind"] == "Scale" and scaled["spec"]["replicas"] == 4
    assert api.get(deploys, "default", "web")["spec"]["replicas"] == 4

    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    api.patch(
        widgets, "default", "w1", "status", *merge({"status": {"replicas": 1, "selector": "a=b"}}), DEFAULT
    )
    scale = api.get(widgets, "default", "w1", "scale")
    assert scale["spec"]["replicas"] == 1 and scale["status"] == {"replicas": 1, "selector": "a=b"}
    put = api.replace(widgets, "default", "w1", "scale", {**scale, "spec": {"replicas": 3}}, DEFAULT).obj
    assert put["spec"]["replicas"] == 3 and api.get(widgets, "default", "w1")["spec"]["replicas"] == 3
    with pytest.raises(ApiError) as err:
        api.get(rt(api, "v1", "configmaps"), "default", "x", "scale")
    assert err.value.code == 404


def test_custom_resource_put_needs_a_resource_version():
    api = fresh_api()
    widgets = rt(api, "example.dev/v1alpha1", "widgets")
    api.create(widgets, "default", widget(), DEFAULT)
    with pytest.raises(ApiError) as err:
        api.replace(widgets, "default", "w1", None, widget(), DEFAULT)
    assert err.value.code == 422 and "metadata.resourceVersion" in err.value.message


def test_dry_run_changes_nothing():
    api = fresh_api()
    cms = rt(api, "v1", "configmaps")
    rv = api.store.rv
    result = api.create(cms, "default", {"metadata": {"name": "c"}}, WriteOptions(dry_run=True))
    assert result.code == 201 and api.store.get(cms.key, "default", "c") is None and api.store.rv == rv


def test_list_has_kind_api_version_and_selectors_apply():
    api = fresh_api()
    pods = rt(api, "v1", "pods")
    for name, node, tier in (("a", "n1", "web"), ("b", "n2", "web"), ("c", "n1", "db")):
        api.create(
            pods,
            "default",
            {
                "metadata": {"name": name, "labels": {"tier": tier}},
                "spec": {"nodeName": node, "containers": []},
            },
            DEFAULT,
        )
    api.patch(pods, "default", "a", "status", *merge({"status": {"phase": "Running"}}), DEFAULT)

    def names(label=None, field=None):
        listed = api.list(pods, "default", label, field)
        assert listed["kind"] == "PodList" and listed["apiVersion"] == "v1"
        return [p["metadata"]["name"] for p in listed["items"]]

    assert names() == ["a", "b", "c"]
    assert names("tier=web") == ["a", "b"]
    assert names("tier in (db, cache)") == ["c"]
    assert names("tier!=web") == ["c"]
    assert names("!tier") == []
    assert names(field="spec.nodeName=n1") == ["a", "c"]
    assert names(field="status.phase=Running") == ["a"]
    assert names(field="status.phase!=Running,metadata.name=b") == ["b"]
    assert names("tier=web", "spec.nodeName=n1") == ["a"]
    assert api.list(pods, "kube-system", None, None)["items"] == []

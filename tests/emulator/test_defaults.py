"""Built-in defaulting, as a real apiserver does it on every write: operators must live with these fields."""

from __future__ import annotations

import copy

from helpers import DEFAULT, deployment, fresh_api, rt


def test_deployment_template_gets_pod_and_container_defaults():
    api = fresh_api(widgets=False)
    deploys = rt(api, "apps/v1", "deployments")
    body = deployment(image="repo/engine:1.0")
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": 8000}}
    container["ports"] = [{"containerPort": 8000}]
    stored = api.create(deploys, "default", body, DEFAULT).obj
    spec = stored["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["metadata"]["creationTimestamp"] is None
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst"
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["schedulerName"] == "default-scheduler"
    c = pod["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP" and c["readinessProbe"]["periodSeconds"] == 10

    # Re-sending the same desired object is a no-op once defaulted: no new resourceVersion.
    again = api.replace(deploys, "default", "web", None, body, DEFAULT).obj
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


def test_latest_or_untagged_images_are_pulled_always():
    api = fresh_api(widgets=False)
    pods = rt(api, "v1", "pods")
    body = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "a", "image": "nginx"},
                {"name": "b", "image": "nginx:latest"},
                {"name": "c", "image": "host:5000/nginx"},
            ]
        },
    }
    stored = api.create(pods, "default", body, DEFAULT).obj
    assert [c["imagePullPolicy"] for c in stored["spec"]["containers"]] == ["Always"] * 3
    assert stored["status"] == {"phase": "Pending"}


def test_service_cluster_ip_is_allocated_once_and_kept_on_update():
    api = fresh_api(widgets=False)
    services = rt(api, "v1", "services")
    body = {"metadata": {"name": "s"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    created = api.create(services, "default", copy.deepcopy(body), DEFAULT).obj
    ip = created["spec"]["clusterIP"]
    assert ip.startswith("10.96.") and created["spec"]["clusterIPs"] == [ip]
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    updated = api.replace(services, "default", "s", None, body, DEFAULT).obj
    assert updated["spec"]["clusterIP"] == ip
    other = api.create(services, "default", {**body, "metadata": {"name": "t"}}, DEFAULT).obj
    assert other["spec"]["clusterIP"] != ip


def test_secret_string_data_is_folded_into_data():
    api = fresh_api(widgets=False)
    secrets = rt(api, "v1", "secrets")
    body = {"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"token": "t0p", "a": "y"}}
    stored = api.create(secrets, "default", body, DEFAULT).obj
    assert stored["data"] == {"a": "eQ==", "token": "dDBw"} and "stringData" not in stored
    assert stored["type"] == "Opaque"

"""The LeaderWorkerSet controller (sigs.k8s.io/lws, built by `make cluster-bins`) in the local control plane.

What LWS's own install does with kustomize and cert-controller, done for a process on loopback:
- its CRDs (leaderworkersets, disaggregatedsets: the controller watches both) applied and Established;
- its webhooks served by the process at https://127.0.0.1:<port>, with a serving certificate from the control
  plane's CA (the project's `certs` tool), and registered with `clientConfig.url` + that CA as `caBundle`.
  LWS's internal certificate management (cert-controller: Secrets and a webhook Service in its namespace) is
  disabled. The webhooks are needed, not optional: the pod webhook gives LWS pods their worker index label and
  the LWS_LEADER_ADDRESS / LWS_GROUP_SIZE / LWS_WORKER_INDEX environment, and the LWS webhooks default and
  validate the objects. The pod webhooks select only LWS pods (as LWS's kustomize patch does), so the rest of
  the cluster does not depend on the process; the DisaggregatedSet webhook is not registered (nothing here
  uses that kind);
- no leader election, metrics off, its health probe on loopback; it authenticates with the admin certificate
  (system:masters), where a cluster would give it LWS's own RBAC.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import yaml

from .bins import LwsBins
from .procs import free_port

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MUTATING_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
WEBHOOK_NAME = "sglang-dev-lws"
LWS_POD_SELECTOR = {"matchExpressions": [{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}]}
# (name, path, group, resource, operations, object selector) as in LWS's config/webhook (with its patches).
MUTATING = (
    ("mleaderworkerset.kb.io", "/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
     "leaderworkerset.x-k8s.io", "leaderworkersets", ("CREATE", "UPDATE"), None),
    ("mpod.kb.io", "/mutate--v1-pod", "", "pods", ("CREATE",), LWS_POD_SELECTOR),
)
VALIDATING = (
    ("vleaderworkerset.kb.io", "/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
     "leaderworkerset.x-k8s.io", "leaderworkersets", ("CREATE", "UPDATE"), None),
    ("vpod.kb.io", "/validate--v1-pod", "", "pods", ("CREATE", "UPDATE"), LWS_POD_SELECTOR),
)


def controller_config(webhook_port: int, cert_dir: Path, health_port: int) -> dict[str, Any]:
    """LWS's Configuration file (config.lws.x-k8s.io/v1alpha1) for a loopback process."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},  # off
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
    }


def webhook_configuration(kind: str, hooks: tuple[Any, ...], base_url: str, ca_bundle: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": WEBHOOK_NAME},
        "webhooks": [
            {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
             "clientConfig": {"url": base_url + path, "caBundle": ca_bundle},
             "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": list(ops),
                        "resources": [resource]}],
             **({"objectSelector": selector} if selector else {})}
            for name, path, group, resource, ops, selector in hooks
        ],
    }


class LwsController:
    """Started by ControlPlane.start() when LWS is built (find_lws()); runs in the plane's process group."""

    def __init__(self, plane: Any, bins: LwsBins) -> None:
        self.plane = plane
        self.bins = bins
        self.dir = plane.state_dir / "lws"

    def start(self, timeout: float = 60.0) -> None:
        self._apply_crds(timeout)
        cert_dir = self.dir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        pair = self.plane.issue_cert("lws-webhook", "lws-webhook", dns=("localhost",), ips=("127.0.0.1",),
                                     usage="server")
        (cert_dir / "tls.crt").write_bytes(pair.cert.read_bytes())
        (cert_dir / "tls.key").write_bytes(pair.key.read_bytes())
        webhook_port, health_port = free_port(), free_port()
        config = self.dir / "config.yaml"
        config.write_text(yaml.safe_dump(controller_config(webhook_port, cert_dir, health_port)))
        self.plane.spawn("lws-controller", [str(self.bins.lws), "--config", str(config),
                                            "--kubeconfig", str(self.plane.admin_kubeconfig),
                                            "--zap-devel=false", "--zap-log-level=info"])
        self.plane._wait("lws-controller", f"http://127.0.0.1:{health_port}/readyz", ssl_context=None)
        ca_bundle = base64.b64encode(self.plane.ca.read_bytes()).decode()
        base = f"https://127.0.0.1:{webhook_port}"
        for path, kind, hooks in ((MUTATING_PATH, "MutatingWebhookConfiguration", MUTATING),
                                  (VALIDATING_PATH, "ValidatingWebhookConfiguration", VALIDATING)):
            self._put(path, webhook_configuration(kind, hooks, base, ca_bundle))

    def _put(self, collection: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        status, live = self.plane.request("GET", f"{collection}/{name}")
        if status == 200:
            version = live["metadata"]["resourceVersion"]
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
            status, answer = self.plane.request("PUT", f"{collection}/{name}", obj)
        else:
            status, answer = self.plane.request("POST", collection, obj)
        if status not in (200, 201):
            raise RuntimeError(f"{obj['kind']} {name}: HTTP {status} {answer}")

    def _apply_crds(self, timeout: float) -> None:
        names = []
        for path in self.bins.crds:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self._put(CRD_PATH, doc)
                    names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                _, crd = self.plane.request("GET", f"{CRD_PATH}/{name}")
                status = crd.get("status") or {} if isinstance(crd, dict) else {}
                conditions = status.get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established within {timeout:.0f}s: {conditions}")
                time.sleep(0.2)

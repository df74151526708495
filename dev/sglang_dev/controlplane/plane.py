"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) as child
processes of one process group, on loopback, with a PKI made for this run. See README.md for the interface.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bins import ClusterBins, LwsBins, find_bins
from .pki import APISERVER_DNS, CertificateAuthority, CertPair, write_kubeconfig
from .procs import ProcessGroup, free_port, stop_recorded

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The `kubernetes` Service's ClusterIP: the first address of the range; pods reach the apiserver by it.
KUBERNETES_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1])
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The controllers a cluster running the operator's workloads needs; no cloud, node IPAM, attach or jobs.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",  # ownerReferences: children go with their SGLangModel
    "endpointslice-controller",  # what the Service proxy follows
    "serviceaccount-controller",  # the `default` ServiceAccount in each namespace
    "serviceaccount-token-controller",
    "namespace-controller",  # namespace deletion empties the namespace
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt, referenced by projected token volumes
    "pod-garbage-collector-controller",  # pods of deleted nodes, orphaned terminating pods
    "disruption-controller",  # PodDisruptionBudget status
    "clusterrole-aggregation-controller",  # admin/edit/view and aggregated chart roles
    "statefulset-controller",  # LeaderWorkerSet groups are StatefulSets (multi-node models)
    "persistentvolume-binder-controller",  # binds claims: kube-scheduler places no pod on an unbound one
)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message holds the end of its log."""


class ControlPlane:
    """`ControlPlane(state_dir).start()` -> itself, running; `.stop()` ends every process. A context manager.

    After start: `server` (https URL), `ca` (CA cert path), `admin_kubeconfig` (O=system:masters client
    cert), `ports`, `state_dir`, `log_dir`; `issue_cert()`, `issue_node_cert()`, `create_token()`,
    `token_kubeconfig()`, `cert_kubeconfig()`.
    """

    def __init__(
        self,
        state_dir: Path | str,
        bins: ClusterBins | None = None,
        *,
        start_timeout: float = 120.0,
        lws: LwsBins | None = None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.bins = bins or find_bins()
        self.lws = lws  # the LeaderWorkerSet controller (find_lws()), started with the plane when given
        self.kubectl = self.bins.kubectl  # kubectl of the same Kubernetes release
        self.start_timeout = start_timeout
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.etcd_dir = self.state_dir / "etcd"
        self.run_file = self.state_dir / "run.json"
        self.ca = self.pki_dir / "ca.crt"
        self.admin_kubeconfig = self.state_dir / "admin.kubeconfig"
        self.ports: dict[str, int] = {}
        self.server = ""
        self._authority = CertificateAuthority(self.bins.k8s, self.pki_dir)
        self._group: ProcessGroup | None = None
        self._admin: CertPair | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Clean an earlier run's state, make the PKI, start the four components, wait until all are ready."""
        self.clean_stale()
        try:
            self._make_pki()
            self._group = ProcessGroup(self.run_file, self.log_dir)
            self.ports = {
                name: free_port()
                for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
            }
            self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
            self._start_etcd()
            self._wait("etcd", f"http://127.0.0.1:{self.ports['etcd']}/health", ssl_context=None)
            self._group.spawn("kube-apiserver", self._apiserver_argv())
            self._wait("kube-apiserver", f"{self.server}/readyz", ssl_context=self._admin_ssl())
            write_kubeconfig(self.admin_kubeconfig, self.server, self.ca, client=self._admin, user="admin")
            self._group.spawn("kube-controller-manager", self._controller_manager_argv())
            self._group.spawn("kube-scheduler", self._scheduler_argv())
            for name, port in (
                ("kube-controller-manager", "controller-manager"),
                ("kube-scheduler", "scheduler"),
            ):
                self._wait(name, f"https://127.0.0.1:{self.ports[port]}/healthz", ssl_context=self._ca_ssl())
            # The controllers are working once the `default` ServiceAccount exists (tokens can be requested).
            self._wait(
                "kube-controller-manager",
                f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
                ssl_context=self._admin_ssl(),
            )
            if self.lws is not None:
                from .lws import LwsController

                LwsController(self, self.lws).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 3.0) -> None:
        """End every component (SIGTERM, then SIGKILL after `grace` s: the apiserver drains its watches for
        longer than a throwaway cluster is worth) and verify none is left; idempotent."""
        if self._group is not None:
            self._group.stop(grace)
            self._group = None

    def clean_stale(self) -> None:
        """End the processes of an earlier run of this state dir (if still alive) and delete its state: a
        fresh CA, etcd and logs every start, so nothing from an earlier run is reused by mistake."""
        if self._group is not None:
            raise ControlPlaneError(f"control plane in {self.state_dir} is running; stop() it first")
        stop_recorded(self.run_file, marker=str(self.state_dir))
        for path in (self.pki_dir, self.etcd_dir, self.log_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.state_dir.glob("*.kubeconfig"):
            path.unlink()
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: Sequence[str]) -> None:
        """Run one more component in the plane's process group (stopped with it; log in `log_dir`)."""
        if self._group is None:
            raise ControlPlaneError("the control plane is not running")
        self._group.spawn(name, argv)

    def exited(self) -> dict[str, int]:
        """Components that have exited since start, with exit codes (empty while healthy)."""
        return self._group.exited() if self._group else {}

    # ---- credentials -------------------------------------------------------------------------------------

    def issue_cert(self, name: str, cn: str, **options: Any) -> CertPair:
        """A certificate from this run's CA in `<state>/pki/<name>.crt|.key`; options as
        `CertificateAuthority.issue` (orgs, dns, ips, usage, days)."""
        return self._authority.issue(name, cn, **options)

    def issue_node_cert(self, node_name: str, ips: Sequence[str] = ("127.0.0.1",)) -> CertPair:
        """A node's certificate, good both as the kubelet API's serving certificate (the apiserver checks it
        against this CA at the node's InternalIP) and as the node's client identity for the Node authorizer
        and NodeRestriction (CN=system:node:<name>, O=system:nodes)."""
        return self.issue_cert(
            f"node-{node_name}",
            f"system:node:{node_name}",
            orgs=("system:nodes",),
            dns=(node_name, "localhost"),
            ips=ips,
            usage="both",
        )

    def cert_kubeconfig(self, name: str, client: CertPair) -> Path:
        """A kubeconfig at `<state>/<name>.kubeconfig` authenticating with a client certificate."""
        return write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig", self.server, self.ca, client=client, user=name
        )

    def request(self, method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, Any]:
        """One JSON request as the admin (system:masters); returns (HTTP status, decoded body) and never
        raises on an HTTP error status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._admin_ssl(), timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def create_token(
        self,
        namespace: str,
        service_account: str,
        expiration_seconds: int = 3600,
        audiences: Sequence[str] = (),
    ) -> str:
        """A ServiceAccount token from the TokenRequest API (as `kubectl create token`)."""
        spec: dict[str, object] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        status, answer = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{service_account}: HTTP {status} {answer}")
        return str(answer["status"]["token"])

    def token_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig at `<state>/<name>.kubeconfig` authenticating with a bearer token (e.g. a
        ServiceAccount's, so RBAC applies: the admin certificate bypasses it)."""
        return write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig", self.server, self.ca, token=token, user=name
        )

    # ---- internals ---------------------------------------------------------------------------------------

    def _make_pki(self) -> None:
        authority = self._authority
        authority.create()
        authority.issue(
            "apiserver",
            "kube-apiserver",
            dns=APISERVER_DNS,
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
            usage="server",
        )
        self._admin = authority.issue("admin", "admin", orgs=("system:masters",), usage="client")
        authority.issue(
            "controller-manager",
            "system:kube-controller-manager",
            dns=("localhost",),
            ips=("127.0.0.1",),
            usage="both",
        )
        authority.issue(
            "scheduler", "system:kube-scheduler", dns=("localhost",), ips=("127.0.0.1",), usage="both"
        )
        # The apiserver's identity towards kubelets (logs, exec, port-forward); the node agent authorizes it.
        authority.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            orgs=("system:masters",),
            usage="client",
        )
        authority.make_key("service-account")

    def _pki(self, name: str) -> str:
        return str(self.pki_dir / name)

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        assert self._group is not None
        self._group.spawn(
            "etcd",
            [
                str(self.bins.etcd),
                "--name=local",
                f"--data-dir={self.etcd_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",  # test data: a power loss loses nothing we keep
                "--log-level=warn",
            ],
        )

    def _apiserver_argv(self) -> list[str]:
        return [
            str(self.bins.k8s),
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            "--advertise-address=127.0.0.1",
            # A loopback advertise address fails Endpoints validation: no Endpoints for `kubernetes`.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={self._pki('apiserver.crt')}",
            f"--tls-private-key-file={self._pki('apiserver.key')}",
            f"--client-ca-file={self.ca}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._pki('service-account.key')}",
            f"--service-account-signing-key-file={self._pki('service-account.key')}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={self._pki('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={self._pki('apiserver-kubelet-client.key')}",
            f"--kubelet-certificate-authority={self.ca}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--profiling=false",
        ]

    def _component_argv(self, name: str, port: str, pki_name: str) -> list[str]:
        kubeconfig = self.cert_kubeconfig(
            name, CertPair(self.pki_dir / f"{pki_name}.crt", self.pki_dir / f"{pki_name}.key")
        )
        return [
            str(self.bins.k8s),
            name,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[port]}",
            f"--tls-cert-file={self._pki(pki_name + '.crt')}",
            f"--tls-private-key-file={self._pki(pki_name + '.key')}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_argv(self) -> list[str]:
        return [
            *self._component_argv("kube-controller-manager", "controller-manager", "controller-manager"),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self._pki('service-account.key')}",
            f"--root-ca-file={self.ca}",
            f"--controllers={','.join(CONTROLLERS)}",
        ]

    def _scheduler_argv(self) -> list[str]:
        return self._component_argv("kube-scheduler", "scheduler", "scheduler")

    def _ca_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def _admin_ssl(self) -> ssl.SSLContext:
        assert self._admin is not None
        context = self._ca_ssl()
        context.load_cert_chain(str(self._admin.cert), str(self._admin.key))
        return context

    def _wait(self, name: str, url: str, ssl_context: ssl.SSLContext | None) -> None:
        """Poll `url` until it answers 200, failing early (with the log's end) if a component exits."""
        assert self._group is not None
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if exited := self._group.exited():
                dead = next(iter(exited))
                raise ControlPlaneError(
                    f"{dead} exited with code {exited[dead]} while waiting for {name}; "
                    f"end of {self.log_dir / (dead + '.log')}:\n{self._group.log_tail(dead)}"
                )
            try:
                with urllib.request.urlopen(url, context=ssl_context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name} not ready at {url} after {self.start_timeout:.0f}s ({last}); end of "
            f"{self.log_dir / (name + '.log')}:\n{self._group.log_tail(name)}"
        )

"""Operator settings: read once per process from the environment, with command-line flags overriding.

The Helm chart maps its values onto exactly these names (env var / flag: meaning):

- SGLANG_OPERATOR_NAMESPACES / --namespace NS (repeats): comma list of namespaces to watch;
  empty = cluster-wide.
- SGLANG_OPERATOR_ENGINE_IMAGE / --engine-image IMG: engine image when a CR sets no `image`
  (default ghcr.io/sglang-operator/sglang-engine:<package version>).
- SGLANG_OPERATOR_IMAGE_PULL_POLICY / --image-pull-policy: Always | IfNotPresent | Never
  (default IfNotPresent).
- SGLANG_OPERATOR_POD_DEFAULTS / --pod-defaults JSON: a JSON object applied to every engine pod unless the CR
  sets its own: nodeSelector (merged, CR wins), tolerations (CR replaces), priorityClassName, imagePullSecrets
  (a list of Secret names), runtimeClassName.
- SGLANG_OPERATOR_NETWORK_POLICY / --network-policy JSON: who, besides the kubelet, may reach each engine
  pod's probe port (its /status, /metrics, /livez, /readyz) through the NetworkPolicy the operator renders:
  `{"statusFrom": [peers], "metricsFrom": [peers]}`, each a list of NetworkPolicy peers (podSelector,
  namespaceSelector, ipBlock). statusFrom is the operator itself (it reads /status; the chart fills it in),
  metricsFrom the Prometheus that scrapes /metrics. Empty lists: nobody but the node.
- SGLANG_OPERATOR_TENANCY / --tenancy JSON: what a CR author may choose, for cluster-wide installs where CR
  authors are not cluster admins: `{"images": [...], "priorityClasses": [...], "secretNames": [...],
  "tolerationKeys": [...]}`, each a list of shell-style patterns (`*` matches anything, `/` included, e.g.
  `registry.example.com/*`); an empty or missing list allows anything. A CR that picks something else is
  refused (SpecValid=False, reason NotAllowed, naming the field): see tenancy.py.
- SGLANG_OPERATOR_RESYNC_SECONDS / --resync-seconds N: how often a settled model's engines are asked for their
  /status again (no API request; a changed reply triggers a reconcile), and the reconcile interval of a model
  whose state no watch reports (routed, multi-node, last run failed). Default 60. Models whose inputs are all
  watched cost no request at rest (handlers.py).
- SGLANG_OPERATOR_LOG_FORMAT / --log-format: text | json (default text).
- SGLANG_OPERATOR_LOG_LEVEL / --log-level: debug | info | warning | error (default info).
- SGLANG_OPERATOR_HEALTH_PORT / --liveness URL: kopf's liveness endpoint. The env var is a port number and
  means http://0.0.0.0:<port>/healthz; the flag takes the full URL. Default: off.
- KUBECONFIG / --kubeconfig FILE: default in-cluster service account, then ~/.kube/config.
- SGLANG_OPERATOR_ENGINE_STATUS_TIMEOUT (env only): seconds for each pod's engine GET /status (default 2).
- SGLANG_OPERATOR_LEADER_LEASE / --leader-lease NAMESPACE/NAME: leader election on that Lease (several
  replicas; one reconciles at a time, see leader.py). Default: off (one replica).
- SGLANG_OPERATOR_LEADER_LEASE_SECONDS / --leader-lease-seconds N: the Lease's duration (default 15, as
  client-go): the longest a standby waits after the leader died without releasing it.

A bad value exits with a message naming the variable or flag.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from importlib import metadata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sglang_operator.spec import NetworkPolicyPeer, peer_problems


def _version() -> str:
    try:
        return metadata.version("sglang-operator")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "latest"


DEFAULT_ENGINE_IMAGE = f"ghcr.io/sglang-operator/sglang-engine:{_version()}"

ENV_NAMESPACES = "SGLANG_OPERATOR_NAMESPACES"
ENV_ENGINE_IMAGE = "SGLANG_OPERATOR_ENGINE_IMAGE"
ENV_IMAGE_PULL_POLICY = "SGLANG_OPERATOR_IMAGE_PULL_POLICY"
ENV_POD_DEFAULTS = "SGLANG_OPERATOR_POD_DEFAULTS"
ENV_NETWORK_POLICY = "SGLANG_OPERATOR_NETWORK_POLICY"
ENV_TENANCY = "SGLANG_OPERATOR_TENANCY"
ENV_RESYNC_SECONDS = "SGLANG_OPERATOR_RESYNC_SECONDS"
ENV_LOG_FORMAT = "SGLANG_OPERATOR_LOG_FORMAT"
ENV_LOG_LEVEL = "SGLANG_OPERATOR_LOG_LEVEL"
ENV_HEALTH_PORT = "SGLANG_OPERATOR_HEALTH_PORT"
ENV_ENGINE_STATUS_TIMEOUT = "SGLANG_OPERATOR_ENGINE_STATUS_TIMEOUT"
ENV_LEADER_LEASE = "SGLANG_OPERATOR_LEADER_LEASE"
ENV_LEADER_LEASE_SECONDS = "SGLANG_OPERATOR_LEADER_LEASE_SECONDS"

# Every env var the operator reads (the chart's tests compare against this).
ENV_VARS = (
    ENV_NAMESPACES, ENV_ENGINE_IMAGE, ENV_IMAGE_PULL_POLICY, ENV_POD_DEFAULTS, ENV_NETWORK_POLICY,
    ENV_TENANCY, ENV_RESYNC_SECONDS,
    ENV_LOG_FORMAT, ENV_LOG_LEVEL, ENV_HEALTH_PORT, ENV_ENGINE_STATUS_TIMEOUT, ENV_LEADER_LEASE,
    ENV_LEADER_LEASE_SECONDS, "KUBECONFIG",
)


LEASE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"  # namespace/name


class SettingsError(ValueError):
    """A setting has a bad value; the message names the env var or flag."""


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class PodDefaults(BaseModel):
    """Cluster-wide pod placement applied to every engine pod; a CR's own fields win."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    priorityClassName: str | None = None
    imagePullSecrets: tuple[str, ...] = ()
    runtimeClassName: str | None = None


class ProbePortPeers(BaseModel):
    """Sources allowed to each engine pod's probe port by the operator's NetworkPolicies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statusFrom: tuple[NetworkPolicyPeer, ...] = ()
    metricsFrom: tuple[NetworkPolicyPeer, ...] = ()

    @model_validator(mode="after")
    def _valid_peers(self) -> ProbePortPeers:
        for field in ("statusFrom", "metricsFrom"):
            for i, peer in enumerate(getattr(self, field)):
                for where, problem in peer_problems(peer):
                    raise ValueError(f"{field}[{i}]{where}: {problem}")
        return self


Patterns = tuple[Annotated[str, Field(min_length=1)], ...]


class Tenancy(BaseModel):
    """Allowlists of what a CR may choose (shell-style patterns; empty: anything). Checked in tenancy.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: Patterns = ()  # spec.image (a CR without one gets the operator's engine image)
    priorityClasses: Patterns = ()  # spec.priorityClassName
    secretNames: Patterns = ()  # env[].valueFrom.secretKeyRef, hfTokenSecret, apiKeySecret
    tolerationKeys: Patterns = ()  # spec.tolerations[].key (a toleration without a key tolerates every taint)


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    engine_image: str = DEFAULT_ENGINE_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pod_defaults: PodDefaults = PodDefaults()
    network_policy: ProbePortPeers = ProbePortPeers()
    tenancy: Tenancy = Tenancy()
    resync_seconds: float = Field(60.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    kubeconfig: str | None = None
    engine_status_timeout: float = Field(2.0, gt=0)
    leader_lease: str | None = Field(None, pattern=LEASE_PATTERN)
    leader_lease_seconds: float = Field(15.0, ge=3)

    @field_validator("namespaces")
    @classmethod
    def _no_blank_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ns.strip() for ns in value if ns.strip())

    @property
    def cluster_wide(self) -> bool:
        return not self.namespaces

    @property
    def lease(self) -> tuple[str, str] | None:
        """(namespace, name) of the leader-election Lease, or None without leader election."""
        if not self.leader_lease:
            return None
        namespace, _, name = self.leader_lease.partition("/")
        return namespace, name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-operator run",
                                description="Run the SGLangModel operator (kopf).")
    a = p.add_argument
    a("--kubeconfig", help="kubeconfig file (env KUBECONFIG); default: in-cluster, then ~/.kube/config")
    a("--namespace", dest="namespaces", action="append", metavar="NS",
      help=f"namespace to watch; repeat for several (env {ENV_NAMESPACES}, comma list); none = cluster-wide")
    a("--engine-image", help=f"default engine image (env {ENV_ENGINE_IMAGE})")
    a("--image-pull-policy", help=f"engine image pull policy (env {ENV_IMAGE_PULL_POLICY})")
    a("--pod-defaults", help=f"JSON pod defaults (env {ENV_POD_DEFAULTS})")
    a("--network-policy",
      help=f"JSON probe-port peers of the engines' NetworkPolicies (env {ENV_NETWORK_POLICY})")
    a("--tenancy", help=f"JSON allowlists of what models may choose (env {ENV_TENANCY})")
    a("--resync-seconds", help=f"how often settled models' engines are asked again, and models no watch "
      f"covers reconciled (env {ENV_RESYNC_SECONDS})")
    a("--log-format", help=f"text or json (env {ENV_LOG_FORMAT})")
    a("--log-level", help=f"debug, info, warning or error (env {ENV_LOG_LEVEL})")
    a("--liveness",
      help=f"kopf liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz (env {ENV_HEALTH_PORT}: a port)")
    a("--leader-lease", metavar="NAMESPACE/NAME",
      help=f"leader election on this Lease, for several replicas (env {ENV_LEADER_LEASE}); default off")
    a("--leader-lease-seconds", help=f"the Lease's duration (env {ENV_LEADER_LEASE_SECONDS}, default 15)")
    return p


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if env.get(ENV_NAMESPACES, "").strip():
        raw["namespaces"] = tuple(env[ENV_NAMESPACES].split(","))
    simple = {
        ENV_ENGINE_IMAGE: "engine_image", ENV_IMAGE_PULL_POLICY: "image_pull_policy",
        ENV_RESYNC_SECONDS: "resync_seconds", ENV_LOG_FORMAT: "log_format", ENV_LOG_LEVEL: "log_level",
        ENV_ENGINE_STATUS_TIMEOUT: "engine_status_timeout", "KUBECONFIG": "kubeconfig",
        ENV_LEADER_LEASE: "leader_lease", ENV_LEADER_LEASE_SECONDS: "leader_lease_seconds",
    }
    for var, field in simple.items():
        if env.get(var, "").strip():
            raw[field] = env[var].strip()
    if env.get(ENV_POD_DEFAULTS, "").strip():
        raw["pod_defaults"] = _json(env[ENV_POD_DEFAULTS], ENV_POD_DEFAULTS)
    if env.get(ENV_NETWORK_POLICY, "").strip():
        raw["network_policy"] = _json(env[ENV_NETWORK_POLICY], ENV_NETWORK_POLICY)
    if env.get(ENV_TENANCY, "").strip():
        raw["tenancy"] = _json(env[ENV_TENANCY], ENV_TENANCY)
    if env.get(ENV_HEALTH_PORT, "").strip():
        port = env[ENV_HEALTH_PORT].strip()
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{ENV_HEALTH_PORT}: expected a port number, got {port!r}")
        raw["liveness"] = f"http://0.0.0.0:{port}/healthz"
    return raw


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{where}: not valid JSON ({exc})") from None


_FIELD_SOURCE = {
    "namespaces": f"--namespace / {ENV_NAMESPACES}", "engine_image": f"--engine-image / {ENV_ENGINE_IMAGE}",
    "image_pull_policy": f"--image-pull-policy / {ENV_IMAGE_PULL_POLICY}",
    "pod_defaults": f"--pod-defaults / {ENV_POD_DEFAULTS}",
    "network_policy": f"--network-policy / {ENV_NETWORK_POLICY}",
    "tenancy": f"--tenancy / {ENV_TENANCY}",
    "resync_seconds": f"--resync-seconds / {ENV_RESYNC_SECONDS}",
    "log_format": f"--log-format / {ENV_LOG_FORMAT}",
    "log_level": f"--log-level / {ENV_LOG_LEVEL}", "liveness": f"--liveness / {ENV_HEALTH_PORT}",
    "engine_status_timeout": ENV_ENGINE_STATUS_TIMEOUT, "kubeconfig": "--kubeconfig / KUBECONFIG",
    "leader_lease": f"--leader-lease / {ENV_LEADER_LEASE}",
    "leader_lease_seconds": f"--leader-lease-seconds / {ENV_LEADER_LEASE_SECONDS}",
}


_JSON_FIELDS = ("pod_defaults", "network_policy", "tenancy")


def load_settings(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Env first, flags override. Raises SettingsError naming the variable or flag on a bad value."""
    raw = _from_env(os.environ if env is None else env)
    ns = build_parser().parse_args([] if argv is None else argv)
    for field, value in vars(ns).items():
        if value is None:
            continue
        raw[field] = _json(value, f"--{field.replace('_', '-')}") if field in _JSON_FIELDS else value
    try:
        return OperatorSettings(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        top = str(err["loc"][0]) if err["loc"] else ""
        path = ".".join(str(p) for p in err["loc"][1:])
        where = _FIELD_SOURCE.get(top, top) + (f" ({path})" if path else "")
        raise SettingsError(f"{where}: {err['msg']}") from None

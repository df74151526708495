"""Pure: a pod's spec -> what the local kubelet runs (argv, env, volumes, probes), with paths remapped.

Mapping rules (the local kubelet's whole contract):
- Only the project's programs run: a container's `command[0]` must be `sglang-engine` (the engine) or `smg`
  (SGLang's gateway, the router of spec.router: `smg launch ...`); any image is accepted if it is, anything
  else is a pod error with reason `ImageNotSupported`. Each resolves to the console script of that name
  next to the Python running the cluster (`PodContext.executables`).
- `--host 0.0.0.0` (or `::`, in both `--host X` and `--host=X` forms; also any `--<name>-host`, such as
  SMG's `--prometheus-host`) becomes the pod's own loopback IP, so every pod can listen on the same port.
- In Kubernetes every pod has its own 127.0.0.1; here pods share it, so `sglang-engine serve` without
  `--sglang-port` gets `--sglang-port <a free port>` (inserted before any `--`): the SGLang servers of two
  pods never collide on 127.0.0.1:30000.
- Termination messages: each container gets a file `<pod dir>/termination-log.<container>` (the kubelet's
  `terminationMessagePath`, emptied before each start); `sglang-engine serve` without `--termination-log` is
  given it as `--termination-log FILE`. What the file holds when the container exits (else, under
  `terminationMessagePolicy: FallbackToLogsOnError` and a failure, the log's tail) becomes the message of its
  `terminated` state, as the kubelet does.
- Volumes become folders: emptyDir, configMap and secret under `<pod dir>/volumes/<volume>/`, a
  persistentVolumeClaim under `<state>/pvcs/<namespace>/<claim>/` (shared by pods, like a real claim).
  ConfigMap and secret volumes use the kubelet's layout (`..data` symlink to a timestamped folder, one
  symlink per key) so updates are an atomic swap.
- Mount paths are remapped: every absolute path in command, args, env values (also `:`-separated lists) and
  workingDir that falls under a volume's mountPath is rewritten to the folder backing it. The engine is also
  told through env: `SGLANG_DEV_POD_ROOT` and `SGLANG_DEV_MOUNTS` (JSON: mountPath -> folder).
- Env: `value` with `$(VAR)` expansion, `secretKeyRef`, `configMapKeyRef`, `fieldRef` (metadata.name,
  metadata.namespace, metadata.uid, metadata.labels[...], metadata.annotations[...], spec.nodeName,
  spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP), `envFrom` (configMapRef, secretRef).
- Probes: httpGet and tcpSocket (exec cannot run a command inside an image: a pod error).
- `nvidia.com/gpu` and other resources are accepted and ignored (reported as a pod event).
- The pod network: a container that calls other pods (the router: SMG registers each engine's podIP)
  gets `HTTP_PROXY` = the node's pod gateway (`PodContext.pod_gateway`; pod IPs here are 10.x twins that only
  the gateway reaches) and `NO_PROXY` covering loopback, where the apiserver listens. The engine does not
  (its downloads go straight out).
- API credentials: a real kubelet mounts the ServiceAccount's token at
  /var/run/secrets/kubernetes.io/serviceaccount, where in-cluster clients (client-go, kube-rs) read it by
  that fixed path, and sets KUBERNETES_SERVICE_HOST/PORT. Here the mount is a folder of the pod, so a
  container that mounts it gets `KUBECONFIG` = `<pod dir>/kubeconfig` (a file of the plan, `PodPlan.files`):
  the apiserver's URL (`PodContext.api_server`), the mounted `ca.crt` and `tokenFile` = the mounted `token`
  (the pod-bound TokenRequest token), and the pod's namespace: the same identity, so the apiserver's RBAC
  applies to the pod's ServiceAccount. Unless the container sets KUBECONFIG itself. A container without
  that mount (or with no apiserver URL: the emulator) gets the same KUBECONFIG path with no file there:
  pods share the host's HOME here, and the host's ~/.kube/config must never stand in for a pod's
  credentials (a real container has none), so a Kubernetes client in it finds no credentials, as it would.
- The SGLang backend: this machine has no GPU, so the node gives every container the environment that makes
  the engine launch SGLang's real frontend with a simulated scheduler (`PodContext.sglang_env`:
  `SGLANG_ENGINE_SGLANG_PYTHON` = the side venv's python, `SGLANG_ENGINE_SGLANG_MODULE` =
  `sglang_dev.sglang_sim`), unless the container sets either variable itself. Said in a pod event.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sglang_engine.settings import SGLANG_MODULE_ENV

ENGINE_COMMAND = "sglang-engine"
ROUTER_COMMAND = "smg"  # SGLang's gateway (`smg launch ...`, spec.router); the `router` extra installs it
COMMANDS = (ENGINE_COMMAND, ROUTER_COMMAND)
# Commands whose program calls other pods by IP (through the pod gateway here).
CALLS_PODS = frozenset({ROUTER_COMMAND})
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_KUBECONFIG = "kubeconfig"  # in the pod's folder (see the module docstring)
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")
NODE_NAME = "local"


class PodError(Exception):
    """The pod cannot run here; `reason` is a Kubernetes-style waiting reason, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Probe:
    kind: str  # http | tcp
    host: str
    port: int
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_s: float = 0
    period_s: float = 10
    timeout_s: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class VolumePlan:
    name: str
    kind: str  # emptyDir | configMap | secret | persistentVolumeClaim | projected
    host_path: Path
    source: str = ""  # configMap/secret/claim name
    items: tuple[tuple[str, str], ...] = ()  # (key, relative path); empty = every key
    optional: bool = False
    files: tuple[tuple[str, str], ...] = ()  # projected: (relative path, content), resolved when planned


@dataclass(frozen=True)
class Mount:
    mount_path: str
    host_path: Path
    read_only: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    mounts: tuple[Mount, ...]
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    ports: dict[str, int] = field(default_factory=dict)
    files: tuple[tuple[Path, str], ...] = ()  # see PodPlan.files
    termination_log: Path | None = None  # its terminationMessagePath (see the module docstring)
    fallback_to_logs: bool = False  # terminationMessagePolicy: FallbackToLogsOnError


@dataclass(frozen=True)
class PodPlan:
    containers: tuple[ContainerPlan, ...]
    volumes: tuple[VolumePlan, ...]
    grace_s: float
    restart_policy: str
    notes: tuple[str, ...] = ()  # facts worth an event: ignored GPU requests, ignored security settings
    files: tuple[tuple[Path, str], ...] = ()  # written (0600) before the containers start: pod kubeconfigs


@dataclass(frozen=True)
class PodContext:
    """Everything outside the pod spec that the mapping needs (looked up by the caller, passed in)."""

    pod_ip: str
    pod_dir: Path
    pvc_root: Path
    engine_path: str
    host_env: Mapping[str, str]
    config_maps: Mapping[str, Mapping[str, str]]  # name -> data (binaryData decoded by the caller)
    secrets: Mapping[str, Mapping[str, str]]  # name -> decoded data
    markers: Mapping[str, str] = field(default_factory=dict)
    # `dev up --probe-period-cap S`: every probe runs at least every S seconds, so tests see readiness within
    # S instead of the spec's 10 s periods; thresholds unchanged, but the startup probe's, which grows to keep
    # the spec's startup window (a slow start, such as SGLang's on a busy machine, is not killed sooner).
    # None: the spec's periods exactly.
    probe_period_cap: float | None = None
    sglang_port: int | None = None  # this pod's private SGLang port (see the module docstring)
    service_account_token: str | None = None  # a TokenRequest token bound to the pod (projected volumes)
    # The engine's SGLang on this node (sglang_dev.sglang_sim.engine_env()); empty: no side venv built.
    sglang_env: Mapping[str, str] = field(default_factory=dict)
    tmp_dir: Path | None = None  # the pod's TMPDIR (pod_tmp_dir()); None: <pod dir>/tmp
    # Other commands than the engine (ROUTER_COMMAND) -> their local program; missing: not installed here.
    executables: Mapping[str, str] = field(default_factory=dict)
    pod_gateway: str | None = None  # the node's pod gateway (HTTP_PROXY for CALLS_PODS); None: none here
    api_server: str | None = None  # the apiserver's URL for pod kubeconfigs; None: no credentials given


# SGLang binds its ZMQ IPC sockets at TMPDIR/tmpXXXXXXXX, and a Unix socket path holds at most 107 bytes.
TMP_DIR_MAX_LEN = 80


def pod_tmp_dir(pod_dir: Path, uid: str, system_tmp: str) -> Path:
    """<pod dir>/tmp, or a short folder in the system's temp folder when that path is too long for SGLang's
    IPC sockets (a deep checkout or test folder)."""
    inside = pod_dir / "tmp"
    return inside if len(str(inside)) <= TMP_DIR_MAX_LEN else Path(system_tmp) / f"sglang-dev-pod-{uid[:18]}"


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, unknown ones kept, `$$` escapes."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, value)


def remap_path(value: str, mounts: tuple[Mount, ...]) -> str:
    """An absolute path under a mountPath -> the same path under the folder backing it (longest match)."""
    if not value.startswith("/"):
        return value
    for mount in mounts:  # sorted longest mountPath first
        root = mount.mount_path.rstrip("/") or "/"
        if value == root or value.startswith(root + "/"):
            return str(mount.host_path) + value[len(root):]
    return value


def remap_value(value: str, mounts: tuple[Mount, ...]) -> str:
    """Remap a path, a `--flag=/path`, or each element of a `:`-separated path list."""
    if value.startswith("--") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={remap_value(rest, mounts)}"
    if ":" in value and value.startswith("/"):
        return ":".join(remap_path(part, mounts) for part in value.split(":"))
    return remap_path(value, mounts)


def add_serve_flag(argv: list[str], flag: str, value: object | None) -> list[str]:
    """`serve ... [-- extra]` -> `serve ... FLAG VALUE [-- extra]`, unless FLAG is given already."""
    engine_flags = argv[: argv.index("--")] if "--" in argv else argv
    if value is None or len(argv) < 2 or argv[1] != "serve" or any(
            a == flag or a.startswith(f"{flag}=") for a in engine_flags):
        return argv
    cut = len(engine_flags)
    return [*argv[:cut], flag, str(value), *argv[cut:]]


def add_sglang_port(argv: list[str], port: int | None) -> list[str]:
    """`serve ... [-- extra]` -> `serve ... --sglang-port P [-- extra]`, unless the port is already chosen."""
    return add_serve_flag(argv, "--sglang-port", port)


def _host_flag(flag: str) -> bool:
    """`--host` or any `--<name>-host` (SMG's `--prometheus-host`): a flag naming an address to bind."""
    return flag == "--host" or (flag.startswith("--") and flag.endswith("-host"))


def rewrite_host(argv: list[str], pod_ip: str) -> list[str]:
    out = []
    take_next = False
    for arg in argv:
        if take_next:
            out.append(pod_ip if arg in WILDCARD_HOSTS else arg)
            take_next = False
        elif _host_flag(arg):
            out.append(arg)
            take_next = True
        elif "=" in arg and _host_flag(arg.partition("=")[0]) and arg.partition("=")[2] in WILDCARD_HOSTS:
            out.append(f"{arg.partition('=')[0]}={pod_ip}")
        else:
            out.append(arg)
    return out


def _key_ref(ref: Mapping[str, Any], store: Mapping[str, Mapping[str, str]], kind: str,
             where: str) -> str | None:
    name, key = ref.get("name", ""), ref.get("key", "")
    data = store.get(name)
    if data is None or key not in data:
        if ref.get("optional"):
            return None
        missing = (f'{kind} "{name}" not found' if data is None
                   else f'key "{key}" not found in {kind} "{name}"')
        raise PodError("CreateContainerConfigError", f"{where}: {missing}")
    return data[key]


_FIELD_INDEX = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_ref(path: str, pod: Mapping[str, Any], pod_ip: str, where: str) -> str:
    meta = pod.get("metadata") or {}
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName") or NODE_NAME,
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    m = _FIELD_INDEX.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise PodError("CreateContainerConfigError",
                   f"{where}.valueFrom.fieldRef.fieldPath: unsupported {path!r}")


def resolve_env(container: Mapping[str, Any], pod: Mapping[str, Any], ctx: PodContext,
                where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, source in enumerate(container.get("envFrom") or []):
        prefix = source.get("prefix", "")
        for kind, store in (("configMapRef", ctx.config_maps), ("secretRef", ctx.secrets)):
            ref = source.get(kind)
            if ref is None:
                continue
            data = store.get(ref.get("name", ""))
            if data is None and not ref.get("optional"):
                raise PodError("CreateContainerConfigError",
                               f"{where}.envFrom[{i}].{kind}: {ref.get('name')!r} not found")
            env.update({prefix + k: v for k, v in (data or {}).items()})
    for i, var in enumerate(container.get("env") or []):
        name, here = var.get("name", ""), f"{where}.env[{i}]"
        value_from = var.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(var.get("value", "")), env)
        elif "secretKeyRef" in value_from:
            got = _key_ref(value_from["secretKeyRef"], ctx.secrets, "secret",
                           f"{here}.valueFrom.secretKeyRef")
            if got is not None:
                env[name] = got
        elif "configMapKeyRef" in value_from:
            got = _key_ref(value_from["configMapKeyRef"], ctx.config_maps, "configmap",
                           f"{here}.valueFrom.configMapKeyRef")
            if got is not None:
                env[name] = got
        elif "fieldRef" in value_from:
            env[name] = field_ref(value_from["fieldRef"].get("fieldPath", ""), pod, ctx.pod_ip, here)
        else:
            raise PodError("CreateContainerConfigError",
                           f"{here}.valueFrom: only secretKeyRef, configMapKeyRef and fieldRef are supported "
                           f"locally, got {sorted(value_from)}")
    return env


def _item_path(rel: str, where: str) -> str:
    if rel.startswith("/") or ".." in rel.split("/"):
        raise PodError("CreateContainerConfigError", f"{where}: path {rel!r} must be relative without '..'")
    return rel


def projected_files(projected: Mapping[str, Any], pod: Mapping[str, Any], ctx: PodContext,
                    where: str) -> dict[str, str]:
    """A projected volume's files: serviceAccountToken, configMap, secret and downwardAPI sources (what the
    ServiceAccount admission plugin mounts into every pod: token, kube-root-ca.crt, namespace)."""
    files: dict[str, str] = {}
    for j, source in enumerate(projected.get("sources") or []):
        here = f"{where}.projected.sources[{j}]"
        if "serviceAccountToken" in source:
            if ctx.service_account_token is None:
                raise PodError("CreateContainerConfigError", f"{here}.serviceAccountToken: no token for the "
                               "pod's service account (TokenRequest failed or unavailable)")
            rel = _item_path(source["serviceAccountToken"].get("path", "token"), here)
            files[rel] = ctx.service_account_token
        elif "configMap" in source or "secret" in source:
            kind = "configMap" if "configMap" in source else "secret"
            ref = source[kind]
            store = ctx.config_maps if kind == "configMap" else ctx.secrets
            data = store.get(ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise PodError("CreateContainerConfigError", f'{here}.{kind}: "{ref.get("name")}" not found')
            items = [(it["key"], it.get("path", it["key"])) for it in ref.get("items") or []] or \
                [(k, k) for k in data]
            for key, rel in items:
                if key in data:
                    files[_item_path(rel, here)] = data[key]
                elif not ref.get("optional"):
                    raise PodError("CreateContainerConfigError",
                                   f'{here}.{kind}: key "{key}" not found in "{ref.get("name")}"')
        elif "downwardAPI" in source:
            for k, item in enumerate(source["downwardAPI"].get("items") or []):
                if "fieldRef" not in item:
                    raise PodError("CreateContainerConfigError",
                                   f"{here}.downwardAPI.items[{k}]: only fieldRef is supported locally")
                files[_item_path(item.get("path", ""), here)] = field_ref(
                    item["fieldRef"].get("fieldPath", ""), pod, ctx.pod_ip, f"{here}.downwardAPI.items[{k}]")
        else:
            raise PodError("CreateContainerConfigError", f"{here}: unsupported projection {sorted(source)}")
    return files


def plan_volumes(spec: Mapping[str, Any], ctx: PodContext, namespace: str,
                 pod: Mapping[str, Any] | None = None) -> tuple[VolumePlan, ...]:
    plans = []
    for i, vol in enumerate(spec.get("volumes") or []):
        name = vol.get("name", "")
        local = ctx.pod_dir / "volumes" / name
        if "emptyDir" in vol:
            plans.append(VolumePlan(name, "emptyDir", local))
        elif "configMap" in vol or "secret" in vol:
            kind = "configMap" if "configMap" in vol else "secret"
            src = vol[kind]
            source = src.get("name" if kind == "configMap" else "secretName", "")
            items = tuple((it["key"], it.get("path", it["key"])) for it in src.get("items") or [])
            plans.append(VolumePlan(name, kind, local, source, items, bool(src.get("optional"))))
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName", "")
            plans.append(VolumePlan(name, "persistentVolumeClaim", ctx.pvc_root / namespace / claim, claim))
        elif "projected" in vol:
            files = projected_files(vol["projected"], pod or {}, ctx, f"spec.volumes[{i}] ({name})")
            plans.append(VolumePlan(name, "projected", local, files=tuple(sorted(files.items()))))
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise PodError("CreateContainerConfigError",
                           f"spec.volumes[{i}] ({name}): unsupported volume type {kinds}; the local kubelet "
                           "supports emptyDir, configMap, secret, projected and persistentVolumeClaim")
    return tuple(plans)


def _mounts(container: Mapping[str, Any], volumes: Mapping[str, VolumePlan], where: str) -> tuple[Mount, ...]:
    mounts = []
    for i, vm in enumerate(container.get("volumeMounts") or []):
        vol = volumes.get(vm.get("name", ""))
        if vol is None:
            raise PodError("CreateContainerConfigError",
                           f"{where}.volumeMounts[{i}].name: no volume named {vm.get('name')!r}")
        host = vol.host_path / vm["subPath"] if vm.get("subPath") else vol.host_path
        mounts.append(Mount(vm.get("mountPath", ""), host, bool(vm.get("readOnly"))))
    return tuple(sorted(mounts, key=lambda m: len(m.mount_path), reverse=True))


def _probe(raw: Mapping[str, Any] | None, ports: Mapping[str, int], ctx: PodContext,
           where: str, keep_window: bool = False) -> Probe | None:
    """`keep_window` (the startup probe): under a period cap the failure threshold grows so that the time a
    container has to start (period x threshold) stays what the spec says."""
    if not raw:
        return None
    pod_ip = ctx.pod_ip
    spec_period = period = raw.get("periodSeconds", 10)
    failures = raw.get("failureThreshold", 3)
    if ctx.probe_period_cap is not None:
        period = min(period, ctx.probe_period_cap)
        if keep_window and period < spec_period:
            failures = math.ceil(failures * spec_period / period)
    timing = {"initial_delay_s": raw.get("initialDelaySeconds", 0), "period_s": period,
              "timeout_s": raw.get("timeoutSeconds", 1), "success_threshold": raw.get("successThreshold", 1),
              "failure_threshold": failures}
    for kind, key in (("http", "httpGet"), ("tcp", "tcpSocket")):
        if key in raw:
            action = raw[key]
            port = action.get("port")
            if isinstance(port, str) and not port.isdigit():
                if port not in ports:
                    raise PodError("CreateContainerConfigError", f"{where}.{key}.port: no container port "
                                   f"named {port!r}")
                port = ports[port]
            headers = tuple((h["name"], h["value"]) for h in action.get("httpHeaders") or [])
            return Probe(kind, action.get("host") or pod_ip, int(port), action.get("path", "/"), headers,
                         **timing)
    raise PodError("CreateContainerConfigError",
                   f"{where}: only httpGet and tcpSocket probes run locally (got {sorted(raw)})")


def base_env(ctx: PodContext, pod_name: str, mounts: tuple[Mount, ...]) -> dict[str, str]:
    """What every container starts with: a PATH finding the engine, the host's caches, the markers."""
    env = {"PATH": os.path.dirname(ctx.engine_path) + os.pathsep + ctx.host_env.get("PATH", "/usr/bin:/bin"),
           "HOSTNAME": pod_name, "PYTHONUNBUFFERED": "1", "TMPDIR": str(ctx.tmp_dir or ctx.pod_dir / "tmp")}
    # HOME stays the host's so builtin models and HF caches are built once per machine, not once per pod.
    for key in ("HOME", "LANG", "LC_ALL", "SGLANG_ENGINE_CACHE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS"):
        if key in ctx.host_env:
            env[key] = ctx.host_env[key]
    env["SGLANG_DEV_POD_ROOT"] = str(ctx.pod_dir)
    env["SGLANG_DEV_MOUNTS"] = json.dumps({m.mount_path: str(m.host_path) for m in mounts}, sort_keys=True)
    return env


def program(container: Mapping[str, Any], ctx: PodContext, where: str) -> tuple[str, str]:
    """(the command's name, the local program running it), or ImageNotSupported naming the container."""
    command = os.path.basename((container.get("command") or [""])[0])
    name = container.get("name", "")
    if command not in COMMANDS:
        raise PodError("ImageNotSupported",
                       f"{where} ({name}): the local kubelet only runs the engine and the router (command "
                       f"{ENGINE_COMMAND!r} or {ROUTER_COMMAND!r}); image {container.get('image')!r} with "
                       f"command {(container.get('command') or ['<image entrypoint>'])[0]!r} cannot run on "
                       "this machine")
    local = ctx.engine_path if command == ENGINE_COMMAND else ctx.executables.get(command)
    if local is None:
        raise PodError("ImageNotSupported", f"{where} ({name}): command {command!r} is not installed next to "
                       "the cluster's Python (pip install -e '.[router]', part of `make install`)")
    return command, local


def pod_network_env(ctx: PodContext) -> dict[str, str]:
    """HTTP_PROXY to the pod gateway (pod IPs are reachable only through it here), loopback excluded."""
    if ctx.pod_gateway is None:
        return {}
    direct = ",".join(dict.fromkeys(["127.0.0.1", "localhost",
                                     *([urlsplit(ctx.api_server).hostname or ""] if ctx.api_server else [])]))
    gateway = ctx.pod_gateway
    return {"HTTP_PROXY": gateway, "http_proxy": gateway, "NO_PROXY": direct, "no_proxy": direct}


def pod_kubeconfig(ctx: PodContext, pod: Mapping[str, Any],
                   mounts: tuple[Mount, ...]) -> tuple[Path, str] | None:
    """A kubeconfig standing for the in-cluster config of a container that mounts the ServiceAccount's
    volume (see the module docstring), or None."""
    mount = next((m for m in mounts if m.mount_path.rstrip("/") == SERVICE_ACCOUNT_MOUNT), None)
    if mount is None or ctx.api_server is None:
        return None
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace = meta.get("namespace", "default")
    user = f"system:serviceaccount:{namespace}:{spec.get('serviceAccountName') or 'default'}"
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": ctx.api_server, "certificate-authority": str(mount.host_path / "ca.crt")}}],
        "users": [{"name": user, "user": {"tokenFile": str(mount.host_path / "token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": user,
                                                        "namespace": namespace}}],
    }
    return ctx.pod_dir / POD_KUBECONFIG, json.dumps(config, indent=2) + "\n"


def plan_container(container: Mapping[str, Any], index: int, pod: Mapping[str, Any], ctx: PodContext,
                   volumes: Mapping[str, VolumePlan]) -> ContainerPlan:
    name = container.get("name", f"c{index}")
    where = f"spec.containers[{index}]"
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    command, local = program(container, ctx, where)
    mounts = _mounts(container, volumes, where)
    user_env = resolve_env(container, pod, ctx, where)
    kubeconfig = None if "KUBECONFIG" in user_env else pod_kubeconfig(ctx, pod, mounts)
    node_env = {**(pod_network_env(ctx) if command in CALLS_PODS else {}),
                "KUBECONFIG": str(ctx.pod_dir / POD_KUBECONFIG)}  # no file there without credentials
    # Only the container's own values are paths inside the container; the node's (TMPDIR, PATH, the host's
    # caches, the SGLang to run) stay as they are even under a mountPath such as /tmp.
    env = {**base_env(ctx, (pod.get("metadata") or {}).get("name", ""), mounts),
           **({} if ctx.sglang_env.keys() & user_env.keys() else ctx.sglang_env), **node_env,
           **{k: remap_value(v, mounts) for k, v in user_env.items()}}
    env.update(ctx.markers)
    argv = [expand(a, user_env) for a in argv]
    argv = rewrite_host([local, *(remap_value(a, mounts) for a in argv[1:])], ctx.pod_ip)
    termination_log = ctx.pod_dir / f"termination-log.{name}"
    if command == ENGINE_COMMAND:
        argv = add_sglang_port(argv, ctx.sglang_port)
        argv = add_serve_flag(argv, "--termination-log", termination_log)
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
    cwd = Path(remap_path(container["workingDir"], mounts)) if container.get("workingDir") else ctx.pod_dir
    return ContainerPlan(
        name=name, argv=tuple(argv), env=env, cwd=cwd, mounts=mounts,
        startup=_probe(container.get("startupProbe"), ports, ctx, f"{where}.startupProbe", keep_window=True),
        readiness=_probe(container.get("readinessProbe"), ports, ctx, f"{where}.readinessProbe"),
        liveness=_probe(container.get("livenessProbe"), ports, ctx, f"{where}.livenessProbe"),
        ports=ports, files=(kubeconfig,) if kubeconfig else (), termination_log=termination_log,
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError")


def _sglang_note(plan: ContainerPlan, ctx: PodContext) -> str | None:
    """What runs as SGLang in a `--backend sglang` container (the real thing needs a GPU)."""
    argv = list(plan.argv[: plan.argv.index("--")] if "--" in plan.argv else plan.argv)
    if "--backend=sglang" not in argv and ("--backend", "sglang") not in itertools.pairwise(argv):
        return None
    module = plan.env.get(SGLANG_MODULE_ENV)
    if module is None:
        return (f"container {plan.name}: backend sglang, but this machine has no SGLang side venv (`make "
                "sglang-sim`): the engine's `python -m sglang.launch_server` will fail")
    if ctx.sglang_env and dict(ctx.sglang_env).items() <= plan.env.items():
        return (f"container {plan.name}: backend sglang runs SGLang's real frontend with a SIMULATED "
                f"scheduler ({module}: no GPU here; ~2.3 GB of RAM per pod)")
    return f"container {plan.name}: backend sglang launches {module} (the container's own choice)"


def _notes(spec: Mapping[str, Any]) -> tuple[str, ...]:
    notes = []
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        gpus = ((res.get("limits") or {}).get("nvidia.com/gpu")
                or (res.get("requests") or {}).get("nvidia.com/gpu"))
        if gpus:
            notes.append(f"container {c.get('name')}: nvidia.com/gpu={gpus} requested; accepted and ignored "
                         "on this machine (no GPUs: the engine runs on CPU)")
    if spec.get("initContainers"):
        notes.append("initContainers are ignored by the local kubelet")
    return tuple(notes)


def referenced_objects(pod: Mapping[str, Any]) -> set[tuple[str, str]]:
    """("configMap" | "secret", name) of every ConfigMap and Secret the pod's volumes and env read (pure)."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            refs.add(("configMap", vol["configMap"].get("name", "")))
        if "secret" in vol:
            refs.add(("secret", vol["secret"].get("secretName", "")))
        for source in (vol.get("projected") or {}).get("sources") or []:
            for kind in ("configMap", "secret"):
                if kind in source:
                    refs.add((kind, source[kind].get("name", "")))
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for source in c.get("envFrom") or []:
            for key, kind in (("configMapRef", "configMap"), ("secretRef", "secret")):
                if key in source:
                    refs.add((kind, source[key].get("name", "")))
        for var in c.get("env") or []:
            value_from = var.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
                if key in value_from:
                    refs.add((kind, value_from[key].get("name", "")))
    return {(kind, name) for kind, name in refs if name}


def plan_pod(pod: Mapping[str, Any], ctx: PodContext) -> PodPlan:
    """Map a pod to local processes; raises PodError (reason + message naming the field) if it cannot run."""
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    volumes = plan_volumes(spec, ctx, namespace, pod)
    by_name = {v.name: v for v in volumes}
    containers = tuple(plan_container(c, i, pod, ctx, by_name)
                       for i, c in enumerate(spec.get("containers") or []))
    if not containers:
        raise PodError("CreateContainerConfigError", "spec.containers: at least one container is required")
    sglang = tuple(note for c in containers if (note := _sglang_note(c, ctx)))
    files = dict(f for c in containers for f in c.files)
    return PodPlan(containers, volumes, float(spec.get("terminationGracePeriodSeconds", 30)),
                   spec.get("restartPolicy", "Always"), _notes(spec) + sglang, tuple(files.items()))

"""Where the local cluster keeps its files: one state folder, every path named here once.

    <state>/cluster.json          cluster id, loopback prefix, API URL (written by `dev up`)
    <state>/kubeconfig            for kubectl and the operator
    <state>/services.json         Service -> loopback address:port (written by the proxy)
    <state>/pids/<name>.json      supervisor, emulator, operator (pid + kernel start time)
    <state>/logs/<name>.log       supervisor, emulator, operator
    <state>/pods/<ns>_<pod>/      per pod: logs/<container>.log (and .previous.log), volumes/<volume>/,
                                  pid files, events.log
    <state>/kubelet/pods.json     pod -> uid, loopback address, log files (read by the kubelet API process)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path(".state/dev")
READY_FILE = "ready"  # <state>/ready exists while the cluster is up (holds the API URL)


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Layout:
        return cls(Path(root).absolute())

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def services_file(self) -> Path:
        return self.root / "services.json"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    def pidfile(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.pods_dir / f"{namespace}_{name}"

    def container_log(self, namespace: str, pod: str, container: str, previous: bool = False) -> Path:
        """The running (or last) instance's log; `previous`: the instance before it (`logs --previous`)."""
        return self.pod_dir(namespace, pod) / "logs" / f"{container}{'.previous' if previous else ''}.log"

    @property
    def kubelet_pods_file(self) -> Path:
        return self.root / "kubelet" / "pods.json"

    def container_pidfile(self, namespace: str, pod: str, container: str) -> Path:
        return self.pod_dir(namespace, pod) / "pids" / f"{container}.json"


@dataclass(frozen=True)
class ClusterInfo:
    """Identity of one running local cluster (the marker value on every process it starts)."""

    cluster_id: str
    prefix: int  # second octet: pods get 127.<prefix>.1.x and up, Services 127.<prefix>.0.x
    api_url: str
    emulator: bool = False  # the API emulator, not the real control plane (decides the kubectl: tools.py)

    def dump(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ClusterInfo | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)

"""Where the Go-built control-plane binaries live, and which sources and versions they come from.

One place for: the pinned versions (read from `cluster/k8s/go.mod` and `cluster/etcd/go.mod`, the only
place they are written), the cache folder keyed by those versions, the Go environment the build uses, and the
source fingerprint that says whether a cached binary still matches the sources.

Layout (``bins_dir()``)::

    ${XDG_CACHE_HOME:-~/.cache}/sglang-operator/cluster-bins/k8s-v1.37.2_etcd-v3.6.17/
        k8s              multi-call: kube-apiserver, kube-controller-manager, kube-scheduler,
                         kubectl, certs, ... (`k8s <subcommand> [flags]`)
        kubectl          symlink to k8s (the binary dispatches on its own name)
        etcd
        lws              the LeaderWorkerSet controller (sigs.k8s.io/lws, cluster/lws; optional: find_lws())
        lws-crds/        its CRDs, copied from the same module version
        k8s.sources, etcd.sources, lws.sources   the source fingerprint each was built from
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CLUSTER_DIR = REPO_ROOT / "cluster"
K8S_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
LWS_MODULE = "sigs.k8s.io/lws"
# The Go toolchain the build uses when `go` is not on PATH (the project's machines install it here).
GO_FALLBACK = Path("/usr/local/go/bin/go")


class ClusterBinsMissing(RuntimeError):
    """The binaries are not built (or are stale): the message says what to run."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sglang-operator"


def module_version(go_mod: Path, module: str) -> str:
    """The version `go_mod` requires of `module` (single-line or block form)."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    match = pattern.search(go_mod.read_text())
    if not match:
        raise ValueError(f"{go_mod}: no require line for {module}")
    return match.group(1)


def k8s_version(cluster_dir: Path = CLUSTER_DIR) -> str:
    return module_version(cluster_dir / "k8s" / "go.mod", K8S_MODULE)


def etcd_version(cluster_dir: Path = CLUSTER_DIR) -> str:
    return module_version(cluster_dir / "etcd" / "go.mod", ETCD_MODULE)


def lws_version(cluster_dir: Path = CLUSTER_DIR) -> str:
    return module_version(cluster_dir / "lws" / "go.mod", LWS_MODULE)


def bins_dir(cluster_dir: Path = CLUSTER_DIR) -> Path:
    key = f"k8s-{k8s_version(cluster_dir)}_etcd-{etcd_version(cluster_dir)}"
    return cache_root() / "cluster-bins" / key


def source_fingerprint(module_dir: Path) -> str:
    """sha256 over a module's go.mod, go.sum and *.go files: a new subcommand file means a rebuild."""
    digest = hashlib.sha256()
    files = sorted(p for p in module_dir.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go")
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def go_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `go`: static binaries, and module/build caches under the project's cache folder
    (so they are easy to measure, keep in CI and delete) unless the caller set GOMODCACHE/GOCACHE."""
    env = dict(os.environ if base is None else base)
    env.setdefault("GOMODCACHE", str(cache_root() / "go" / "mod"))
    env.setdefault("GOCACHE", str(cache_root() / "go" / "build"))
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")  # never fetch another toolchain behind the user's back
    return env


@dataclass(frozen=True)
class ClusterBins:
    """Paths of the built binaries. `k8s` runs as `k8s <component> ...`; `kubectl` is the same binary."""

    k8s: Path
    kubectl: Path
    etcd: Path
    k8s_version: str
    etcd_version: str


def find_bins(cluster_dir: Path = CLUSTER_DIR) -> ClusterBins:
    """The cached binaries, checked present and built from the current sources."""
    folder = bins_dir(cluster_dir)
    bins = ClusterBins(
        k8s=folder / "k8s",
        kubectl=folder / "kubectl",
        etcd=folder / "etcd",
        k8s_version=k8s_version(cluster_dir),
        etcd_version=etcd_version(cluster_dir),
    )
    for name in ("k8s", "etcd"):
        _check_built(folder, name, cluster_dir)
    return bins


def _check_built(folder: Path, name: str, cluster_dir: Path) -> None:
    binary = folder / name
    stamp = folder / f"{name}.sources"
    if not os.access(binary, os.X_OK):
        raise ClusterBinsMissing(f"{binary} is not built: run `make cluster-bins`")
    if not stamp.is_file() or stamp.read_text().strip() != source_fingerprint(cluster_dir / name):
        raise ClusterBinsMissing(
            f"{binary} was built from other sources than cluster/{name}: run `make cluster-bins`"
        )


@dataclass(frozen=True)
class LwsBins:
    """The LeaderWorkerSet controller and the CRDs of the same version (applied before it starts)."""

    lws: Path
    crds: tuple[Path, ...]
    version: str


def find_lws(cluster_dir: Path = CLUSTER_DIR) -> LwsBins:
    """The cached LWS controller, checked built from cluster/lws (kept apart from find_bins: a control plane
    without LWS needs none of it)."""
    folder = bins_dir(cluster_dir)
    _check_built(folder, "lws", cluster_dir)
    crds = tuple(sorted((folder / "lws-crds").glob("*.yaml")))
    if not crds:
        raise ClusterBinsMissing(f"{folder / 'lws-crds'} holds no CRD: run `make cluster-bins`")
    return LwsBins(lws=folder / "lws", crds=crds, version=lws_version(cluster_dir))

#!/usr/bin/env python3
"""Build the local control plane's binaries from Go modules: `make cluster-bins`.

Three static binaries, into the cache folder keyed by version (sglang_dev.controlplane.bins.bins_dir()):
  - `k8s`  from cluster/k8s: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (same release),
           the project's `certs` helper and whatever other cluster/k8s/*.go files register;
  - `etcd` from cluster/etcd: go.etcd.io/etcd/server/v3;
  - `lws`  from cluster/lws: the LeaderWorkerSet controller (sigs.k8s.io/lws's own command, a `tool` of that
           module, with the version's pinned dependencies), and its CRDs copied into lws-crds/.
A binary whose recorded source fingerprint matches cluster/<module> is left alone (a warm run is a no-op), so
adding or bumping one module never rebuilds the others.
A cold build takes tens of minutes on 2 cores (k8s most of it); progress is printed as packages compile.
Concurrent runs (parallel worktrees) wait for each other on a lock file instead of building twice.
Usage: `python scripts/build_cluster_bins.py [--force] [MODULE ...]` (default: all)
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dev"))
from sglang_dev.controlplane.bins import (
    CLUSTER_DIR,
    GO_FALLBACK,
    LWS_MODULE,
    bins_dir,
    etcd_version,
    go_env,
    k8s_version,
    lws_version,
    source_fingerprint,
)

# Build tags as in Kubernetes' release build (hack/lib/golang.sh): no test code, SELinux, no gRPC tracing.
K8S_TAGS = "selinux,notest,grpcnotrace"
START = time.monotonic()
IMPORT_PATH = re.compile(r"[\w.~-]+(/[\w.~-]+)*")  # what `go build -v` prints per compiled package


def log(message: str) -> None:
    elapsed = int(time.monotonic() - START)
    print(f"cluster-bins [{elapsed // 60}m{elapsed % 60:02d}s] {message}", flush=True)


def fail(step: str, what: str, todo: str) -> None:
    print(f"cluster-bins: FAILED at step '{step}': {what}\n  what to do: {todo}", file=sys.stderr, flush=True)
    sys.exit(1)


def find_go() -> str:
    go = shutil.which("go") or (str(GO_FALLBACK) if os.access(GO_FALLBACK, os.X_OK) else None)
    if not go:
        fail(
            "find Go",
            "no Go toolchain: `go` is not on PATH and /usr/local/go/bin/go does not exist",
            "install Go 1.26 or newer (https://go.dev/dl/, or your distribution's golang package) and re-run "
            "`make cluster-bins`",
        )
    need = re.search(r"^go (\d+)\.(\d+)", (CLUSTER_DIR / "k8s" / "go.mod").read_text(), re.MULTILINE)
    have = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, env=go_env()
    ).stdout.strip()
    have_match = re.match(r"go(\d+)\.(\d+)", have)
    if need and have_match and tuple(map(int, have_match.groups())) < tuple(map(int, need.groups())):
        fail(
            "find Go",
            f"{go} is {have}; cluster/k8s/go.mod needs go {'.'.join(need.groups())}",
            "install a newer Go and put it first on PATH, then re-run `make cluster-bins`",
        )
    return go


def download(go: str, module: str) -> None:
    log(f"{module}: downloading modules (go mod download)")
    result = subprocess.run(
        [go, "mod", "download"], cwd=CLUSTER_DIR / module, env=go_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        fail(
            f"download {module} modules",
            result.stderr.strip()[-2000:],
            "check the network and the module proxy (`go env GOPROXY`; default https://proxy.golang.org), "
            "then re-run `make cluster-bins`",
        )


def compile_binary(go: str, module: str, output: Path, build_args: list[str], package: str = ".") -> None:
    """`go build -v`, printing a progress line every 50 packages (and the count of all it will build)."""
    cwd = CLUSTER_DIR / module
    tags = build_args[:2] if build_args[:1] == ["-tags"] else []
    listing = subprocess.run(
        [go, "list", "-deps", *tags, package], cwd=cwd, env=go_env(), capture_output=True, text=True
    )
    total = len(listing.stdout.split()) if listing.returncode == 0 else 0
    log(f"{module}: compiling {total or '?'} packages (go build; warm Go build cache makes this quick)")
    tmp = output.with_name(output.name + ".tmp")
    cmd = [go, "build", "-v", "-trimpath", *build_args, "-o", str(tmp), package]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    built, tail = 0, []
    for line in proc.stdout:
        tail = [*tail[-39:], line.rstrip()]
        if IMPORT_PATH.fullmatch(line.strip()):
            built += 1
            if built % 50 == 0:
                log(f"{module}: {built}/{total or '?'} packages compiled (last: {line.strip()})")
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        fail(
            f"compile {module}",
            "\n".join(tail),
            "read the compiler output above; a module download error means the network or proxy failed "
            "(re-run `make cluster-bins`); a compile error means the pinned versions in cluster/"
            f"{module}/go.mod do not build together (see scripts/gen_cluster_go_mod.py)",
        )
    tmp.replace(output)
    log(f"{module}: built {output} ({output.stat().st_size / 1e6:.0f} MB)")


def k8s_ldflags(version: str) -> str:
    """Version variables as Kubernetes' release build sets them, so `kubectl version` says e.g. v1.37.2."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


def copy_lws_crds(go: str, folder: Path) -> None:
    """The CRDs of the LWS version just built, from its module (config/crd/bases), into lws-crds/."""
    where = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", LWS_MODULE], cwd=CLUSTER_DIR / "lws",
                           env=go_env(), capture_output=True, text=True)
    bases = Path(where.stdout.strip()) / "config" / "crd" / "bases"
    crds = sorted(bases.glob("*.yaml")) if where.returncode == 0 else []
    if not crds:
        fail("copy LWS CRDs", f"no CRD under {bases}: {where.stderr.strip()}",
             "re-run `make cluster-bins`; if it persists, the LWS module layout changed (cluster/lws/go.mod)")
    target = folder / "lws-crds"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for crd in crds:
        shutil.copyfile(crd, target / crd.name)
    log(f"lws: {len(crds)} CRDs in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached binaries match")
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="k8s, etcd or lws (default: all)")
    args = parser.parse_args()
    if unknown := set(args.modules) - {"k8s", "etcd", "lws"}:
        parser.error(f"unknown module(s) {sorted(unknown)}: choose from k8s, etcd, lws")
    folder = bins_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another build holds {folder / '.lock'}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        plan = {
            "etcd": ["-ldflags", "-s -w"],
            "k8s": ["-tags", K8S_TAGS, "-ldflags", k8s_ldflags(k8s_version())],
            "lws": ["-ldflags", f"-s -w -X {LWS_MODULE}/pkg/version.GitVersion={lws_version()}"],
        }
        packages = {"lws": f"{LWS_MODULE}/cmd"}  # the others build their module's own main package
        todo = []
        for module in args.modules or plan:
            stamp = folder / f"{module}.sources"
            current = stamp.is_file() and stamp.read_text().strip() == source_fingerprint(
                CLUSTER_DIR / module
            )
            if args.force or not current or not os.access(folder / module, os.X_OK):
                todo.append(module)
        if not todo:
            print(f"cluster-bins: up to date in {folder}", flush=True)
            return
        go = find_go()
        log(f"building {', '.join(todo)} (Kubernetes {k8s_version()}, etcd {etcd_version()}, LWS "
            f"{lws_version()}) into {folder}")
        for module in todo:
            started = time.monotonic()
            download(go, module)
            compile_binary(go, module, folder / module, plan[module], packages.get(module, "."))
            if module == "lws":
                copy_lws_crds(go, folder)
            (folder / f"{module}.sources").write_text(source_fingerprint(CLUSTER_DIR / module) + "\n")
            log(f"{module}: took {int(time.monotonic() - started)} s")
        kubectl = folder / "kubectl"
        if (folder / "k8s").exists() and not kubectl.is_symlink():
            kubectl.unlink(missing_ok=True)
            kubectl.symlink_to("k8s")
        log(f"done: {folder}")


if __name__ == "__main__":
    main()

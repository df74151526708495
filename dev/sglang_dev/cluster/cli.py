"""`sglang-operator dev up|down|status|logs`: the local cluster's command line.

  up      [--state-dir .state/dev] [--detach] [--timeout S] [--operator-arg ARG ...] [--emulator]
          [--node-gpus N]
  down    [--state-dir ...] [--timeout S]
  status  [--state-dir ...] [--json]
  logs    POD|operator|emulator|kubelet-api|supervisor [-n NS] [-c CONTAINER] [--events] [-f]
          [--state-dir ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sglang_dev.cluster import procs
from sglang_dev.cluster.kubeapi import PODS, SGLANGMODELS, Credentials, KubeClient
from sglang_dev.cluster.layout import DEFAULT_STATE_DIR, ClusterInfo, Layout
from sglang_dev.cluster.supervisor import READY_FILE, ClusterOptions, configure_logging, serve
from sglang_dev.cluster.tools import Kubectl

COMPONENTS = ("supervisor", "emulator", "kubelet-api", "operator")
VERB_HELP = {
    "up": "Start the local cluster (etcd, kube-apiserver, controller-manager, scheduler, a node agent "
          "running pods as processes, the operator; --emulator: the API emulator instead) and print how to "
          "use it.",
    "down": "Stop the local cluster and every process it started.",
    "status": "Show the local cluster's processes, models, pods and services.",
    "logs": "Print a pod's log (or its events), or the log of the operator, the emulator, the kubelet API or "
            "the supervisor.",
}


def _parser(verb: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"sglang-operator dev {verb}", description=VERB_HELP[verb])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help="kubeconfig, logs, pid files and volumes live here (default .state/dev)")
    if verb == "up":
        p.add_argument("--detach", action="store_true", help="run in the background and return when ready")
        p.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness (--detach)")
        p.add_argument("--operator-arg", action="append", default=[], help="extra `sglang-operator run` arg")
        p.add_argument("--probe-period-cap", type=float, default=None, metavar="S",
                       help="run every pod probe at least every S seconds (thresholds unchanged); for tests. "
                            "Default: the periods the pod spec says")
        p.add_argument("--emulator", action="store_true",
                       help="use the KMock-based API emulator and the project's own Deployment controller "
                            "instead of the real control plane (starts in 2 s; no RBAC, scheduler, logs or "
                            "port-forward)")
        p.add_argument("--node-gpus", type=int, default=8, metavar="N",
                       help="nvidia.com/gpu capacity of the local node (real control plane; default 8)")
    elif verb == "down":
        p.add_argument("--timeout", type=float, default=120, help="seconds before everything is SIGKILLed")
    elif verb == "status":
        p.add_argument("--json", action="store_true", help="print the status as JSON")
    elif verb == "logs":
        p.add_argument("pod", help="a pod name, or operator, emulator, kubelet-api, supervisor")
        p.add_argument("-n", "--namespace", help="the pod's namespace (default: any)")
        p.add_argument("-c", "--container", default=None, help="the container (default: the first logged)")
        p.add_argument("--events", action="store_true", help="the pod's events instead of its log")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing as the log grows")
    return p


def running(layout: Layout) -> procs.PidRecord | None:
    record = procs.read_pidfile(layout.pidfile("supervisor"))
    return record if record is not None and record.alive() else None


def _print_export(layout: Layout) -> None:
    print(f"export KUBECONFIG={layout.kubeconfig}")
    print(f"export KUBECTL={Kubectl.for_cluster(layout).binary}  # the kubectl for this cluster")


def up(args: argparse.Namespace) -> int:
    layout = Layout.at(args.state_dir)
    if running(layout) and (layout.root / READY_FILE).exists():
        print(f"the local cluster is already running (state {layout.root})", file=sys.stderr)
        _print_export(layout)
        return 0
    if running(layout):
        print(f"a local cluster is starting or stopping in {layout.root}; try again", file=sys.stderr)
        return 1
    previous = ClusterInfo.load(layout.cluster_file)
    if previous is not None:  # a supervisor that was SIGKILLed cannot have cleaned up after itself
        left = procs.kill_marked(procs.CLUSTER_MARKER, previous.cluster_id)
        if left:
            print(f"stopped {len(left)} leftover process(es) of a previous cluster in {layout.root}",
                  file=sys.stderr)
    if args.node_gpus < 0:
        print(f"--node-gpus must be 0 or more, got {args.node_gpus}", file=sys.stderr)
        return 2
    options = ClusterOptions(tuple(args.operator_arg), args.probe_period_cap, args.emulator, args.node_gpus)
    if not args.detach:
        configure_logging()
        return serve(layout, options)
    log_path = layout.log("supervisor")
    offset = log_path.stat().st_size if log_path.exists() else 0
    argv = [sys.executable, "-m", "sglang_dev.cluster.supervisor", "--state-dir", str(layout.root),
            *(f"--operator-arg={a}" for a in args.operator_arg)]
    if args.probe_period_cap is not None:
        argv += ["--probe-period-cap", str(args.probe_period_cap)]
    argv += ["--node-gpus", str(args.node_gpus), *(["--emulator"] if args.emulator else [])]
    proc = procs.spawn(argv, log_path, env=dict(os.environ))
    deadline = time.monotonic() + args.timeout
    with open(log_path) as log:
        log.seek(offset)
        while True:
            for line in log:
                print(line.rstrip(), file=sys.stderr)
            if (layout.root / READY_FILE).exists():
                _print_export(layout)
                return 0
            if proc.poll() is not None:
                print(f"the local cluster failed to start (exit {proc.returncode}); see {log_path}",
                      file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"the local cluster was not ready within {args.timeout:.0f}s; stopping it",
                      file=sys.stderr)
                _stop(layout, 30)
                return 1
            time.sleep(0.2)


def _stop(layout: Layout, timeout_s: float) -> list[int]:
    """Stop the supervisor (which stops everything), then make sure: pid files and env markers."""
    record = running(layout)
    if record is not None:
        print(f"stopping the local cluster (supervisor pid {record.pid}): operator, pods, proxy, "
              "control plane ...", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        next_note = time.monotonic() + 5
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
            if time.monotonic() > next_note:
                print("  ... still stopping (pods drain within their grace period)", file=sys.stderr)
                next_note += 5
        if record.alive():
            print(f"the supervisor did not stop within {timeout_s:.0f}s: SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):  # `dev up` in a terminal leads no group of its own
                os.kill(record.pid, signal.SIGKILL)
            procs.signal_group(record.pid, signal.SIGKILL)
    for pidfile in [*(layout.pidfile(n) for n in COMPONENTS), *layout.pods_dir.glob("*/pids/*.json")]:
        rec = procs.read_pidfile(pidfile)
        if rec is not None and rec.alive():
            procs.signal_group(rec.pid, signal.SIGKILL)
    info = ClusterInfo.load(layout.cluster_file)
    left: list[int] = []
    if info is not None:
        procs.kill_marked(procs.CLUSTER_MARKER, info.cluster_id)
        time.sleep(0.1)
        left = procs.marked_pids(procs.CLUSTER_MARKER, info.cluster_id)
    return left


def down(args: argparse.Namespace) -> int:
    layout = Layout.at(args.state_dir)
    left = _stop(layout, args.timeout)
    (layout.root / READY_FILE).unlink(missing_ok=True)
    if left:
        print(f"processes still running after SIGKILL: {left}", file=sys.stderr)
        return 1
    print("local cluster stopped; no process left", file=sys.stderr)
    return 0


async def _cluster_objects(layout: Layout) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    client = KubeClient(Credentials.from_kubeconfig(layout.kubeconfig))
    try:
        models = (await client.list(SGLANGMODELS.path())).get("items") or []
        pods = (await client.list(PODS.path())).get("items") or []
        return models, pods
    finally:
        await client.close()


def cluster_status(layout: Layout) -> dict[str, Any]:
    processes = {}
    for name in COMPONENTS:
        rec = procs.read_pidfile(layout.pidfile(name))
        if rec is None:  # not part of this kind of cluster (the emulator on the real control plane)
            continue
        processes[name] = {"pid": rec.pid if rec else None, "running": bool(rec and rec.alive())}
    out: dict[str, Any] = {"stateDir": str(layout.root), "kubeconfig": str(layout.kubeconfig),
                           "running": running(layout) is not None, "processes": processes,
                           "models": [], "pods": [], "services": {}}
    if not out["running"]:
        return out
    models, pods = asyncio.run(_cluster_objects(layout))
    for m in models:
        conds = {c.get("type"): c.get("status") for c in (m.get("status") or {}).get("conditions") or []}
        out["models"].append({"namespace": m["metadata"]["namespace"], "name": m["metadata"]["name"],
                              "model": (m.get("spec") or {}).get("model"),
                              "phase": (m.get("status") or {}).get("phase"), "ready": conds.get("Ready")})
    for p in pods:
        st = p.get("status") or {}
        containers = st.get("containerStatuses") or []
        meta = p["metadata"]
        first = (((p.get("spec") or {}).get("containers") or [{}])[0]).get("name", "engine")  # engine, router
        pid_rec = procs.read_pidfile(layout.container_pidfile(meta["namespace"], meta["name"], first))
        out["pods"].append({
            "namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"], "phase": st.get("phase"),
            "ip": st.get("podIP"), "ready": all(c.get("ready") for c in containers) and bool(containers),
            "restarts": sum(c.get("restartCount", 0) for c in containers),
            "pid": pid_rec.pid if pid_rec and pid_rec.alive() else None})
    if layout.services_file.exists():
        out["services"] = json.loads(layout.services_file.read_text())
    return out


def status(args: argparse.Namespace) -> int:
    layout = Layout.at(args.state_dir)
    st = cluster_status(layout)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 3
    if not st["running"]:
        print(f"no local cluster running (state {layout.root}); start one with `sglang-operator dev up`")
        return 3
    print(f"local cluster running; export KUBECONFIG={st['kubeconfig']}\n\nPROCESSES")
    for name, p in st["processes"].items():
        print(f"  {name:<12} pid {p['pid']}  {'running' if p['running'] else 'NOT RUNNING'}")
    print("MODELS (sgm)")
    for m in st["models"]:
        print(f"  {m['namespace']}/{m['name']:<24} {m['model']!s:<28} phase={m['phase']} Ready={m['ready']}")
    print("PODS")
    for p in st["pods"]:
        print(f"  {p['namespace']}/{p['name']:<40} {p['phase']!s:<9} ready={p['ready']!s:<5} ip={p['ip']} "
              f"restarts={p['restarts']} pid={p['pid']}")
    print("SERVICES")
    for name, s in st["services"].items():
        print(f"  {name:<30} {s['url']}  -> {', '.join(s['endpoints']) or '(no ready endpoints)'}")
    return 0


def _log_file(layout: Layout, args: argparse.Namespace) -> Path | None:
    if args.pod in COMPONENTS:
        return layout.log(args.pod)
    pattern = f"{args.namespace}_{args.pod}" if args.namespace else f"*_{args.pod}"
    dirs = sorted(layout.pods_dir.glob(pattern))
    if not dirs:
        return None
    if args.events:
        return dirs[0] / "events.log"
    logs = sorted((dirs[0] / "logs").glob("*.log"))
    if args.container:
        return dirs[0] / "logs" / f"{args.container}.log"
    return logs[0] if logs else None


def logs(args: argparse.Namespace) -> int:
    layout = Layout.at(args.state_dir)
    path = _log_file(layout, args)
    if path is None or not path.exists():
        print(f"no log for {args.pod!r} in {layout.root} (pods: "
              f"{', '.join(d.name.split('_', 1)[1] for d in sorted(layout.pods_dir.glob('*_*'))) or 'none'})",
              file=sys.stderr)
        return 1
    with open(path, errors="replace") as f:
        sys.stdout.write(f.read())
        sys.stdout.flush()
        while args.follow:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


VERBS = {"up": up, "down": down, "status": status, "logs": logs}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VERBS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = _parser(argv[0]).parse_args(argv[1:])
    try:
        return VERBS[argv[0]](args)
    except KeyboardInterrupt:
        return 130

"""Operator scale: N SGLangModels created at once, with the real operator as a subprocess
(`sglang-operator run`, so its RSS is its own), against the in-process API emulator (default) or the real
control plane (`--cluster real`: etcd, kube-apiserver, controller-manager, scheduler from `make cluster-bins`,
the operator as the chart's ServiceAccount, its requests counted by a proxy; see realplane.py).

    .venv/bin/python bench/operator_scale.py                         # 50, 200, 500 models, 60 s quiet
    .venv/bin/python bench/operator_scale.py --sizes 500 --quiet 120
    .venv/bin/python bench/operator_scale.py --cluster real --sizes 500,2000 --quiet 60

Per size, on a fresh cluster: (1) create N models in one burst; converged = every model has its
Deployment, Service and ConfigMap and a status with observedGeneration == generation (no kubelet runs
here, so phase stays Progressing; on the real control plane the status must also show the model's pod
pending, unschedulable); time to converge, the operator's API requests per model, its peak RSS
(VmHWM). (2) A quiet period (default 60 s) counting the operator's write requests. (3) An operator restart
(SIGTERM, start again), counting writes until every model has been reconciled again (each child read at
least once since the restart) plus a short settle. Every phase has a deadline; everything started is
killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kmock
from procs import BENCH_DIR, ROOT, VENV_BIN, Proc, free_port, patched_copy, print_log_tails, rss_mb, wait_http
from realplane import WRITE_METHODS, RealPlane, RequestCounts, resource_of
from report import publish, write_operator_report
from sglang_dev.emulator import Emulator, crd_documents, install_crds, kubeconfig_text
from sglang_dev.emulator.api import WriteOptions
from sglang_operator import names as names_

GROUP, VERSION, PLURAL = "serving.sglang-operator.io", "v1alpha1", "sglangmodels"
CHILDREN = (("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"))
NAMESPACE = "default"
POLL_S = 0.25


class CountingEmulator(Emulator):
    """The emulator, counting the operator's requests by kind (its own log is capped and shared)."""

    counter: RequestCounts

    async def __call__(self, raw: Any) -> Any:
        sample = raw.method in WRITE_METHODS and len(self.counter.write_samples) < 20
        self.counter.record(raw.method, raw.path, raw.query, (await raw.read()) if sample else b"")
        return await super().__call__(raw)


__all__ = ["resource_of"]  # re-exported for the bench tests


def model_body(i: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SGLangModel",
            "metadata": {"name": f"m{i:04d}", "namespace": NAMESPACE},
            "spec": {"model": "Qwen/Qwen2.5-7B-Instruct", "replicas": 1,
                     "loraAdapters": [{"name": "sql", "source": "org/sql-lora"}]}}


HANDLED_ANNOTATION = f"{GROUP}/last-handled-configuration"  # kopf's mark: the model's handlers finished


def settled(cr: dict[str, Any] | None, handled: bool) -> bool:
    """A status for the current generation (and, with `handled`, kopf's last-handled mark: its bookkeeping
    patch comes after the status write)."""
    status = (cr or {}).get("status") or {}
    if cr is None or status.get("observedGeneration") != cr["metadata"].get("generation"):
        return False
    return not handled or HANDLED_ANNOTATION in (cr["metadata"].get("annotations") or {})


def child_names(name: str) -> tuple[str, str, str]:
    return names_.deployment(name), names_.service(name), names_.configmap(name)


class EmulatorCluster:
    """The in-process API emulator: creation in its store (no HTTP), convergence read from the store."""

    def __init__(self, folder: Path) -> None:
        self.emulator = CountingEmulator(bookmark_interval=5.0)
        self.emulator.counter = self.counts = RequestCounts()
        install_crds(self.emulator, crd_documents([ROOT / "crds"]))
        self.server = kmock.Server(self.emulator, host="127.0.0.1")
        self.operator_kubeconfig = folder / "operator.kubeconfig"
        self.poll_s = POLL_S

    async def __aenter__(self) -> EmulatorCluster:
        await self.emulator.__aenter__()
        await self.server.__aenter__()
        self.operator_kubeconfig.write_text(kubeconfig_text(f"http://127.0.0.1:{self.server.port}"))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.emulator.close_watches()
        await self.server.__aexit__(*exc)
        await self.emulator.__aexit__(*exc)

    async def create_models(self, n: int) -> None:
        cr_type = self.emulator.store.resource(GROUP, VERSION, PLURAL)
        for i in range(n):  # one burst: nothing yields between creates
            self.emulator.api.create(cr_type, NAMESPACE, model_body(i), WriteOptions())

    async def converged(self, names: list[str], handled: bool) -> int:
        """How many models are settled and have every child."""
        store = self.emulator.store
        cr_key = store.resource(GROUP, VERSION, PLURAL).key
        child_keys = [store.resource(g, v, p).key for g, v, p in CHILDREN]
        return sum(1 for name in names if settled(store.get(cr_key, NAMESPACE, name), handled) and all(
            store.get(key, NAMESPACE, child) is not None
            for key, child in zip(child_keys, child_names(name), strict=True)))


def reflects_pending_pod(cr: dict[str, Any]) -> bool:
    """On the real control plane the world goes on after the children exist: the Deployment controller
    makes a ReplicaSet and a Pod, the scheduler marks it unschedulable (no node). Converged includes the
    status saying so (its replica count and the Ready reason); until then the operator is still catching up,
    and its writes would count as quiet-period writes."""
    status = cr.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return status.get("replicas") == cr["spec"]["replicas"] and ready.get("reason") == "Unschedulable"


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """What a model that has not converged shows (for the result file)."""
    conditions = {c.get("type"): c.get("reason") for c in status.get("conditions") or []}
    return {"observedGeneration": status.get("observedGeneration"), "replicas": status.get("replicas"),
            "phase": status.get("phase"), "reasons": conditions}


class RealCluster(RealPlane):
    """The real control plane: models created over HTTP by the admin (16 at a time, the clock running),
    convergence from a list of the models (with `handled`, their status also reflects the pending pod),
    every child checked once they have all settled."""

    poll_s = 1.0
    behind: list[dict[str, Any]] = []  # a few models not converged at the last check

    async def create_models(self, n: int) -> None:
        assert self.admin is not None
        admin, path, gate = self.admin, f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", \
            asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with gate:
                await admin.create(path, model_body(i))

        await asyncio.gather(*(create(i) for i in range(n)))

    async def converged(self, names: list[str], handled: bool) -> int:
        assert self.admin is not None
        items = (await self.admin.list(f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"))["items"]
        done = {cr["metadata"]["name"] for cr in items
                if settled(cr, handled) and (not handled or reflects_pending_pod(cr))}
        self.behind = [{"name": cr["metadata"]["name"], "generation": cr["metadata"].get("generation"),
                        "status": summary(cr.get("status") or {})}
                       for cr in items if cr["metadata"]["name"] not in done][:5]
        if len(done) < len(names):
            return len(done)
        present = set()
        for group, version, plural in CHILDREN:
            base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
            listed = await self.admin.list(f"{base}/namespaces/{NAMESPACE}/{plural}")
            present |= {(plural, obj["metadata"]["name"]) for obj in listed["items"]}
        plurals = [plural for _, _, plural in CHILDREN]
        return sum(1 for name in names if all(
            (plural, child) in present for plural, child in zip(plurals, child_names(name), strict=True)))


def check_alive(operator: Proc) -> None:
    """A dead operator ends the run at once, naming its log (waiting out the deadline would hide it)."""
    if not operator.alive():
        raise RuntimeError(f"the operator exited with {operator.popen.returncode if operator.popen else '?'} "
                           f"(log: {operator.log})")


class Scale:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp

    def start_operator(self, kubeconfig: Path, label: str) -> tuple[Proc, int]:
        port = free_port()
        argv = [str(VENV_BIN / "sglang-operator"), "run", "--kubeconfig", str(kubeconfig),
                "--liveness", f"http://127.0.0.1:{port}/healthz", "--log-level", "warning"]
        env = {**os.environ, "SGLANG_OPERATOR_RESYNC_SECONDS": str(self.args.resync)}
        if self.args.operator_patch:
            patched = patched_copy(ROOT / "operator" / "sglang_operator", self.args.operator_patch,
                                   self.tmp / label)
            env["PYTHONPATH"] = os.pathsep.join([str(patched), *filter(None, [os.environ.get("PYTHONPATH")])])
        proc = Proc(argv, env=env, log=self.tmp / f"operator-{label}.log").start()
        return proc, port

    async def wait_live(self, proc: Proc, port: int) -> None:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60, proc)

    async def drain(self, counts: RequestCounts, operator: Proc, idle: float = 5.0,
                    limit: float = 120.0) -> int:
        """Wait (at most `limit` s) until the operator has made no request for `idle` s: on a loaded machine
        it may still be working through watch events queued during convergence (reconciles that change
        nothing), which are not "at rest". -> the requests it made meanwhile."""
        counts.reset()
        started = quiet_since = time.monotonic()
        last = 0
        while time.monotonic() - started < limit and time.monotonic() - quiet_since < idle:
            await asyncio.sleep(0.5)
            check_alive(operator)
            if counts.counts["total"] != last:
                last, quiet_since = counts.counts["total"], time.monotonic()
        return last

    async def run_size(self, n: int) -> dict[str, Any]:
        folder = self.tmp / f"cluster-{n}"
        folder.mkdir()
        cluster = RealCluster(folder) if self.args.cluster == "real" else EmulatorCluster(folder)
        async with cluster:
            operator, port = self.start_operator(cluster.operator_kubeconfig, f"{n}-a")
            try:
                await self.wait_live(operator, port)
                return await self._phases(cluster, operator, n)
            finally:
                operator.stop(grace=10)

    async def _phases(self, cluster: EmulatorCluster | RealCluster, operator: Proc, n: int) -> dict[str, Any]:
        args = self.args
        result: dict[str, Any] = {"models": n, "cluster": args.cluster}
        names = [f"m{i:04d}" for i in range(n)]
        counts = cluster.counts
        load = result["loadavg"] = {"start": os.getloadavg()}  # 1, 5, 15 min, per phase (shared machine)
        counts.reset()
        started = time.monotonic()
        await cluster.create_models(n)
        result["create_s"] = round(time.monotonic() - started, 2)
        done, status_s = 0, None
        while time.monotonic() - started < args.converge_timeout:
            await asyncio.sleep(cluster.poll_s)
            check_alive(operator)
            if status_s is None and await cluster.converged(names, handled=False) == n:
                status_s = round(time.monotonic() - started, 2)
            done = await cluster.converged(names, handled=True)
            if done == n:
                break
        result["status_s"] = status_s
        result["converge_s"] = round(time.monotonic() - started, 2) if done == n else None
        result["converged"] = done
        if done < n:
            result["not_converged_sample"] = getattr(cluster, "behind", [])
        totals = dict(counts.counts)
        result["requests_to_converge"] = totals
        result["requests_per_model"] = round(totals.get("total", 0) / n, 2)
        result["writes_per_model"] = round(totals.get("writes", 0) / n, 2)

        load["converged"] = os.getloadavg()
        if args.cluster == "real":  # the operator may still work through queued events that change nothing
            drained = time.monotonic()
            result["drain_requests"] = await self.drain(counts, operator)
            result["drain_s"] = round(time.monotonic() - drained, 1)
        counts.reset()
        await asyncio.sleep(args.quiet)
        load["quiet_end"] = os.getloadavg()
        result["quiet_s"] = args.quiet
        result["quiet_writes"] = counts.counts.get("writes", 0)
        result["quiet_requests"] = dict(counts.counts)
        result["quiet_write_samples"] = counts.write_samples
        result["quiet_requests_per_s"] = round(counts.counts.get("total", 0) / args.quiet, 1)
        result["rss_mb_after_quiet"] = round(rss_mb(operator.pid), 1)
        result["peak_rss_mb"] = round(rss_mb(operator.pid, "VmHWM"), 1)

        operator.stop(grace=10)
        counts.reset()
        restarted = time.monotonic()
        second, port = self.start_operator(cluster.operator_kubeconfig, f"{n}-b")
        try:
            await self.wait_live(second, port)
            resynced = None
            while time.monotonic() - restarted < args.converge_timeout:
                await asyncio.sleep(POLL_S)
                check_alive(second)
                if all(len(seen) >= n for seen in counts.child_gets.values()):
                    resynced = round(time.monotonic() - restarted, 2)
                    break
            await asyncio.sleep(args.settle)
            result["restart_resync_s"] = resynced
            result["restart_writes"] = counts.counts.get("writes", 0)
            result["restart_requests"] = dict(counts.counts)
            result["restart_write_samples"] = counts.write_samples
            result["restart_peak_rss_mb"] = round(rss_mb(second.pid, "VmHWM"), 1)
            load["end"] = os.getloadavg()
        finally:
            second.stop(grace=10)
        return result


def check_targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    big = max(sizes, key=lambda r: r["models"])
    n = big["models"]
    peak = max(max(r["peak_rss_mb"], r.get("restart_peak_rss_mb") or 0) for r in sizes)
    quiet = max(r["quiet_writes"] for r in sizes)
    restart = max(r["restart_writes"] for r in sizes)
    conv = big["converge_s"]
    return [
        {"target": f"{n} models converge within 60 s", "value": conv,
         "met": conv is not None and conv <= 60},
        {"target": "operator RSS <= 200 MB (peak over every size)", "value": peak, "met": peak <= 200},
        {"target": "zero writes in the quiet period", "value": quiet, "met": quiet == 0},
        {"target": "zero writes during a restart's resync", "value": restart, "met": restart == 0},
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="operator_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", choices=("emulator", "real"), default="emulator",
                   help="the in-process API emulator, or the real control plane (make cluster-bins)")
    p.add_argument("--sizes", default="50,200,500", help="models per run, comma list")
    p.add_argument("--quiet", type=float, default=60.0, help="quiet period after convergence (s)")
    p.add_argument("--resync", type=float, default=60.0, help="operator resync period (s; its default)")
    p.add_argument("--converge-timeout", type=float, default=240.0, help="give up converging after (s)")
    p.add_argument("--settle", type=float, default=5.0, help="extra seconds counted after the restart resync")
    p.add_argument("--operator-patch", type=Path,
                   help="measure a proposed operator change: this diff (paths under sglang_operator/) is "
                   "applied to a temporary copy of the operator package, which the operator runs instead")
    p.add_argument("--label", default="", help="suffix for the result files and plot (e.g. 'after')")
    p.add_argument("--keep-logs", type=Path, metavar="DIR",
                   help="copy every process log (operator, etcd, apiserver, controllers) here at the end, "
                   "even when the run fails (the work folder itself is temporary)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--img", type=Path, default=BENCH_DIR.parent / "docs" / "img")
    return p.parse_args(argv)


async def run_all(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    scale = Scale(args, tmp)
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        result = await scale.run_size(n)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def keep_logs(tmp: Path, into: Path) -> None:
    """Every `*.log` under the work folder, copied with its relative path (cluster-500/control-plane/...)."""
    for log in tmp.rglob("*.log"):
        target = into / log.relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    print(f"logs kept in {into}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        try:
            sizes = asyncio.run(run_all(args, Path(tmp)))
        except BaseException:
            print_log_tails(Path(tmp))
            raise
        finally:
            if args.keep_logs:
                keep_logs(Path(tmp), args.keep_logs)
    body = {"sizes": sizes, "targets": check_targets(sizes), "loadavg_at_start": load}
    publish("operator_scale" + (f"_{args.label}" if args.label else ""), body, args, started,
            write_operator_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

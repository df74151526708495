#!/usr/bin/env python3
"""`make demo`: the whole system on this machine, end to end, in a few minutes.

1. starts the local cluster (`sglang-operator dev up --detach`: etcd, kube-apiserver, controller-manager
   and kube-scheduler built from their Go modules, a node agent running the pods the scheduler binds to it as
   local processes, a Service proxy following EndpointSlices, the operator; all on loopback).
   EMULATOR=1 uses the API emulator and the project's own Deployment controller instead (no Go build);
2. applies examples/tiny.yaml (builtin:tiny on the transformers backend) with the real kubectl;
   BACKEND=sglang applies examples/tiny-sglang.yaml instead: the SGLang backend, which runs here as SGLang
   0.5.23's real HTTP frontend with a simulated scheduler (`make sglang-sim`; ~2.3 GB of RAM instead of
   ~0.4 GB, slower to start);
3. waits with `kubectl wait --for=condition=Ready sgm/<model>`, showing progress while it waits;
4. streams a chat completion through the Service's local address with the `openai` client;
5. adds a LoRA adapter (builtin:tiny-lora-7, built by the engine) with `kubectl patch`, and shows it appear
   in /v1/models while the same pod (same uid) keeps running;
   ROUTER=1 applies examples/tiny-routed.yaml instead: two replicas behind SGLang's gateway (SMG,
   spec.router; its pod runs here as a local `smg` process). It waits until status.router routes to both
   engines, shows the workers SMG found by Kubernetes discovery, streams through the Service (now SMG) and
   shows which engine served each turn of two conversations; no adapter step (SMG routes by the served
   model name only). Real control plane only (the emulator gives pods no ServiceAccount token);
6. with DOWNLOAD=1, serves a second model from a local Hugging Face Hub stand-in (`sglang-operator dev hub`,
   throttled) and shows its download in `kubectl get sgm` (Progress: `Downloading 43% (...)`) until Ready;
7. prints how to continue with kubectl and curl, then stops the cluster (KEEP=1 keeps it running).
Ctrl-C at any point stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from sglang_dev import sglang_sim
from sglang_dev.cluster.layout import Layout
from sglang_dev.cluster.tools import Kubectl, service_url

ROOT = Path(__file__).resolve().parents[1]
STATE = Layout.at(os.environ.get("STATE_DIR", ROOT / ".state" / "dev"))
# The default is the transformers backend: the tiny model's real forward pass inside the engine, fast to
# start and light. BACKEND=sglang: the engine launches SGLang (here its real frontend, simulated scheduler).
EXAMPLES = {"transformers": ROOT / "examples" / "tiny.yaml", "sglang": ROOT / "examples" / "tiny-sglang.yaml"}
BACKEND = os.environ.get("BACKEND") or "transformers"
ROUTER = os.environ.get("ROUTER") == "1"
ROUTED_EXAMPLE = ROOT / "examples" / "tiny-routed.yaml"
EXAMPLE = ROUTED_EXAMPLE if ROUTER else EXAMPLES.get(BACKEND, EXAMPLES["transformers"])
MODEL = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
NEW_ADAPTER = {"name": "tiny-chat", "source": "builtin:tiny-lora-7"}
READY_TIMEOUT_S = 600
EMULATOR = os.environ.get("EMULATOR") == "1"
DOWNLOAD = os.environ.get("DOWNLOAD") == "1"
HUB_MODEL = "tiny-hub"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def note(text: str) -> None:
    print(f"    {text}", flush=True)


def dev(*args: str) -> int:
    cmd = [sys.executable, "-m", "sglang_operator.cli", "dev", *args, "--state-dir", str(STATE.root)]
    return subprocess.call(cmd, cwd=ROOT)


def progress_line(kubectl: Kubectl) -> str:
    sgm = kubectl.run("get", "sgm", MODEL, "-o", "json", check=False)
    pods = kubectl.run("get", "pods", "-l", f"app.kubernetes.io/instance={MODEL}", "-o", "json", check=False)
    parts = []
    if sgm.returncode == 0:
        status = json.loads(sgm.stdout).get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        parts.append(f"sgm/{MODEL} phase={status.get('phase', '-')} Ready={ready.get('status', '-')}"
                     + (f" ({ready.get('reason')}: {ready.get('message')})" if ready.get("message") else ""))
    if pods.returncode == 0:
        for pod in json.loads(pods.stdout).get("items") or []:
            st = pod.get("status") or {}
            cs = (st.get("containerStatuses") or [{}])[0]
            state = next(iter(cs.get("state") or {"waiting": {}}), "waiting")
            parts.append(f"pod {pod['metadata']['name']} {st.get('phase', 'Pending')} "
                         f"ip={st.get('podIP', '-')} container={state} ready={cs.get('ready', False)}")
    return " | ".join(parts) or "waiting for the operator to create the children"


def wait_condition(kubectl: Kubectl, condition: str) -> None:
    """`kubectl wait --for=condition=X sgm/tiny`, printing what is happening whenever it changes."""
    argv = kubectl.argv("wait", f"--for=condition={condition}", f"sgm/{MODEL}",
                        f"--timeout={READY_TIMEOUT_S}s")
    note("$ " + " ".join(["kubectl", *argv[3:]]))
    started = time.monotonic()
    last = ""
    with subprocess.Popen(argv, env=kubectl.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as waiter:
        try:
            while waiter.poll() is None:
                line = progress_line(kubectl)
                if line != last:
                    note(f"[{time.monotonic() - started:5.1f}s] {line}")
                    last = line
                time.sleep(2)
        finally:
            if waiter.poll() is None:  # interrupted: no kubectl left behind
                waiter.kill()
        output = (waiter.stdout.read() if waiter.stdout else "").strip()
    if waiter.returncode != 0:
        raise SystemExit(f"demo: {condition} not reached: {output}\n"
                         f"see: sglang-operator dev logs operator --state-dir {STATE.root}")
    note(f"{output} after {time.monotonic() - started:.1f}s")


def stream_chat(base: str, model: str, prompt: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=2, timeout=120)
    note(f"POST {base}/v1/chat/completions  model={model}  stream=true")
    print(f"\n    > {prompt}\n    ", end="", flush=True)
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=48, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content.replace("\n", "\n    "), end="", flush=True)
    print("\n    (builtin:tiny has random weights: the text is noise; the streaming path is real)")


def models(base: str) -> list[str]:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as resp:
        return [m["id"] for m in json.load(resp)["data"]]


def pod_uids(kubectl: Kubectl) -> dict[str, str]:
    pods = kubectl.json("get", "pods", "-l", f"app.kubernetes.io/instance={MODEL}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


def add_adapter(kubectl: Kubectl, base: str) -> None:
    before = pod_uids(kubectl)
    current = kubectl.json("get", "sgm", MODEL)["spec"].get("loraAdapters") or []
    patch = json.dumps({"spec": {"loraAdapters": [*current, NEW_ADAPTER]}})
    note(f"$ kubectl patch sgm {MODEL} --type=merge -p '{patch}'")
    kubectl.run("patch", "sgm", MODEL, "--type=merge", "-p", patch)
    started = time.monotonic()
    while NEW_ADAPTER["name"] not in (seen := models(base)):
        if time.monotonic() - started > 120:
            raise SystemExit(f"demo: adapter {NEW_ADAPTER['name']} not served after 120s; models: {seen}")
        note(f"[{time.monotonic() - started:5.1f}s] /v1/models: {seen} "
             "(the engine picks the ConfigMap change up)")
        time.sleep(2)
    note(f"/v1/models now: {seen}")
    wait_condition(kubectl, "AdaptersReady")
    after = pod_uids(kubectl)
    note(f"pods before: {before}\n    pods after:  {after}")
    if after != before:
        raise SystemExit("demo: adding an adapter restarted the pods; it must not (see the operator's log)")
    note("-> the same pod kept running (no restart)")


def download_from_the_hub(kubectl: Kubectl) -> None:
    """A model whose engine downloads it through HF_ENDPOINT from the Hub stand-in, watched in kubectl."""
    from sglang_dev.hub_standin import TINY_REPO, HubStandIn, serving_in_thread, tiny_repos

    cache = Path(os.environ.get("SGLANG_ENGINE_CACHE", Path.home() / ".cache" / "sglang-engine"))
    hub = HubStandIn(tiny_repos(cache, lora_seeds=(), pad_mb=48), rate=4 * 1024 * 1024)
    with serving_in_thread(hub) as endpoint:
        note(f"Hub stand-in at {endpoint}: {TINY_REPO} (0.6 MB of model + 48 MB of filler, served at 4 MB/s)")
        manifest = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
                    "metadata": {"name": HUB_MODEL, "namespace": "default"},
                    "spec": {"model": TINY_REPO, "backend": "transformers", "replicas": 1,
                             "env": [{"name": "HF_ENDPOINT", "value": endpoint}]}}
        kubectl.run("apply", "-f", "-", input=json.dumps(manifest))
        note(f"$ kubectl get sgm {HUB_MODEL} -w   (the Progress column follows the slowest replica)")
        started, last = time.monotonic(), ""
        while time.monotonic() - started < READY_TIMEOUT_S:
            table = kubectl.run("get", "sgm", HUB_MODEL, "--no-headers", check=False).stdout.strip()
            if table.rsplit(None, 1)[0] != last:  # a new line when more than the AGE column changed
                note(f"[{time.monotonic() - started:5.1f}s] {table}")
                last = table.rsplit(None, 1)[0]
            status = kubectl.json("get", "sgm", HUB_MODEL).get("status") or {}
            if status.get("phase") == "Ready":
                break
            time.sleep(1)
        else:
            raise SystemExit(f"demo: sgm/{HUB_MODEL} not Ready after {READY_TIMEOUT_S}s")
        kubectl.run("delete", "sgm", HUB_MODEL, "--wait=false")


def router_status(kubectl: Kubectl) -> dict:
    return (kubectl.json("get", "sgm", MODEL).get("status") or {}).get("router") or {}


def wait_for_router(kubectl: Kubectl, base: str) -> None:
    """Until SMG routes to every replica (it registers each engine once its pod is Ready); its workers."""
    replicas = yaml.safe_load(EXAMPLE.read_text())["spec"]["replicas"]
    started = time.monotonic()
    last = None
    while (router := router_status(kubectl)).get("engines") != replicas:
        if time.monotonic() - started > 120:
            raise SystemExit(f"demo: the router routes to {router.get('engines')} of {replicas} engines "
                             f"after 120s: {router}; see its log: kubectl logs deploy/{MODEL}-router")
        if router != last:
            note(f"[{time.monotonic() - started:5.1f}s] status.router: {router}")
            last = router
        time.sleep(1)
    note(f"$ kubectl get sgm {MODEL} -o jsonpath='{{.status.router}}'\n    {json.dumps(router)}")
    with urllib.request.urlopen(f"{base}/workers", timeout=5) as resp:
        workers = json.load(resp).get("workers") or []
    note(f"GET {base}/workers (SMG's own registry, filled by its Kubernetes discovery):")
    for worker in workers:
        note(f"  {worker.get('url')}  healthy={worker.get('is_healthy')}  model={worker.get('model_id')}")


def engine_counts(kubectl: Kubectl) -> dict[str, float]:
    """Chat completions each engine pod has served (its /metrics on the probe port, at its local address)."""
    from sglang_dev.cluster import podnet
    from sglang_dev.cluster.layout import ClusterInfo

    prefix = ClusterInfo.load(STATE.cluster_file).prefix
    pods = kubectl.json("get", "pods", "-l", f"app.kubernetes.io/name=sglang-engine,"
                        f"app.kubernetes.io/instance={MODEL}")["items"]
    counts = {}
    for pod in pods:
        local = podnet.local_ip(pod["status"].get("podIP") or "", prefix)
        with urllib.request.urlopen(f"http://{local}:8001/metrics", timeout=5) as resp:
            text = resp.read().decode()
        counts[pod["metadata"]["name"]] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                              if line.startswith("sglang_engine_requests_total{"))
    return counts


def routed_turns(kubectl: Kubectl, base: str) -> None:
    """Two conversations, three turns each, through the router: which engine served each turn."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=2, timeout=120)
    opening = {"A": "You are a travel guide for Lisbon. " * 12, "B": "You are a patient chess coach. " * 12}
    chats: dict[str, list] = {k: [{"role": "system", "content": v}] for k, v in opening.items()}
    for turn in range(1, 4):
        for name, messages in chats.items():
            messages.append({"role": "user", "content": f"Question {turn}?"})
            before = engine_counts(kubectl)
            reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            after = engine_counts(kubectl)
            served = [pod for pod in after if after[pod] > before.get(pod, 0)]
            note(f"conversation {name}, turn {turn}: served by {', '.join(served) or '?'}")
    note("(SMG's cache_aware pick per turn: a conversation's later turns go where its prefix is cached, "
         "unless that engine is much busier; docs/benchmarks.md measures what that saves under load)")


def how_to_continue(base: str, kubectl: Kubectl) -> None:
    step("Try it yourself")
    real = "" if EMULATOR else f"""
    $KUBECTL logs -l app.kubernetes.io/instance={MODEL} -f   # an engine's log as it comes
    $KUBECTL port-forward svc/{MODEL} 8080:8000   # then: curl localhost:8080/v1/models"""
    print(f"""    export KUBECONFIG={STATE.kubeconfig}
    KUBECTL={kubectl.binary}   # the kubectl of this cluster's Kubernetes release
    $KUBECTL get sgm,deploy,pods,svc
    $KUBECTL scale sgm/{MODEL} --replicas={3 if ROUTER else 2}{router_hint(base)}
    curl -N {base}/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{{"model": "{MODEL}", "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}'{real}
    .venv/bin/sglang-operator dev status          # processes, models, pods, service addresses
    .venv/bin/sglang-operator dev logs <pod>      # an engine's log (also: operator, emulator)
    .venv/bin/sglang-operator dev down            # stop everything""")


def router_hint(base: str) -> str:
    if not ROUTER:
        return ""
    return f"""
    $KUBECTL get sgm {MODEL} -o jsonpath='{{.status.router}}'   # ready routers, engines SMG routes to
    curl {base}/workers                               # SMG's registry: the engines it discovered
    $KUBECTL logs deploy/{MODEL}-router               # SMG's log (discovery, registrations)"""


def main() -> int:
    # Ctrl-C and SIGTERM both clean up (SIGINT explicitly: a background job may have inherited it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    keep = os.environ.get("KEEP") == "1"
    started_here = False
    if BACKEND not in EXAMPLES:
        print(f"demo: BACKEND={BACKEND!r}: expected one of {sorted(EXAMPLES)}", file=sys.stderr)
        return 2
    if ROUTER and (EMULATOR or BACKEND != "transformers"):
        print("demo: ROUTER=1 runs examples/tiny-routed.yaml on the real control plane (the API emulator "
              "gives pods no ServiceAccount token for SMG's discovery); drop EMULATOR and BACKEND (SGLang "
              "backend behind the router: bench/router_cache.py)", file=sys.stderr)
        return 2
    if BACKEND == "sglang" and not sglang_sim.engine_env():
        print(f"demo: BACKEND=sglang needs SGLang's side venv ({sglang_sim.SIDE_VENV_PYTHON}): run "
              "`make sglang-sim` (or `make demo BACKEND=sglang`, which builds it)", file=sys.stderr)
        return 2
    try:
        if EMULATOR:
            step("Starting the local cluster (API emulator, operator, controller, kubelet, service proxy)")
        else:
            step("Starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, "
                 "node agent, service proxy, operator)")
        started_here = not (STATE.root / "ready").exists()
        if dev("up", "--detach", *(["--emulator"] if EMULATOR else [])) != 0:
            raise SystemExit("demo: the local cluster did not start (see the lines above). The real control "
                             "plane needs `make cluster-bins`; EMULATOR=1 runs the demo on the API emulator")
        kubectl = Kubectl.for_cluster(STATE)
        step(f"Applying {EXAMPLE.relative_to(ROOT)}")
        note(f"$ kubectl apply -f {EXAMPLE.relative_to(ROOT)}")
        note(kubectl.run("apply", "-f", str(EXAMPLE)).stdout.strip())
        step(f"Waiting until sgm/{MODEL} is Ready (first run builds builtin:tiny: allow a minute)")
        if BACKEND == "sglang":
            note("backend sglang: the engine launches SGLang 0.5.23's real HTTP frontend with a SIMULATED "
                 "scheduler (no GPU here; sglang_dev.sglang_sim); its import takes ~20 s on 2 cores")
        wait_condition(kubectl, "Ready")
        base = service_url(STATE, "default", MODEL)
        if ROUTER:
            step(f"Waiting until the router (SMG) routes to both engines; the Service at {base} is SMG's")
            wait_for_router(kubectl, base)
        step(f"Streaming a chat completion through the Service at {base}")
        stream_chat(base, MODEL, "Say hello to a newcomer.")
        if ROUTER:
            step("Two conversations through the router: which engine serves each turn")
            routed_turns(kubectl, base)
        else:
            step(f"Adding LoRA adapter {NEW_ADAPTER['name']} ({NEW_ADAPTER['source']}) to sgm/{MODEL}")
            add_adapter(kubectl, base)
            stream_chat(base, NEW_ADAPTER["name"], "Same question, through the adapter.")
        if DOWNLOAD:
            step(f"A model from a (local) Hugging Face Hub: sgm/{HUB_MODEL} downloads before it serves")
            download_from_the_hub(kubectl)
        how_to_continue(base, kubectl)
        if keep:
            print("\nKEEP=1: the cluster keeps running; stop it with `.venv/bin/sglang-operator dev down`")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        keep = False
        return 130
    finally:
        if started_here and not keep:
            step("Stopping the local cluster (KEEP=1 keeps it running)")
            dev("down")


if __name__ == "__main__":
    sys.exit(main())

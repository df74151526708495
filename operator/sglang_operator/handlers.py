"""kopf handlers: a thin layer that routes every trigger to one reconcile per SGLangModel.

Triggers: create/update/resume of the CR; any change to a child we own (a deleted or hand-edited child is
restored at once; Deployment status changes as pods become ready, so status follows readiness); any change to
one of its pods (a crash, an image pull error, a scheduling failure shows in pod status first); and a
periodic resync for what no watch reports (resync_plan): engine and router state (every NOT_SETTLED_POLL
seconds while engines load their model or adapters, or the router has not registered every ready engine;
once settled, the engines' /status is read again every settings.resync_seconds and the model reconciled only
if a reply changed), routed and multi-node models (the router's engines; the LeaderWorkerSet API may be
missing, or unwatched: a full reconcile every settings.resync_seconds), a failed reconcile (retried then),
and a full reconcile of every model every SAFETY_RESYNC seconds (a safety net, as controller-runtime's). A
model whose inputs are all watched costs no API request at rest. Reconciles of one model are serialized and
coalesced.

No kopf timer or daemon and no finalizer: kopf adds a finalizer for timers/daemons, which would block CR
deletion while the operator is down. Children go by ownerReference garbage collection, so nothing needs to
run at deletion. Status is written by reconcile from observation, never from a handler's return value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp
import kopf

from sglang_operator import labels, names
from sglang_operator.apply import OwnershipError
from sglang_operator.builders.common import API_GROUP, KIND, PLURAL
from sglang_operator.engine_client import fetch_statuses
from sglang_operator.kube import ApiError, KubeApi
from sglang_operator.observed import EngineStatus, PodView
from sglang_operator.reconcile import Context, Result, reconcile
from sglang_operator.settings import OperatorSettings

CR = (API_GROUP, "v1alpha1", PLURAL)
# The LeaderWorkerSet watch only exists where its CRD does: kopf (cluster scanning off) serves resources
# found at start and logs the rest as unresolved; without it, pod events and the resync still drive
# multi-node models.
CHILDREN = (("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"),
            ("policy", "v1", "poddisruptionbudgets"), ("networking.k8s.io", "v1", "networkpolicies"),
            ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"))
NOT_SETTLED_POLL = 5.0
SAFETY_RESYNC = 10 * 3600.0  # a full reconcile of every model (controller-runtime's default SyncPeriod)
RESYNC_CONCURRENCY = 8
# Reconciles running at once (the rest wait before their first request): a restart or a burst of creations
# starts one per model, and beyond the API client's 20 connections more only hold memory while they queue.
RECONCILE_CONCURRENCY = 32
# What the resync does for a model (resync_plan): a full reconcile every NOT_SETTLED_POLL s (engines loading);
# read its engines' /status every resync_seconds and reconcile if a reply changed; a full reconcile every
# resync_seconds (state no watch reports, or the last run failed); nothing until SAFETY_RESYNC (all watched).
Plan = Literal["poll", "engines", "full", "watched"]
logger = logging.getLogger("sglang_operator.handlers")

Login = Callable[..., kopf.ConnectionInfo | None]


def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@dataclass(frozen=True)
class Seen:
    """A model as its last reconcile left it: when (loop time), what the resync does next, the engines asked
    and their replies (to compare with), and when the engines were last asked without a reconcile."""

    at: float
    plan: Plan = "poll"
    asked: tuple[PodView, ...] = ()
    engines: dict[str, EngineStatus | str] = field(default_factory=dict)
    checked: float = 0.0

    def due(self, now: float, resync_seconds: float) -> bool:
        if now - self.at >= SAFETY_RESYNC:
            return True
        if self.plan == "watched":
            return False
        every = min(NOT_SETTLED_POLL, resync_seconds) if self.plan == "poll" else resync_seconds
        return now - max(self.at, self.checked) >= every

    def full(self, now: float) -> bool:
        """Due for a reconcile, not only a look at the engines."""
        return self.plan != "engines" or now - self.at >= SAFETY_RESYNC


def resync_plan(result: Result) -> Plan:
    """Poll while engines that answer are loading (their model, or adapters on serving pods); pods without an
    IP have no engine to ask, and their scheduling and start arrive by the pod watch."""
    if result.asked and not _settled(result.status):
        return "poll"
    if result.unwatched:
        return "full"
    return "engines" if result.asked else "watched"


@dataclass
class State:
    """Operator-wide state. kopf shallow-copies the memo per object, so it holds this one shared object."""

    settings: OperatorSettings
    engine_port: int = names.PROBE_PORT
    connection: kopf.ConnectionInfo | None = None
    ctx: Context | None = None
    ctx_login: kopf.ConnectionInfo | None = None  # the login state.ctx.api was made from
    closing: set[asyncio.Task] = field(default_factory=set)  # old clients being closed
    known: dict[tuple[str, str], Seen] = field(default_factory=dict)
    # A model whose reconcile is waiting for its lock -> that waiter's token (see _run_quietly).
    queued: dict[tuple[str, str], object] = field(default_factory=dict)
    running: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_CONCURRENCY))
    resync: asyncio.Task | None = None

    def model_of(self, namespace: str, instance: str | None) -> str | None:
        """The model whose pods carry this app.kubernetes.io/instance label (pods are owned by ReplicaSets,
        not by the model; the label is the model's name, cut and hashed when long, so it is matched)."""
        if not instance:
            return None
        return next((name for ns, name in self.known if ns == namespace and names.instance(name) == instance),
                    None)


def make_memo(settings: OperatorSettings, engine_port: int = names.PROBE_PORT) -> kopf.Memo:
    return kopf.Memo(state=State(settings, engine_port))


def _context(state: State) -> Context:
    """The shared Context; its API client follows kopf's latest login (e.g. a rotated token)."""
    assert state.connection is not None, "no login yet"
    if state.ctx is None:
        # The engine-status session honours HTTP_PROXY/NO_PROXY like any Go client: a pod network reached
        # through a proxy (the local cluster's pod gateway) works; without those variables, nothing changes.
        state.ctx = Context(api=KubeApi.connect(state.connection), http=aiohttp.ClientSession(trust_env=True),
                            settings=state.settings, engine_port=state.engine_port)
        state.ctx_login = state.connection
    elif state.ctx_login is not state.connection:
        old, state.ctx.api = state.ctx.api, KubeApi.connect(state.connection)
        state.ctx_login = state.connection
        state.closing.add(asyncio.get_running_loop().create_task(old.close()))
    return state.ctx


def _settled(status: dict[str, Any]) -> bool:
    """False while serving pods have adapters still loading, pods of a rollout load their model (its
    download's progress), or the router routes to fewer engines than are ready (SMG registers a Ready pod a
    moment after it is Ready): engine and router state have no watch, so they are polled. Everything else that
    status depends on (Deployment status, i.e. pod readiness) arrives by watch."""
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    adapters = next((c for c in conditions if c.get("type") == "AdaptersReady"), {})
    ready = status.get("readyReplicas") or 0
    starting = ready < (status.get("replicas") or 0)
    loading = bool(status.get("loading")) or (status.get("phase") == "Progressing" and starting)
    router = status.get("router")
    registering = router is not None and (router.get("engines") or 0) < ready
    return not (ready and adapters.get("status") != "True") and not loading and not registering


async def _run(state: State, key: tuple[str, str], permanent: bool) -> None:
    """Reconcile one model under its lock. The CR is read inside the lock, so the status it starts from
    includes what the previous reconcile wrote (a stale one would rewrite status and reset timestamps)."""
    ctx = _context(state)
    namespace, name = key
    async with ctx.lock(namespace, name), state.running:
        state.queued.pop(key, None)  # from here on, a new trigger must queue another run
        body = await ctx.api.get(KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            state.known.pop(key, None)
            return

        async def emit(type_: str, reason: str, message: str) -> None:
            try:
                await ctx.api.post_event(body, type_, reason, message)
            except (ApiError, aiohttp.ClientError) as exc:  # an event is never worth failing a reconcile
                logger.warning("event %s for %s/%s not posted: %s", reason, namespace, name, exc)

        loop = asyncio.get_running_loop()
        try:
            result = await reconcile(ctx, body, emit)
        except Exception as exc:
            state.known[key] = Seen(loop.time(), "full")  # no watch event may come: the resync retries
            if isinstance(exc, ApiError):
                raise kopf.TemporaryError(f"API: {exc}", delay=1 if exc.status == 409 else 5) from exc
            if isinstance(exc, OwnershipError):
                raise kopf.TemporaryError(str(exc), delay=30) from exc
            raise
        state.known[key] = Seen(loop.time(), resync_plan(result), result.asked, result.engines)
        if result.spec_error is not None and permanent:
            raise kopf.PermanentError(str(result.spec_error))


async def _run_quietly(state: State, key: tuple[str, str]) -> None:
    """For child events and resync: errors are logged, the next trigger retries."""
    if key in state.queued:  # a reconcile that has not started yet will see this change too
        return
    token = state.queued[key] = object()
    try:
        await _run(state, key, permanent=False)
    except (kopf.TemporaryError, kopf.PermanentError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("reconcile %s/%s: %s", key[0], key[1], exc)
    finally:
        # Only if this run never reached the lock (cancelled, failed early): once it did, the entry (if any)
        # is the next waiter's, and removing it would let a burst queue several runs instead of one.
        if state.queued.get(key) is token:
            del state.queued[key]


async def _resync_loop(state: State) -> None:
    settings = state.settings
    gate = asyncio.Semaphore(RESYNC_CONCURRENCY)
    loop = asyncio.get_running_loop()

    async def one(key: tuple[str, str], seen: Seen) -> None:
        async with gate:
            try:
                if seen.full(loop.time()) or await _engines_changed(state, key, seen):
                    await _run_quietly(state, key)
            except Exception:  # one model's bug must not stop the resync of all the others
                logger.exception("resync of %s/%s failed", *key)

    while True:
        await asyncio.sleep(min(NOT_SETTLED_POLL, settings.resync_seconds))
        if state.connection is None:
            continue
        now = loop.time()
        due = [(key, seen) for key, seen in list(state.known.items())
               if seen.due(now, settings.resync_seconds)]
        await asyncio.gather(*(one(key, seen) for key, seen in due))


async def _engines_changed(state: State, key: tuple[str, str], seen: Seen) -> bool:
    """Ask a settled model's engines again (no API request): True if a reply differs from the last run's."""
    ctx = _context(state)
    replies = await fetch_statuses(ctx.http, list(seen.asked), state.settings.engine_status_timeout,
                                   state.engine_port)
    if replies != seen.engines:
        return True
    if state.known.get(key) is seen:  # no reconcile replaced it meanwhile
        state.known[key] = replace(seen, checked=asyncio.get_running_loop().time())
    return False


def _owner_name(body: Any) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(API_GROUP + "/") and ref.get(
                "controller"):
            return ref.get("name")
    return None


def build_registry(login: Login | None = None) -> kopf.OperatorRegistry:
    """Every handler on a fresh registry (tests pass their own login)."""
    registry = kopf.OperatorRegistry()
    login_fn = login or default_login

    @kopf.on.login(registry=registry)
    def _login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login_fn(memo=memo, **kwargs)
        memo.state.connection = info
        return info

    @kopf.on.startup(registry=registry)
    async def _start(memo: kopf.Memo, **_: Any) -> None:
        memo.state.resync = asyncio.create_task(_resync_loop(memo.state), name="sglang-operator resync")

    @kopf.on.cleanup(registry=registry)
    async def _stop(memo: kopf.Memo, **_: Any) -> None:
        state: State = memo.state
        if state.resync is not None:
            state.resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.resync
        if state.ctx is not None:
            await state.ctx.api.close()
            await state.ctx.http.close()

    @kopf.on.resume(*CR, registry=registry)
    @kopf.on.create(*CR, registry=registry)
    @kopf.on.update(*CR, registry=registry)
    async def _changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        meta = body.get("metadata") or {}
        await _run(memo.state, (meta.get("namespace") or "default", meta["name"]), permanent=True)

    @kopf.on.event(*CR, registry=registry)
    async def _track(event: Any, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name"))
        if event.get("type") == "DELETED":
            memo.state.known.pop(key, None)
        else:
            # Due one poll interval from now if no handler reconciles it first (a burst of creations must not
            # be reconciled twice, by the create handler and by the resync).
            memo.state.known.setdefault(key, Seen(asyncio.get_running_loop().time()))

    # Children by their controller ownerReference, not by the managed-by label: kopf filters labels
    # client-side anyway, and a child whose label was edited away must still reach its model (the resync
    # of a settled model reads no child).
    for group, version, plural in CHILDREN:
        @kopf.on.event(group, version, plural, registry=registry)
        async def _child(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
            owner = _owner_name(body)
            if owner and memo.state.connection is not None:
                namespace = (body.get("metadata") or {}).get("namespace") or "default"
                await _run_quietly(memo.state, (namespace, owner))

    # kopf filters labels client-side: every pod event of the watched namespaces reaches it, and only the
    # operator's engine pods (managed-by label) reach this handler.
    @kopf.on.event("", "v1", "pods", labels=labels.MANAGED_SELECTOR, registry=registry)
    async def _pod(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        model = memo.state.model_of(namespace, (meta.get("labels") or {}).get(labels.INSTANCE))
        if model and memo.state.connection is not None:
            await _run_quietly(memo.state, (namespace, model))

    return registry

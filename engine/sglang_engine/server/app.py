"""The aiohttp application: routes and middlewares. Handlers parse, call the engine, and write."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sglang_engine.adapters import AdapterController, admin_source_problem
from sglang_engine.backends.base import BackendError, GenerationChunk
from sglang_engine.contract import AdapterSpec
from sglang_engine.core import Engine, PreparedChat
from sglang_engine.delegation import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    DELEGATED_PATHS,
    StreamRelay,
    UpstreamCall,
    complete_body,
    error_from_upstream,
)
from sglang_engine.errors import invalid_request
from sglang_engine.protocol import LoadProgress
from sglang_engine.server.metrics import EngineMetrics
from sglang_engine.server.openai_types import (
    ChatCompletionRequest,
    backend_error_body,
    error_body,
    error_type_for,
    parse_chat_request,
)
from sglang_engine.server.openapi import build_openapi
from sglang_engine.server.relay import DONE, ChunkEncoder, usage_of
from sglang_engine.server.worker_api import GUARDED_PATHS, add_worker_routes
from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_ADAPTERS_PATH = "/admin/adapters"
# POST routes whose body is JSON. Anything else is a 415: a web page may post `text/plain` or a form to any
# address without a CORS preflight, and without an API key that would generate on the page's behalf.
JSON_BODY_PATHS = frozenset({*DELEGATED_PATHS, ADMIN_ADAPTERS_PATH})
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_AFTER_S = "1"
# Request-line, header and header-count limits (aiohttp's parser answers 400 beyond them, before any
# handler runs); the body limit is settings.max_body_bytes. Passed to AppRunner/TestServer.
SERVER_LIMITS: dict[str, Any] = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 100}
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"


@dataclass
class ServerState:
    """Mutable per-process serving state (the limits and the drain switch)."""

    draining: bool = False
    in_flight: int = 0


def json_error(status: int, message: str, *, param: str | None = None, code: str | None = None,
               type: str | None = None) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_S} if status in (429, 503) else None
    return web.json_response(error_body(message, type or error_type_for(status), param, code),
                             status=status, headers=headers)


def backend_error_response(exc: BackendError) -> web.Response:
    return json_error(exc.status, exc.message, param=exc.param, code=exc.code, type=exc.type)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


SIMULATED_SCHEDULER_WARNING = ("SGLang's scheduler is SIMULATED (a development SGLang, "
                               "sglang_dev.sglang_sim): its tokens do not come from SGLang's GPU scheduler")


def security_warnings(settings: EngineSettings) -> list[str]:
    """What an operator of this engine must know is open (logged at start, repeated on /status)."""
    if settings.api_key:
        return []
    return [f"no API key: /v1/* answers anyone who can reach port {settings.port} "
            "(set the model's apiKeySecret)"]


class Api:
    def __init__(self, engine: Engine, adapters: AdapterController, metrics: EngineMetrics,
                 state: ServerState) -> None:
        self.engine = engine
        self.adapters = adapters
        self.metrics = metrics
        self.state = state
        self.settings = engine.settings
        self._openapi = build_openapi()
        metrics.track_loading(self.load_progress)

    # ---------------------------------------------------------------- middlewares
    def cors_headers(self, request: web.Request) -> dict[str, str]:
        """Empty unless the request's Origin is allowed (--cors-allow-origin; none by default)."""
        allowed = self.settings.cors_allow_origins
        origin = request.headers.get("Origin")
        if not allowed or origin is None or not ("*" in allowed or origin in allowed):
            return {}
        return {"Access-Control-Allow-Origin": "*" if "*" in allowed else origin, "Vary": "Origin"}

    @web.middleware
    async def cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A preflight from an allowed origin is answered here, before auth (browsers send no credentials
        on a preflight); other answers get the allow-origin header (streams set it themselves)."""
        headers = self.cors_headers(request)
        if not headers:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={
                **headers, "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS, "Access-Control-Max-Age": "600"})
        response = await handler(request)
        if not response.prepared:
            response.headers.update(headers)
        return response

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure becomes an OpenAI-shaped error; nothing leaks a traceback."""
        try:
            return await handler(request)
        except BackendError as exc:
            return backend_error_response(exc)
        except web.HTTPException as exc:  # 404/405 from routing, 413 from the body limit
            if exc.status < 400:
                raise
            return json_error(exc.status, exc.reason)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return json_error(500, "Internal server error.")

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Host allowlist, auth, body limit and type, drain and concurrency limit for the API routes."""
        path = request.path
        api_route = path.startswith(("/admin/", "/v1/")) or path in GUARDED_PATHS
        allowed_hosts = self.settings.allowed_hosts
        if api_route and allowed_hosts and request.url.host not in allowed_hosts:
            # DNS rebinding: a page served from attacker.example resolving to this address sends its own Host.
            return json_error(421, f"Host {request.host!r} is not served here (--allowed-host).")
        if path.startswith("/admin/"):
            if not self.settings.admin_token:
                return json_error(403, "admin API disabled (no admin token configured).")
            token = _bearer(request)
            if token is None:
                return json_error(401, "Missing bearer token.")
            if not _matches(token, self.settings.admin_token):
                return json_error(403, "Invalid admin token.")
        elif api_route and self.settings.api_key and not _matches(
                _bearer(request), self.settings.api_key):
            return json_error(401, "Invalid or missing API key.", code="invalid_api_key")
        if request.method == "POST" and path in JSON_BODY_PATHS:
            if (request.content_length or 0) > self.settings.max_body_bytes:
                return json_error(413, f"Request body over {self.settings.max_body_bytes} bytes.")
            if request.content_type != "application/json":
                return json_error(415, f"Content-Type must be application/json, not {request.content_type}.")
        if path not in DELEGATED_PATHS:
            return await handler(request)
        if self.state.draining:
            return json_error(503, "The engine is shutting down.")
        # The body is read before a slot is taken, within a bound: a client sending its body slowly (or
        # never) must not hold one of the max_concurrent_requests slots.
        limit = self.settings.body_timeout_s
        try:
            async with asyncio.timeout(limit):  # no task per request, unlike wait_for
                await request.read()
        except TimeoutError:
            return json_error(408, f"The request body did not arrive within {limit:g} s (--body-timeout).")
        if self.state.in_flight >= self.settings.max_concurrent_requests:
            return json_error(429, "Too many concurrent requests.")
        self.state.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.state.in_flight -= 1

    # ---------------------------------------------------------------- chat
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.engine.delegates_openai:
            return await self.delegate(request)
        return await self.own_chat_completions(request)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        if self.engine.delegates_openai:
            return await self.delegate(request)
        raise invalid_request(f"{COMPLETIONS_PATH} is not served by the {self.settings.backend} backend "
                              f"(use {CHAT_PATH}, or backend: sglang).", None)

    # ---------------------------------------------------------------- delegated to SGLang's OpenAI server
    async def delegate(self, request: web.Request) -> web.StreamResponse:
        """Model resolved and defaults filled by the engine, the rest SGLang's: its bytes are relayed."""
        arrived = time.monotonic()
        labels = {"model": self.settings.model_name, "adapter": ""}
        status = 200
        try:
            call = self.engine.prepare_upstream(request.path, await _json_body(request))
            labels["adapter"] = call.adapter or ""
            self.metrics.in_flight.labels(**labels).inc()
            try:
                upstream = await self.engine.backend.post_openai(call.path, call.body)
                try:
                    if upstream.status != 200:
                        raise error_from_upstream(upstream.status, await upstream.read())
                    if call.stream:
                        return await self._relay_stream(request, call, upstream, arrived, labels)
                    raw, usage = complete_body(await upstream.read(), call.client_model)
                    self.metrics.time_to_first_token.labels(**labels).observe(time.monotonic() - arrived)
                    self._count_usage(labels, usage)
                    return web.Response(body=raw, content_type="application/json")
                finally:
                    upstream.close()  # a no-op once read to the end (the connection went back to the pool)
            finally:
                self.metrics.in_flight.labels(**labels).dec()
                self.metrics.e2e_latency.labels(**labels).observe(time.monotonic() - arrived)
        except BackendError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.requests.labels(**labels, code=str(status)).inc()

    async def _relay_stream(self, request: web.Request, call: UpstreamCall, upstream: aiohttp.ClientResponse,
                            arrived: float, labels: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={**SSE_HEADERS, **self.cors_headers(request)})
        await response.prepare(request)
        relay = StreamRelay(call.client_usage, call.rename)
        write, feed = response.write, relay.feed
        failure = None
        try:
            try:
                chunks = upstream.content.iter_any()
                first = await anext(chunks, b"")
                self.metrics.time_to_first_token.labels(**labels).observe(time.monotonic() - arrived)
                await write(feed(first))
                async for data in chunks:  # the hot path: whole events, as they arrive
                    await write(feed(data))
            except (aiohttp.ClientError, TimeoutError) as exc:  # SGLang died or cut the stream
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("SGLang's stream broke: %s", failure)
            tail = relay.finish(failure)
            if tail:
                await write(tail)
            await response.write_eof()
        except ConnectionResetError:
            self._client_left(call, relay)
            return response
        except asyncio.CancelledError:  # the client left while the handler awaited SGLang
            self._client_left(call, relay)
            raise
        self._count_usage(labels, relay.usage)
        return response

    def _client_left(self, call: UpstreamCall, relay: StreamRelay) -> None:
        """Stop SGLang's work now (closing the connection alone makes SGLang abort only 2 s later)."""
        if call.rid is not None and not relay.done:
            self.engine.backend.abort(call.rid)
        log.info("client left stream %s", call.rid)

    def _count_usage(self, labels: dict[str, str], usage: dict[str, Any] | None) -> None:
        if usage:
            self.metrics.prompt_tokens.labels(**labels).inc(usage.get("prompt_tokens") or 0)
            self.metrics.completion_tokens.labels(**labels).inc(usage.get("completion_tokens") or 0)

    # ---------------------------------------------------------------- the engine's own (transformers)
    async def own_chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        labels = {"model": self.settings.model_name, "adapter": ""}
        status = 200
        try:
            req = parse_chat_request(await _json_body(request))
            prepared = await self.engine.prepare(
                req.messages, req.sampling(), system=req.system, tools=req.tools, model=req.model)
            labels["adapter"] = prepared.adapter or ""
            self.metrics.in_flight.labels(**labels).inc()
            try:
                if req.stream:
                    return await self._stream(request, req, prepared, arrived, labels)
                return await self._complete(prepared, arrived, labels)
            finally:
                self.metrics.in_flight.labels(**labels).dec()
                self.metrics.e2e_latency.labels(**labels).observe(time.monotonic() - arrived)
        except BackendError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.requests.labels(**labels, code=str(status)).inc()

    def _count_tokens(self, labels: dict[str, str], last: GenerationChunk | None) -> None:
        if last is not None:
            self.metrics.prompt_tokens.labels(**labels).inc(last.prompt_tokens)
            self.metrics.completion_tokens.labels(**labels).inc(last.completion_tokens)

    async def _complete(self, prepared: PreparedChat, arrived: float, labels: dict[str, str]) -> web.Response:
        ttft = self.metrics.time_to_first_token.labels(**labels)
        text, last = await self.engine.collect(prepared, lambda: ttft.observe(time.monotonic() - arrived))
        self._count_tokens(labels, last)
        finish = last.finish_reason if last else None
        if finish == "abort":
            raise BackendError("The generation was aborted by the backend.", status=503)
        body = ChunkEncoder(prepared.model).completion(text, finish, usage_of(last, prepared.prompt_length))
        return web.json_response(body)

    async def _stream(self, request: web.Request, req: ChatCompletionRequest, prepared: PreparedChat,
                      arrived: float, labels: dict[str, str]) -> web.StreamResponse:
        encoder = ChunkEncoder(prepared.model)
        async with aclosing(self.engine.generate(prepared)) as stream:
            # The first chunk is awaited before the headers go out, so an error the backend raises before
            # generating (a 400 from SGLang, say) is still a real HTTP status.
            first = await anext(stream, None)
            self.metrics.time_to_first_token.labels(**labels).observe(time.monotonic() - arrived)
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                **self.cors_headers(request)})
            await response.prepare(request)
            try:
                last = await self._relay(response, encoder, first, stream)
                if req.include_usage:
                    await response.write(encoder.usage(usage_of(last, prepared.prompt_length)))
                await response.write(DONE)
                await response.write_eof()
            except ConnectionResetError:  # the client left; aclosing() closes the backend stream at once
                log.info("client left stream %s", prepared.request.request_id)
                return response
        self._count_tokens(labels, last)
        return response

    @staticmethod
    async def _relay(response: web.StreamResponse, encoder: ChunkEncoder, first: GenerationChunk | None,
                     stream: AsyncIterator[GenerationChunk]) -> GenerationChunk | None:
        """Write the role, the deltas and the finish chunk; after the headers, errors go in-band."""
        write = response.write
        last = first
        await write(encoder.role())
        try:
            if first is not None:
                if first.text:
                    await write(encoder.content(first.text))
                async for chunk in stream:  # the hot path: one dumps + one write per token
                    last = chunk
                    if chunk.text:
                        await write(encoder.content(chunk.text))
            finish = last.finish_reason if last else None
            if finish == "abort":
                raise BackendError("The generation was aborted by the backend.", status=503)
            await write(encoder.finish(finish))
        except ConnectionResetError:
            raise
        except BackendError as exc:
            log.warning("a stream failed after it began: %s", exc)
            await write(encoder.error(backend_error_body(exc)))
        except Exception:
            log.exception("a stream failed after it began")
            await write(encoder.error(error_body("Internal server error.", "server_error")))
        return last

    # ---------------------------------------------------------------- models and health
    def model_cards(self) -> list[dict[str, Any]]:
        """The base model and each loaded adapter, in OpenAI's shape plus `parent` and `max_model_len`."""
        created = int(self.engine.started_at)
        served = self.settings.model_name
        # `root` names what is served, never where it lies on disk: a repo id or builtin:tiny as given, a
        # path (an image folder, a mounted claim, a download cache) as the served name.
        model = self.settings.model
        common = {"object": "model", "created": created, "owned_by": "sglang-operator",
                  "max_model_len": self.engine.context_length}
        data = [{"id": served, **common, "root": served if model.startswith("/") else model, "parent": None}]
        data += [{"id": name, **common, "root": name, "parent": served}
                 for name in self.engine.backend.loaded_adapters()]
        return data

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": self.model_cards()})

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{id}: the served name, an adapter, or `<served>:<adapter>`; else 404."""
        asked = request.match_info["model"]
        adapter = self.engine.resolve_adapter(asked)  # 404 model_not_found for anything else
        card = next(c for c in self.model_cards() if c["id"] == (adapter or self.settings.model_name))
        return web.json_response({**card, "id": asked})

    async def livez(self, request: web.Request) -> web.Response:
        health = self.engine.backend.health()
        if not health.alive:
            return web.json_response({"status": "dead", "message": health.message}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        reason = "shutting down" if self.state.draining else self.engine.not_ready_reason()
        # Adapters hold readiness back only until the declared set is first applied (at start, and after a
        # backend restart), so a new pod never enters the Service half-configured. An adapter added later
        # loads while the pod keeps serving: failing readiness then would pull every replica out of the
        # Service at once. /status (and the CR's AdaptersReady) reports the load's progress instead.
        if reason is None and not self.adapters.initial_applied:
            loading = self.adapters.loading()
            reason = (f"adapters still loading: {', '.join(loading)}" if loading
                      else "applying the declared adapters")
        if reason:
            return web.json_response({"ready": False, "reason": reason}, status=503,
                                     headers={"Retry-After": RETRY_AFTER_S})
        return web.json_response({"ready": True})

    async def status(self, request: web.Request) -> web.Response:
        simulated = self.engine.backend.health().extra.get("sglang_scheduler") == "simulated"
        warnings = [*security_warnings(self.settings), *([SIMULATED_SCHEDULER_WARNING] if simulated else [])]
        return web.json_response({
            "model": self.settings.model, "servedModelName": self.settings.model_name,
            "backend": self.settings.backend,
            **({"nodeRank": self.settings.node_rank, "nodes": self.settings.nnodes}
               if self.settings.nnodes > 1 else {}),
            "ready": self.engine.ready and not self.state.draining,
            "configHash": self.adapters.config_hash,
            "configError": self.adapters.config_error,
            "adapters": self.adapters.public_statuses(),
            "apiKeyRequired": bool(self.settings.api_key),
            "warnings": warnings,
            "loading": self.load_progress().to_json(),
        })

    def load_progress(self) -> LoadProgress:
        return self.engine.load_progress(warmed_up=self.adapters.initial_applied)

    async def leader_only(self, request: web.Request) -> web.Response:
        s = self.settings
        return json_error(503, f"This pod is node rank {s.node_rank} of a {s.nnodes}-node group: the "
                          "group's leader (node rank 0) serves the API.", code="not_the_leader")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._openapi)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})

    # ---------------------------------------------------------------- admin
    async def list_adapters(self, request: web.Request) -> web.Response:
        return web.json_response({"adapters": [s.as_json() for s in self.adapters.statuses()]})

    async def load_adapter(self, request: web.Request) -> web.Response:
        try:
            spec = AdapterSpec.model_validate_json(await request.read())
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise invalid_request(f"Expected {{name, source, revision?}}: {exc}", "name") from None
        refused = admin_source_problem(spec.source, self.settings)
        if refused is not None:
            return json_error(403, refused, param="source", code="source_not_allowed")
        status = await self.adapters.load_manual(spec)
        if status.state != "loaded":  # kept on /status as failed until unloaded by hand
            return json_error(400, f"Adapter {spec.name} failed to load: {status.message}", param="source",
                              code="adapter_load_failed")
        return web.json_response({"adapter": status.as_json()})

    async def unload_adapter(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not await self.adapters.unload_manual(name):
            return json_error(404, f"No adapter named {name!r}.", param="name", code="model_not_found")
        return web.json_response({"unloaded": name})


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; absurd nesting
        raise invalid_request("The request body is not valid JSON.", None) from None


API = web.AppKey("api", Api)


def build_probe_app(api: Api) -> web.Application:
    """The probe port: /livez, /readyz and the read-only, token-free /status and /metrics (the same handlers
    as the API port's). The operator reads /status and Prometheus scrapes /metrics here, so a NetworkPolicy
    can open this port to them and the API port to API clients only."""
    app = web.Application(middlewares=[api.errors])
    app.router.add_get("/livez", api.livez)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/status", api.status)
    app.router.add_get("/metrics", api.metrics_page)
    return app


def build_app(engine: Engine, adapters: AdapterController, metrics: EngineMetrics | None = None,
              state: ServerState | None = None) -> web.Application:
    api = Api(engine, adapters, metrics or EngineMetrics(), state or ServerState())
    app = web.Application(middlewares=[api.cors, api.errors, api.guard],
                          client_max_size=engine.settings.max_body_bytes)
    app[API] = api
    app.router.add_get("/livez", api.livez)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/status", api.status)
    app.router.add_get("/metrics", api.metrics_page)
    app.router.add_get("/openapi.json", api.openapi)
    if engine.settings.worker_rank:
        # A multi-node worker runs SGLang's ranks only: the group's leader serves the API and the adapters.
        for prefix in ("/v1", "/admin"):
            app.router.add_route("*", prefix + "/{tail:.*}", api.leader_only)
        return app
    app.router.add_post(CHAT_PATH, api.chat_completions)
    app.router.add_post(COMPLETIONS_PATH, api.completions)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/v1/models/{model:.+}", api.model)
    app.router.add_get(ADMIN_ADAPTERS_PATH, api.list_adapters)
    app.router.add_post(ADMIN_ADAPTERS_PATH, api.load_adapter)
    app.router.add_delete("/admin/adapters/{name}", api.unload_adapter)
    add_worker_routes(app, api)  # what SGLang's gateway (SMG) calls on its workers
    return app

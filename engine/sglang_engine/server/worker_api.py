"""What SGLang's gateway (SMG, `smg` 1.13.0) calls on a worker, so an engine can sit behind it.

Measured (SMG_NOTES.md): registration probes `GET /health` (whatever --health-check-endpoint says), then
discovers the worker through `/v1/models`, `/server_info` (falling back to `/get_server_info`) and
`/model_info` (`/get_model_info`); while routing it polls `/v1/loads?include=...` and `/loads?model=<id>`;
requests are `POST /v1/chat/completions`, served by the engine's own handler (defaults, adapter naming, auth).

On the SGLang backend the info and load endpoints are SGLang's own answers, passed through (`/loads`, which
SGLang 0.5.23 lacks, is answered like `/v1/loads`); the in-process transformers backend answers them from
the engine's state in the same shapes. Everything but `/health` needs the API key when one is configured
(SMG sends its `--api-key` as a bearer token to its workers): server info names paths and settings.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING

from aiohttp import web

from sglang_engine.protocol import SERVER_INFO_PATH

if TYPE_CHECKING:
    from sglang_engine.server.app import Api

HEALTH_PATH = "/health"
MODEL_INFO_PATH = "/model_info"
LOADS_PATH = "/v1/loads"
# Outside /v1/ but guarded like it (API key, allowed hosts): the deprecated spellings SMG falls back to.
GUARDED_PATHS = frozenset({SERVER_INFO_PATH, "/get_server_info", MODEL_INFO_PATH, "/get_model_info",
                           "/loads"})


def _engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang-operator")
    except PackageNotFoundError:
        return "0"


class WorkerApi:
    """Thin handlers over the engine's Api (its engine, settings and serving state)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.settings = api.settings
        self.version = _engine_version()

    async def _upstream(self, request: web.Request, path: str) -> web.Response | None:
        """SGLang's own answer (status, body and JSON type kept), or None on an in-process backend."""
        answer = await self.api.engine.backend.upstream_get(path, request.query_string)
        if answer is None:
            return None
        status, body = answer
        return web.Response(status=status, body=body, content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        """200 while the engine serves (readiness: a draining or still loading engine gets no traffic)."""
        return await self.api.readyz(request)

    async def server_info(self, request: web.Request) -> web.Response:
        passed = await self._upstream(request, SERVER_INFO_PATH)
        if passed is not None:
            return passed
        settings = self.settings
        context = self.api.engine.templater.context_length if self.api.engine.ready else None
        return web.json_response({
            "model_path": settings.model_name, "served_model_name": settings.model_name,
            "tp_size": settings.tp_size, "dp_size": 1, "pp_size": 1, "context_length": context,
            "max_running_requests": settings.max_concurrent_requests, "is_embedding": False,
            "disaggregation_mode": "null", "version": self.version, "backend": settings.backend,
        })

    async def model_info(self, request: web.Request) -> web.Response:
        passed = await self._upstream(request, MODEL_INFO_PATH)
        if passed is not None:
            return passed
        name = self.settings.model_name
        return web.json_response({
            "model_path": name, "served_model_name": name, "tokenizer_path": name, "is_generation": True,
            "has_image_understanding": False, "has_audio_understanding": False,
        })

    async def loads(self, request: web.Request) -> web.Response:
        passed = await self._upstream(request, LOADS_PATH)
        if passed is not None:
            return passed
        running = self.api.state.in_flight
        load = {"dp_rank": 0, "num_running_reqs": running, "num_waiting_reqs": 0, "num_total_reqs": running,
                "max_running_requests": self.settings.max_concurrent_requests,
                "utilization": running / self.settings.max_concurrent_requests}
        now = datetime.datetime.now(datetime.UTC).isoformat()
        return web.Response(text=json.dumps({"timestamp": now, "dp_rank_count": 1, "loads": [load]}),
                            content_type="application/json")


def add_worker_routes(app: web.Application, api: Api) -> None:
    worker = WorkerApi(api)
    app.router.add_get(HEALTH_PATH, worker.health)
    for path in (SERVER_INFO_PATH, "/get_server_info"):
        app.router.add_get(path, worker.server_info)
    for path in (MODEL_INFO_PATH, "/get_model_info"):
        app.router.add_get(path, worker.model_info)
    for path in (LOADS_PATH, "/loads"):
        app.router.add_get(path, worker.loads)

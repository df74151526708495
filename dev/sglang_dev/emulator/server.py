"""The emulator: a KMock `KubernetesEmulator` whose Kubernetes URLs are served by this package's store.

KMock's own reactions still work (`emulator[...] << response` takes precedence over the store), and
requests that are not Kubernetes URLs fall back to KMock. Its private request parsing is replaced: it
fails on `/api/v1/namespaces` and does not know watches by URL prefix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import references, rendering

from . import aggregated, discovery, paths, podlogs, protobuf, table
from .api import Api, WriteOptions
from .errors import ApiError
from .faults import BODY_KEPT, FAULT_REASONS, WRITE_METHODS, Fault, RequestRecord
from .store import Store
from .watch import WatchParams, WatchStream

logger = logging.getLogger("sglang_dev.emulator")
REQUEST_LOG_LIMIT = 50000


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    response = aiohttp.web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )
    for warning in warnings or []:
        response.headers.add("Warning", f'299 - "{warning}"')
    return response


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    store: Store = attrs.field(factory=Store)
    bookmark_interval: float = 5.0
    graceful_pod_deletion: bool = False  # opt-in: a kubelet must confirm with gracePeriodSeconds=0
    pod_logs_dir: Path | None = None  # where `pods/log` reads <ns>_<pod>/logs/<container>.log
    log_requests: bool = False
    api: Api = attrs.field(init=False)
    request_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.api = Api(self.store, self.graceful_pod_deletion)
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.api.create(
                self._type("", "v1", "namespaces"), None, {"metadata": {"name": name}}, WriteOptions()
            )

    def _type(self, group: str, version: str, plural: str) -> Any:
        rt = self.store.resource(group, version, plural)
        assert rt is not None
        return rt

    # -- public test API ---------------------------------------------------------------------------------
    def inject_fault(
        self, method: str, path: str, status: int | str = 500, times: int = 1, delay: float = 30.0
    ) -> Fault:
        """Make the next `times` requests with `method` (or "*", "LIST", "WATCH") whose path matches the
        regex `path` answer `status` (e.g. 500, 409, 410) or, with "timeout", stall `delay` s then 504.
        The store is not touched by a faulted request."""
        fault = Fault(method, re.compile(path), status, times, delay)
        self._faults.append(fault)
        return fault

    def writes(self, resource: str | None = None) -> list[RequestRecord]:
        """Write requests (POST/PUT/PATCH/DELETE) so far, optionally of one resource (`configmaps`,
        `deployments` or `deployments.apps`)."""
        return [r for r in self.request_log if r.is_write and r.refers_to(resource)]

    def write_count(self, resource: str | None = None) -> int:
        return len(self.writes(resource))

    def close_watches(self) -> None:
        """End every open watch stream (server shutdown; also forces clients to re-watch)."""
        self._closing.set()

    # -- request entry -----------------------------------------------------------------------------------
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        parsed = paths.parse(raw.path)
        api_path = parsed if isinstance(parsed, paths.ApiPath) else None
        watch = (
            api_path is not None
            and raw.method == "GET"
            and (api_path.legacy_watch or raw.query.get("watch") in ("true", "1"))
        )
        record = RequestRecord(
            raw.method,
            raw.path,
            raw.query_string,
            api_path.group if api_path else None,
            api_path.plural if api_path else None,
            api_path.namespace if api_path else None,
            api_path.name if api_path else None,
            api_path.subresource if api_path else None,
            watch,
            raw.headers.get("User-Agent", ""),
            body=body[:BODY_KEPT] if raw.method in WRITE_METHODS else b"",
        )
        self.request_log.append(record)
        if len(self.request_log) > REQUEST_LOG_LIMIT:
            del self.request_log[: REQUEST_LOG_LIMIT // 2]
        error = ""
        try:
            response = await self._serve(raw, body, parsed, record)
        except ApiError as exc:
            response, error = _json(exc.status(), exc.code), exc.message
        except Exception as exc:  # the client gets a Status it can show; the log gets the traceback
            logger.exception("emulator: %s %s failed", raw.method, raw.path_qs)
            response = _json(ApiError(500, "InternalError", f"emulator error: {exc!r}").status(), 500)
        record.status.append(response.status)
        if self.log_requests or response.status >= 500:
            agent = record.user_agent.split(" ")[0]
            logger.info(
                "%s %s -> %s [%s]%s",
                raw.method,
                raw.path_qs,
                response.status,
                agent,
                f" {error}" if error else "",
            )
        return response

    async def _serve(
        self, raw: aiohttp.web.BaseRequest, body: bytes, parsed: Any, record: RequestRecord
    ) -> aiohttp.web.StreamResponse:
        fault = next((f for f in self._faults if f.matches(raw.method, raw.path, record.watch)), None)
        if fault is not None:
            return await self._answer_fault(raw, fault, record.watch)
        reaction = await self._user_reaction(raw, body, parsed)
        if reaction is not None:
            return reaction
        if isinstance(parsed, paths.DiscoveryPath):
            return self._discovery(raw, parsed)
        if isinstance(parsed, paths.ApiPath):
            if "protobuf" in raw.headers.get("Content-Type", ""):
                body = _protobuf_as_json(body)
            return await self._resource(raw, body, parsed, record.watch)
        if raw.path in ("/version", "/version/"):
            return _json(discovery.SERVER_VERSION)
        if raw.path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if raw.path == "/openapi/v3":
            return _json(discovery.openapi_root(self.store.types()))
        if raw.path.startswith("/openapi/v3/"):
            return self._openapi_doc(raw.path.removeprefix("/openapi/v3/"))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _answer_fault(
        self, raw: aiohttp.web.BaseRequest, fault: Fault, watch: bool
    ) -> aiohttp.web.StreamResponse:
        fault.hits += 1
        if fault.status == "timeout":
            await asyncio.sleep(fault.delay)
            code = 504
        else:
            code = int(fault.status)
        error = ApiError(code, FAULT_REASONS.get(code, "InternalError"), f"injected fault: {code}")
        if watch and code == 410:  # the apiserver reports an expired watch inside a 200 stream
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(raw)
            await response.write(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        return _json(error.status(), code)

    async def _user_reaction(
        self, raw: aiohttp.web.BaseRequest, body: bytes, parsed: Any
    ) -> aiohttp.web.StreamResponse | None:
        """KMock's DSL reactions declared by a test (not its fallbacks) answer before the store."""
        user = [p for p in self._payloads if not (p.priorities and math.isinf(p.priorities[0]))]
        if not user:
            return None
        request = await self._kmock_request(raw, body, parsed)
        for payload in sorted(user, key=lambda p: tuple(-x for x in p.priorities)):
            if request in payload._source and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        return None

    async def _kmock_request(
        self, raw: aiohttp.web.BaseRequest, body: bytes, parsed: Any
    ) -> rendering.Request:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        api_path = parsed if isinstance(parsed, paths.ApiPath) else None
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=dict(raw.query),
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
            resource=None
            if api_path is None
            else references.resource(group=api_path.group, version=api_path.version, plural=api_path.plural),
            namespace=api_path.namespace if api_path else None,
            name=api_path.name if api_path else None,
            subresource=api_path.subresource if api_path else None,
        )
        self._requests.append(request)
        return request

    # -- discovery -----------------------------------------------------------------------------------
    def _discovery(self, raw: aiohttp.web.BaseRequest, parsed: paths.DiscoveryPath) -> aiohttp.web.Response:
        types = self.store.types()
        top_level = parsed.version is None and (parsed.legacy or parsed.group is None)
        if top_level and aggregated.wanted(raw.headers.get("Accept", "")):
            response = _json(aggregated.discovery_list(types, core=parsed.legacy))
            response.content_type = aggregated.CONTENT_TYPE.split(";")[0]
            response.headers["Content-Type"] = aggregated.CONTENT_TYPE
            return response
        if parsed.legacy and parsed.version is None:
            return _json(discovery.api_versions(f"{raw.host}"))
        if not parsed.legacy and parsed.group is None:
            return _json(discovery.api_group_list(types))
        doc = (
            discovery.api_group(types, parsed.group or "")
            if parsed.version is None
            else discovery.api_resource_list(types, parsed.group or "", parsed.version)
        )
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    def _openapi_doc(self, gv_path: str) -> aiohttp.web.Response:
        parts = gv_path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            doc = discovery.openapi_group_version(self.store.types(), "", parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = discovery.openapi_group_version(self.store.types(), parts[1], parts[2])
        else:
            doc = None
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    # -- resources -----------------------------------------------------------------------------------
    async def _resource(
        self, raw: aiohttp.web.BaseRequest, body: bytes, path: paths.ApiPath, watch: bool
    ) -> aiohttp.web.StreamResponse:
        rt = self.store.resource(path.group, path.version, path.plural)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query = dict(raw.query)
        namespace = path.namespace if rt.namespaced else None
        if path.subresource == "log" and raw.method == "GET" and path.name and rt.key == ("", "pods"):
            return await self._pod_log(raw, namespace, path.name)
        if path.subresource not in (None, "status", "scale", "binding"):
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({path.plural}/{path.subresource})",
            )
        method = raw.method
        if method == "GET" and watch:
            return await WatchStream(
                self.store,
                rt,
                namespace,
                WatchParams.parse(query, path.name, raw.headers.get("Accept", "")),
                self.bookmark_interval,
                self._closing,
            ).serve(raw)
        if method == "GET":
            if path.name is None:
                found = self.api.list(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"))
                items, rv = found["items"], found["metadata"]["resourceVersion"]
            else:
                found = self.api.get(rt, namespace, path.name, path.subresource)
                items, rv = [found], found["metadata"].get("resourceVersion", "")
            if path.subresource is None and table.wants_table(raw.headers.get("Accept", "")):
                return _json(table.table(rt, items, rv))
            return _json(found)
        opts = _write_options(query, body if method == "DELETE" else b"")
        if method == "POST" and path.subresource == "binding" and path.name:
            return self._bind(rt, namespace, path.name, body, opts)
        if method == "POST" and path.name is None:
            result = self.api.create(rt, namespace, _body(body, raw.headers.get("Content-Type", "")), opts)
        elif method == "PUT" and path.name:
            result = self.api.replace(
                rt,
                namespace,
                path.name,
                path.subresource,
                _body(body, raw.headers.get("Content-Type", "")),
                opts,
            )
        elif method == "PATCH" and path.name:
            result = self.api.patch(
                rt, namespace, path.name, path.subresource, raw.headers.get("Content-Type", ""), body, opts
            )
        elif method == "DELETE" and path.name:
            result = self.api.delete(rt, namespace, path.name, opts, _preconditions(body))
        elif method == "DELETE":
            return _json(
                self.api.delete_collection(
                    rt, namespace, query.get("labelSelector"), query.get("fieldSelector"), opts
                )
            )
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw.path}")
        return _json(result.obj, result.code, result.warnings)

    async def _pod_log(
        self, raw: aiohttp.web.BaseRequest, namespace: str | None, name: str
    ) -> aiohttp.web.StreamResponse:
        pods = self._type("", "v1", "pods")
        pod = self.api.get(pods, namespace, name)
        if self.pod_logs_dir is None:
            raise ApiError(
                400, "BadRequest", "this emulator serves no pod logs (start it with --pod-logs-dir)"
            )
        request = podlogs.LogRequest.parse(pod, dict(raw.query))
        uid = pod["metadata"]["uid"]

        def exists() -> bool:
            current = self.store.get(pods.key, namespace, name)
            return current is not None and current["metadata"]["uid"] == uid

        path = podlogs.log_file(self.pod_logs_dir, namespace or "", name, request.container)
        return await podlogs.serve(raw, path, request, exists, self._closing)

    def _bind(
        self, rt: Any, namespace: str | None, name: str, body: bytes, opts: WriteOptions
    ) -> aiohttp.web.Response:
        """`pods/binding`: what a scheduler posts to place a pod on a node."""
        if rt.key != ("", "pods"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        target = (_body(body).get("target") or {}).get("name")
        if not target:
            raise ApiError(422, "Invalid", "target.name: Required value")
        patch = json.dumps({"spec": {"nodeName": target}}).encode()
        self.api.patch(rt, namespace, name, None, "application/merge-patch+json", patch, opts)
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
        )


def _protobuf_as_json(body: bytes) -> bytes:
    try:
        return json.dumps(protobuf.decode(body)).encode()
    except protobuf.Undecodable as exc:
        raise ApiError(415, "UnsupportedMediaType", f"emulator: {exc}") from exc


def _body(raw: bytes, content_type: str = "application/json") -> Any:
    """A JSON (or, when the client says so, YAML) request body."""
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw) if raw else None
        return json.loads(raw) if raw else None
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid {content_type}: {exc}") from exc


def _delete_options(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _preconditions(body: bytes) -> dict[str, Any]:
    return _delete_options(body).get("preconditions") or {}


def _write_options(query: dict[str, str], delete_body: bytes) -> WriteOptions:
    options = _delete_options(delete_body)
    dry_run = query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
    propagation = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
    if options.get("orphanDependents") is True:
        propagation = "Orphan"
    validation = query.get("fieldValidation") or "Warn"
    if validation not in ("Strict", "Warn", "Ignore"):
        raise ApiError(
            400,
            "BadRequest",
            f"fieldValidation: invalid value {validation!r}: expected Strict, Warn or Ignore",
        )
    grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    try:
        grace_period = None if grace is None else int(grace)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"gracePeriodSeconds: invalid value {grace!r}") from exc
    return WriteOptions(
        dry_run=dry_run,
        field_validation=validation,
        propagation=propagation,
        force=query.get("force") == "true",
        grace_period=grace_period,
        field_manager=query.get("fieldManager"),
    )

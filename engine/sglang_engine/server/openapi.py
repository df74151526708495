"""The engine's own OpenAPI 3.1 document (served at `GET /openapi.json`).

Request bodies come from the pydantic models the handlers parse with (`ChatCompletionRequest`,
`AdapterSpec`), so the document cannot drift from what the server accepts. Responses are described by
status and shape; errors always use OpenAI's `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sglang_engine.contract import AdapterSpec
from sglang_engine.server.openai_types import ChatCompletionRequest

REF = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/schemas/Error"}
JSON_OBJECT = {"type": "object"}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """Register `model` (and the models it nests) in components; return a $ref to it."""
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(ERROR, "An OpenAI-shaped error") for s in statuses}


def _get(summary: str, ok: dict[str, Any], *errors: int, secured: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if secured:
        op["security"] = [{"bearer": []}]
    return op


def build_openapi(title: str = "sglang-engine", version: str = "0.1.0") -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"], "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
    }
    chat = _schema(ChatCompletionRequest, components)
    adapter = _schema(AdapterSpec, components)
    health = _json(JSON_OBJECT, "Serving")
    chat_ok = {"description": "A completion (JSON), or with `stream: true` server-sent events ending with "
                              "`data: [DONE]`",
               "content": {"application/json": {"schema": JSON_OBJECT},
                           "text/event-stream": {"schema": {"type": "string"}}}}
    paths = {
        "/v1/chat/completions": {"post": {
            "summary": "OpenAI chat completions (streamed or not). The schema is the transformers backend's; "
                       "on the sglang backend the request goes to SGLang's own OpenAI server, which accepts "
                       "its whole request model",
            "security": [{"bearer": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": chat}}},
            "responses": {"200": chat_ok, **_errors(400, 401, 404, 408, 413, 415, 421, 429, 500, 502, 503)},
        }},
        "/v1/completions": {"post": {
            "summary": "OpenAI completions, served by SGLang's own OpenAI server (sglang backend only)",
            "security": [{"bearer": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}},
            "responses": {"200": chat_ok, **_errors(400, 401, 404, 408, 413, 415, 421, 429, 502, 503)},
        }},
        "/v1/models": {"get": _get("The base model and each loaded adapter", _json(JSON_OBJECT, "A list"),
                                   401)},
        "/v1/models/{id}": {"get": {
            **_get("One model: the served name, an adapter or <served>:<adapter>",
                   _json(JSON_OBJECT, "A model"), 401, 404),
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 512}}]}},
        "/livez": {"get": _get("Liveness: fails once the backend cannot recover", health, 503)},
        "/readyz": {"get": _get("Readiness: the backend serves and no declared adapter is loading",
                                health, 503)},
        "/status": {"get": _get("Adapter and config state, read by the operator",
                                _json(JSON_OBJECT, "State"))},
        "/metrics": {"get": _get("Prometheus metrics", {"description": "Text exposition format", "content": {
            "text/plain": {"schema": {"type": "string"}}}})},
        "/openapi.json": {"get": _get("This document", _json(JSON_OBJECT, "OpenAPI 3.1"))},
        "/admin/adapters": {
            "get": _get("Every adapter's state", _json(JSON_OBJECT, "Adapters"), 401, 403, secured=True),
            "post": {"summary": "Load an adapter by hand", "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": adapter}}},
                     "responses": {"200": _json(JSON_OBJECT, "Loaded"),
                                   **_errors(400, 401, 403, 413, 415, 421)}},
        },
        # What SGLang's gateway (SMG) calls on its workers (server/worker_api.py): SGLang's answers passed
        # through on the SGLang backend, the engine's own in the same shapes on the transformers backend.
        "/health": {"get": _get("Readiness, as SGLang's gateway probes it", health, 503)},
        **{path: {"get": _get(summary, _json(JSON_OBJECT, "SGLang's shape"), 401, 503, secured=True)}
           for path, summary in (("/server_info", "Server settings"), ("/get_server_info", "Server settings"),
                                 ("/model_info", "Model facts"), ("/get_model_info", "Model facts"),
                                 ("/v1/loads", "Load per data-parallel rank"),
                                 ("/loads", "Load per data-parallel rank"))},
        "/admin/adapters/{name}": {"delete": {
            "summary": "Unload an adapter", "security": [{"bearer": []}],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(JSON_OBJECT, "Unloaded"), **_errors(401, 403, 404)},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

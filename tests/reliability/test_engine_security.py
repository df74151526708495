"""The engine's security promises: admin routes need the bearer token, secrets are compared in constant time,
no CORS unless configured, and tokens never reach logs, responses or the SGLang command line."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fakes import Harness
from sglang_engine.protocol import build_sglang_argv
from sglang_engine.server.openapi import build_openapi
from sglang_engine.settings import parse_settings

API_KEY = "sk-live-0123456789abcdef"
ADMIN_TOKEN = "adm-0123456789abcdef"
CHAT = "/v1/chat/completions"
HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
ADMIN_ROUTES = [(method.upper(), path.replace("{name}", "sql"))
                for path, ops in build_openapi()["paths"].items() if path.startswith("/admin/")
                for method in ops]


def test_every_admin_route_of_the_document_is_checked() -> None:
    assert {m for m, _ in ADMIN_ROUTES} == {"GET", "POST", "DELETE"}


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_refuse_requests_without_the_right_bearer_token(
        harness_factory: Callable[..., Harness], method: str, path: str) -> None:
    body = {"name": "sql", "source": "/adapters/sql"}
    h = harness_factory(admin_token=ADMIN_TOKEN)
    async with h as client:
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 403),
                                ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
                                ({"Authorization": f"Bearer {API_KEY}"}, 403)):
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == status, (method, path, headers)
        assert h.backend.adapters == {}  # nothing was loaded by a refused request
    async with harness_factory() as client:  # no token configured: the admin API is off
        resp = await client.request(method, path, json=body, headers={"Authorization": "Bearer "})
        assert resp.status == 403


async def test_keys_and_tokens_are_compared_in_constant_time(
        harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with harness_factory(api_key=API_KEY, admin_token=ADMIN_TOKEN) as client:
        assert (await client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer guess"})).status == 401
        assert (await client.get("/admin/adapters", headers={"Authorization": "Bearer guess"})).status == 403
    assert (b"guess", API_KEY.encode()) in compared and (b"guess", ADMIN_TOKEN.encode()) in compared


async def test_no_cors_headers_unless_configured(harness_factory: Callable[..., Harness]) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    async with harness_factory() as client:
        for resp in (await client.options(CHAT, headers=preflight),
                     await client.get("/v1/models", headers=origin),
                     await client.post(CHAT, json=HELLO, headers=origin)):
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        assert (await client.options(CHAT, headers=preflight)).status == 405


async def test_configured_origins_get_cors_and_others_do_not(
        harness_factory: Callable[..., Harness]) -> None:
    app_origin = "https://chat.example"
    async with harness_factory(cors_allow_origins=(app_origin,), api_key=API_KEY) as client:
        # The preflight carries no credentials and is answered before auth.
        pre = await client.options(CHAT, headers={
            "Origin": app_origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == app_origin
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        auth = {"Origin": app_origin, "Authorization": f"Bearer {API_KEY}"}
        stream = await client.post(CHAT, json={**HELLO, "stream": True}, headers=auth)
        assert stream.status == 200 and stream.headers["Access-Control-Allow-Origin"] == app_origin
        await stream.read()
        refused = await client.post(CHAT, json=HELLO, headers={"Origin": app_origin})
        assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == app_origin
        other = await client.get("/v1/models", headers={**auth, "Origin": "https://evil.example"})
        assert other.status == 200
        assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_flag_parses() -> None:
    settings = parse_settings(["--model", "m", "--cors-allow-origin", "https://a",
                               "--cors-allow-origin", "*"])
    assert settings.cors_allow_origins == ("https://a", "*")
    assert parse_settings(["--model", "m"]).cors_allow_origins == ()


async def test_tokens_never_reach_logs_responses_or_sglangs_argv(
        harness_factory: Callable[..., Harness], caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness_factory(api_key=API_KEY, admin_token=ADMIN_TOKEN)
    h.backend.fail_adapters["bad"] = "rank 64 is over the pool's max rank 16"
    seen: list[str] = []
    async with h as client:
        user, admin = {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        calls = [
            client.post(CHAT, json=HELLO, headers={"Authorization": f"Bearer {API_KEY}x"}),  # near miss
            client.post(CHAT, json={**HELLO, "stream": True}, headers=user),
            client.post(CHAT, json={**HELLO, "bogus": API_KEY[:4]}, headers=user),
            client.post("/admin/adapters", json={"name": "bad", "source": "/a/bad"}, headers=admin),
            client.post("/admin/adapters", data=b"{not json", headers=admin),
            client.get("/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}),
            client.get("/status"), client.get("/metrics"), client.get("/readyz"), client.get("/openapi.json"),
        ]
        for call in calls:
            resp = await call
            seen.append(await resp.text())
            seen.append(str(dict(resp.headers)))
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    settings = parse_settings(["--model", "m", "--api-key-file", str(key_file)])
    assert settings.api_key == API_KEY
    seen += [repr(settings), str(settings), str(build_sglang_argv(settings, "/models/m", {}))]
    text = caplog.text + "".join(seen)
    assert "rank 64 is over" in text  # the failure itself was reported (the capture works)
    for secret in (API_KEY, ADMIN_TOKEN):
        assert secret not in text


async def test_a_cross_site_form_post_is_refused_before_it_generates(
        harness_factory: Callable[..., Harness]) -> None:
    """A web page may POST text/plain or a form to any address without a CORS preflight (a port-forward on
    the victim's machine, say): without an API key only the Content-Type check stands between it and the
    model."""
    h = harness_factory()
    body = json.dumps(HELLO)
    async with h as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            resp = await client.post(CHAT, data=body, headers={"Content-Type": content_type})
            assert resp.status == 415, await resp.text()
            error = (await resp.json())["error"]
            assert error["type"] == "invalid_request_error" and content_type in error["message"]
        admin = await client.post("/admin/adapters", data=json.dumps({"name": "a", "source": "/a"}),
                                  headers={"Content-Type": "text/plain"})
        assert admin.status in (403, 415)  # the admin API is off here; with a token, see below
        assert h.backend.requests == []  # nothing reached the model
        ok = await client.post(CHAT, data=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status == 200, await ok.text()
    async with harness_factory(admin_token=ADMIN_TOKEN) as client:
        admin = await client.post("/admin/adapters", data=json.dumps({"name": "a", "source": "/a"}),
                                  headers={"Content-Type": "text/plain",
                                           "Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status == 415


async def test_the_host_allowlist_refuses_other_hosts_on_the_api_only(
        harness_factory: Callable[..., Harness]) -> None:
    async with harness_factory(allowed_hosts=("chat.internal",)) as client:
        rebound = await client.post(CHAT, json=HELLO, headers={"Host": "attacker.example:8000"})
        assert rebound.status == 421 and "attacker.example" in (await rebound.json())["error"]["message"]
        assert (await client.get("/v1/models", headers={"Host": "attacker.example"})).status == 421
        assert (await client.post(CHAT, json=HELLO, headers={"Host": "chat.internal:8000"})).status == 200
        assert (await client.get("/livez", headers={"Host": "10.0.0.7:8000"})).status == 200  # probes
    settings = parse_settings(["--model", "m", "--allowed-host", "a", "--allowed-host", "b"])
    assert settings.allowed_hosts == ("a", "b")


async def test_no_api_key_is_announced_on_status_and_in_the_log(
        harness_factory: Callable[..., Harness]) -> None:
    async with harness_factory() as client:
        status = await (await client.get("/status")).json()
        assert status["apiKeyRequired"] is False and "no API key" in status["warnings"][0]
    async with harness_factory(api_key=API_KEY) as client:
        status = await (await client.get("/status")).json()
        assert status["apiKeyRequired"] is True and status["warnings"] == []


async def test_the_admin_api_loads_local_adapters_only_from_its_roots(
        harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """A token holder cannot probe the pod's filesystem: outside the roots every path gets the same refusal,
    whether it exists or not, before anything touches it."""
    (tmp_path / "sql").mkdir()
    h = harness_factory(admin_token=ADMIN_TOKEN, admin_source_roots=(tmp_path,))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with h as client:
        answers = {}
        for source in ("/etc/passwd", "/nonexistent/adapter", "pvc://claim/../../../etc", "relative/../x/y"):
            resp = await client.post("/admin/adapters", json={"name": "probe", "source": source},
                                     headers=admin)
            error = (await resp.json())["error"]
            assert resp.status == 403 and error["code"] == "source_not_allowed", (source, error)
            answers[source] = error["message"].replace(repr(source), "SOURCE")
        assert len(set(answers.values())) == 1, answers  # nothing tells an existing path from a missing one
        assert h.backend.adapters == {}
        inside = await client.post("/admin/adapters", json={"name": "sql", "source": str(tmp_path / "sql")},
                                   headers=admin)
        assert inside.status == 200, await inside.text()
    parsed = parse_settings(["--model", "m", "--admin-source-root", "/mnt/pvc"])
    assert parsed.admin_source_roots == (Path("/mnt/pvc"),)


async def test_status_shows_no_source_or_error_of_adapters_loaded_by_hand(
        harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(admin_token=ADMIN_TOKEN)
    h.backend.fail_adapters["bad"] = "no adapter_config.json in /srv/private/adapters/bad"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with h as client:
        body = {"name": "bad", "source": "/srv/private/adapters/bad"}
        resp = await client.post("/admin/adapters", json=body, headers=admin)
        assert resp.status == 400 and "/srv/private" in await resp.text()  # the admin sees why
        public = await (await client.get("/status")).text()
        assert "bad" in public and "/srv/private" not in public
        listed = await (await client.get("/admin/adapters", headers=admin)).text()
        assert "/srv/private/adapters/bad" in listed

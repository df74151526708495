"""The operator and the real engine app together: an adapter that fails to load makes the CR report
AdaptersReady=False with the engine's message while the engine keeps serving the base model and the other
adapter; and the Secrets a CR names never reach children, events, status or the operator's logs (the
operator never even reads them)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from engine_fakes import Harness, make_settings
from sglang_operator.status import compute_status
from sgm_testlib import client, eventually, model, running_operator
from test_operator_kubectl import _simulate_rollout
from test_status import T0, cond, engine, observe

pytestmark = pytest.mark.timeout(60)
ENGINE_REASON = "LoRA rank 64 exceeds --max-lora-rank 16"
API_KEY = "sk-never-in-status-4c1d"
HF_TOKEN = "hf_never_in_status_9f2e"
SPEC = {"model": "builtin:tiny", "backend": "transformers",
        "loraAdapters": [{"name": "sql", "source": "/adapters/sql"},
                         {"name": "bad", "source": "/adapters/bad"}],
        "apiKeySecret": {"name": "chat-key", "key": "k"}, "hfTokenSecret": {"name": "hf", "key": "token"}}


def condition(cr: dict, type_: str) -> dict:
    return next((c for c in cr.get("status", {}).get("conditions") or [] if c["type"] == type_), {})


async def adapters_failed(api):
    cr = await api.get("SGLangModel", "default", "tiny")
    return cr if condition(cr, "AdaptersReady").get("status") == "False" and cr["status"].get(
        "readyReplicas") == 1 and condition(cr, "AdaptersReady").get("reason") == "AdapterFailed" else None


async def test_a_failed_adapter_is_reported_while_the_others_keep_serving_and_secrets_stay_secret(
        emulator, engine_cache: Path, tiny_templater, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """One scenario (kopf must start and stop inside one task): the operator serves `tiny` with two
    adapters, one of which its (real) engine app fails to load; the CR names two Secrets."""
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(emulator.url, headers={"User-Agent": "tests"}) as http:
        for name, key, value in (("chat-key", "k", API_KEY), ("hf", "token", HF_TOKEN)):
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                      "data": {key: base64.b64encode(value.encode()).decode()}}
            async with http.post("/api/v1/namespaces/default/secrets", json=secret) as resp:
                assert resp.status == 201, await resp.text()
    config_file = tmp_path / "config.json"
    harness = Harness(make_settings(engine_cache, config_file=config_file), tiny_templater)
    harness.backend.fail_adapters["bad"] = ENGINE_REASON
    harness.start_adapters = False
    async with harness as engine_client, client(emulator.url) as api, \
            running_operator(emulator.url, engine_client.port):
        await api.create(model("tiny", SPEC))
        dep = await eventually(lambda: api.get("Deployment", "default", "tiny"), what="Deployment")
        cm = await api.get("ConfigMap", "default", "tiny-engine-config")
        config_file.write_text(cm["data"]["config.json"])  # what the kubelet would mount
        await harness.adapters.start()
        await _simulate_rollout(api, dep)  # one ready pod at 127.0.0.1, the engine's address
        cr = await eventually(lambda: adapters_failed(api), within=30, what="AdaptersReady=False")

        rows = {a["name"]: a for a in cr["status"]["adapters"]}
        assert rows["sql"]["loaded"] == 1 and rows["bad"]["loaded"] == 0
        assert ENGINE_REASON in rows["bad"]["message"]
        assert cr["status"]["phase"] == "Degraded" and condition(cr, "Ready")["status"] == "False"
        status = await (await engine_client.get("/status")).json()
        assert status["configHash"] == hashlib.sha256(cm["data"]["config.json"].encode()).hexdigest()
        assert (await engine_client.get("/readyz")).status == 200  # a failed adapter does not hold readiness
        hello = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for name, expected in (("sql", 200), ("tiny", 200), ("bad", 404)):
            resp = await engine_client.post("/v1/chat/completions", json={**hello, "model": name})
            assert resp.status == expected, name

    # The Secrets: referenced by secretKeyRef only, and their values nowhere the operator writes or logs.
    container = emulator.get("apps/v1", "deployments", "tiny")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SGLANG_ENGINE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "chat-key", "key": "k"}
    seen = [json.dumps(obj) for api_version, plural in WRITTEN for obj in emulator.list(api_version, plural,
                                                                                          "default")]
    text = "".join(seen) + caplog.text
    assert "tiny-engine-config" in text and "AdapterFailed" in text  # the scan sees what was written
    encoded = [base64.b64encode(s.encode()).decode() for s in (API_KEY, HF_TOKEN)]
    for secret in (API_KEY, HF_TOKEN, *encoded):
        assert secret not in text
    # Every request not made by this test (the operator's own client and kopf's) left Secrets alone.
    touched = {r.plural for r in emulator.call(lambda: list(emulator.emulator.request_log))
               if r.user_agent != "tests"}
    assert {"deployments", "sglangmodels"} <= touched and "secrets" not in touched, touched


WRITTEN = (("apps/v1", "deployments"), ("v1", "services"), ("v1", "configmaps"), ("v1", "events"),
           ("v1", "pods"), ("serving.sglang-operator.io/v1alpha1", "sglangmodels"))


def test_the_adapters_ready_condition_carries_the_engines_message() -> None:
    engines = {"p0": engine("sql", failed="chat"), "p1": engine("sql", "chat")}
    status = compute_status(observe(engines=engines), T0)
    message = cond(status, "AdaptersReady")["message"]
    assert cond(status, "AdaptersReady")["status"] == "False" and "rank too big" in message

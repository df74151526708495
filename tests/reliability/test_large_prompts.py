"""Large prompts never stall the event loop: a prompt that cannot fit the context is refused by a character
count before any tokenizing, and one that may fit is templated in a worker thread while /livez keeps
answering."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable

from engine_fakes import Harness
from sglang_engine.templating import ChatTemplater

CHAT = "/v1/chat/completions"
PROBE_BOUND_S = 1.0  # the kubelet's default probe timeout; today's code stalled /livez for seconds


async def test_a_prompt_that_cannot_fit_is_refused_without_tokenizing(
        harness_factory: Callable[..., Harness], monkeypatch) -> None:
    h = harness_factory()
    templater = h.engine.templater
    encoded: list[int] = []
    real = ChatTemplater.encode_chat
    monkeypatch.setattr(ChatTemplater, "encode_chat",
                        lambda self, *a, **k: encoded.append(1) or real(self, *a, **k))
    assert templater.context_length is not None
    chars = templater.context_length * templater.longest_token_chars + 1
    async with h as client:
        resp = await client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * chars}]})
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["param"] == "messages" and error["code"] == "context_length_exceeded"
        assert f"are {chars} characters" in error["message"]
        assert encoded == []
        assert (await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 1})).status == 200
        assert encoded == [1]


async def test_huge_prompts_being_templated_leave_livez_answering(
        harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory()
    # A context so long the character bound lets the prompts through to the tokenizer (as for a real 1M-token
    # model): what is measured is the tokenizing itself.
    h.engine._templater = ChatTemplater(h.engine.templater.tokenizer, 10**7)
    prompt = "hello world, this is a long prompt. " * 28_000  # about 1 MB: seconds for the tiny tokenizer
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    async with h as client:
        # A process of its own, like the kubelet: it sees the loop from outside (a thread shares the GIL).
        prober = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBER, str(client.make_url("/livez")),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            await asyncio.sleep(0.5)  # the prober is polling before the prompts arrive
            replies = await asyncio.gather(*(client.post(CHAT, json=body) for _ in range(2)))
        finally:
            out, _ = await asyncio.wait_for(prober.communicate(b"stop\n"), 60)
        for resp in replies:
            assert resp.status == 200, await resp.text()
    probes = json.loads(out)
    assert len(h.backend.requests) == 2 and len(h.backend.requests[0].input_ids) > 100_000
    assert max(probes) < PROBE_BOUND_S, f"/livez took up to {max(probes):.2f} s while prompts were templated"
    assert len(probes) > 5, "the prompts were templated too fast to measure anything"


# Polls the URL every 50 ms until a line arrives on stdin; prints each probe's latency as a JSON list.
PROBER = """
import json, sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
latencies = []
while not stop.is_set():
    started = time.monotonic()
    with urllib.request.urlopen(sys.argv[1], timeout=30) as resp:
        assert resp.status == 200
    latencies.append(time.monotonic() - started)
    time.sleep(0.05)
print(json.dumps(latencies))
"""

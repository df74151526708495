"""Unit tests of the SGLang wire facts (sglang_engine.protocol): request body, stream parsing, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sglang_engine import protocol
from sglang_engine.backends.base import BackendError, GenerationRequest, SamplingParams


def event(text: str, finish: object = None, prompt: int = 5, completion: int = 1, cached: int = 0) -> bytes:
    meta = {"id": "r1", "finish_reason": finish, "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": cached}
    return b"data: " + json.dumps({"text": text, "output_ids": [1], "meta_info": meta}).encode()


def request(**sampling: object) -> GenerationRequest:
    adapter = sampling.pop("adapter", None)
    return GenerationRequest(request_id="req-1", input_ids=[1, 2, 3],
                             sampling=SamplingParams(max_new_tokens=16, **sampling),  # type: ignore[arg-type]
                             adapter=adapter)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- body

def test_generate_body_uses_sglang_keys_only() -> None:
    body = protocol.build_generate_body(request(seed=42, stop=("</s>",), temperature=0.5, adapter="sql"))
    assert body["input_ids"] == [1, 2, 3] and body["stream"] is True and body["rid"] == "req-1"
    assert body["lora_path"] == "sql" and "lora_request" not in body
    sampling = body["sampling_params"]
    assert sampling["sampling_seed"] == 42 and "seed" not in sampling
    assert sampling["stop"] == ["</s>"] and sampling["temperature"] == 0.5
    assert set(sampling) <= protocol.SAMPLING_KEYS


def test_generate_body_omits_unset_options() -> None:
    body = protocol.build_generate_body(request())
    assert "lora_path" not in body and "image_data" not in body
    assert "sampling_seed" not in body["sampling_params"] and "stop" not in body["sampling_params"]


def test_too_many_stop_strings_is_a_400_naming_stop() -> None:
    with pytest.raises(BackendError) as err:
        protocol.build_generate_body(request(stop=tuple(f"s{i}" for i in range(33))))
    assert err.value.status == 400 and err.value.param == "stop"


# --------------------------------------------------------------------------------------- stream

def test_cumulative_text_becomes_deltas_and_finish_reason_is_read_from_the_dict() -> None:
    state = protocol.StreamState()
    lines = [event("Hel"), event("Hello"), event("Hello wor"),
             event("Hello world", {"type": "stop", "matched": 2}, completion=4, cached=3), b"data: [DONE]"]
    chunks = [c for c in (protocol.parse_stream_event(line, state) for line in lines) if c is not None]
    assert [c.text for c in chunks] == ["Hel", "lo", " wor", "ld"]
    assert [c.finish_reason for c in chunks] == [None, None, None, "stop"]
    last = chunks[-1]
    assert (last.prompt_tokens, last.completion_tokens, last.cached_tokens) == (5, 4, 3)
    assert state.done and state.finished


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_events_split_across_chunks_reassemble(piece: int) -> None:
    wire = b"\n\n".join([event("Hi"), event("Hi there"), event("Hi there!", {"type": "stop", "matched": 2}),
                          b"data: [DONE]"]) + b"\n\n"
    state, buffer, texts = protocol.StreamState(), b"", []
    for start in range(0, len(wire), piece):
        events, buffer = protocol.split_events(buffer + wire[start:start + piece])
        texts += [c.text for c in (protocol.parse_stream_event(e, state) for e in events) if c is not None]
    assert texts == ["Hi", " there", "!"] and buffer == b"" and state.done and state.finished


@pytest.mark.parametrize(("finish", "expected"), [
    ({"type": "length", "length": 16}, "length"),
    ({"type": "stop", "matched": "</s>"}, "stop"),
    ({"type": "abort", "message": "aborted"}, "abort"),
    ({"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}, "abort"),
])
def test_every_finish_type_maps(finish: dict[str, object], expected: str) -> None:
    chunk = protocol.parse_stream_event(event("x", finish), protocol.StreamState())
    assert chunk is not None and chunk.finish_reason == expected


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (503, "server_error")])
def test_an_abort_with_a_status_is_that_error_with_sglangs_message(status: int, kind: str) -> None:
    # FINISH_ABORT(message, status_code, err_type).to_json() in SGLang 0.5.23's schedule_batch.py.
    finish = {"type": "abort", "message": "session id s9 does not exist", "status_code": status,
              "err_type": "BadRequestError" if status == 400 else None}
    with pytest.raises(BackendError) as err:
        protocol.parse_stream_event(event("x", finish), protocol.StreamState())
    assert (err.value.status, err.value.type, err.value.message) == (status, kind, finish["message"])


def test_final_event_without_new_text_still_carries_the_finish() -> None:
    state = protocol.StreamState()
    protocol.parse_stream_event(event("abc"), state)
    chunk = protocol.parse_stream_event(event("abc", {"type": "length", "length": 3}), state)
    assert chunk is not None and chunk.text == "" and chunk.finish_reason == "length"


def test_blank_and_unchanged_events_yield_nothing() -> None:
    state = protocol.StreamState()
    protocol.parse_stream_event(event("a"), state)
    assert protocol.parse_stream_event(b"", state) is None
    assert protocol.parse_stream_event(b": keep-alive", state) is None
    assert protocol.parse_stream_event(event("a"), state) is None


def test_error_event_after_streaming_began_is_a_backend_error() -> None:
    line = b'data: {"error": {"message": "The input (99 tokens) is longer than the model\'s context length"}}'
    with pytest.raises(BackendError) as err:
        protocol.parse_stream_event(line, protocol.StreamState())
    assert err.value.status == 400 and "context length" in err.value.message


# --------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("raw", [b'{"error": "bad top_k"}', b'{"error": {"message": "bad top_k"}}'])
def test_http_400_keeps_the_message_in_both_error_forms(raw: bytes) -> None:
    err = protocol.error_from_http(400, raw)
    assert err.status == 400 and err.message == "bad top_k" and err.type == "invalid_request_error"


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (502, 502), (503, 503), (404, 502)])
def test_server_side_failures_map_to_gateway_errors(status: int, expected: int) -> None:
    err = protocol.error_from_http(status, b"<html>oops</html>")
    assert err.status == expected and "oops" in err.message


def test_adapter_reply_parsing() -> None:
    ok, message, loaded = protocol.parse_adapter_reply(
        {"success": False, "error_message": "already loaded", "loaded_adapters": {"a": "/p"}})
    assert (ok, message, loaded) == (False, "already loaded", {"a": "/p"})
    assert protocol.parse_adapter_reply("nonsense")[0] is False


def test_protocol_imports_without_aiohttp_or_torch() -> None:
    """The operator imports ENGINE_OWNED_FLAGS: the module must stay dependency-free."""
    code = ("import sys; from sglang_engine.protocol import ENGINE_OWNED_FLAGS, refuse_owned_flags; "
            "heavy = {'aiohttp', 'torch', 'transformers', 'pydantic'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- load progress

def test_load_progress_summaries() -> None:
    from sglang_engine.protocol import LoadProgress

    gb = 10**9
    assert LoadProgress("Downloading", bytes_done=int(6.9 * gb), bytes_total=16 * gb, eta_seconds=240,
                        bytes_per_second=1e7).summary() == "Downloading 43% (6.9/16 GB, ~4m)"
    assert LoadProgress("Downloading", bytes_done=0, bytes_total=720_000).summary() == \
        "Downloading 0% (0/720 kB)"
    assert LoadProgress("Downloading").summary() == "Downloading"  # listing the repository: no total yet
    loading = LoadProgress("LoadingWeights", shards_done=3, shards_total=8)
    assert loading.summary() == "LoadingWeights 3/8 shards"
    assert LoadProgress("Failed", reason="GatedRepo", message="org/m is gated").summary() == \
        "Failed (GatedRepo): org/m is gated"
    assert LoadProgress("Downloading", bytes_done=5, bytes_total=10, eta_seconds=4000).summary() == \
        "Downloading 50% (5/10 B, ~1h07m)"


def test_load_progress_round_trips_and_refuses_garbage() -> None:
    from sglang_engine.protocol import LoadProgress

    p = LoadProgress("Downloading", bytes_done=5, bytes_total=10, files_done=1, files_total=3,
                     bytes_per_second=2.5, eta_seconds=2.0, message="org/m@main")
    assert LoadProgress.from_json(p.to_json()) == p
    assert LoadProgress.from_json({"phase": "Dancing"}) is None
    assert LoadProgress.from_json(["Downloading"]) is None
    odd = LoadProgress.from_json({"phase": "Downloading", "bytesDone": -1, "bytesTotal": "9", "permanent": 1,
                                  "etaSeconds": True, "message": "x" * 2000})
    assert odd == LoadProgress("Downloading", message="x" * 500)
    # Ranks sort the slowest replica first: a failed one, then an earlier phase, then less done.
    ranks = sorted([LoadProgress("Serving"), LoadProgress("Downloading", bytes_done=9, bytes_total=10),
                    LoadProgress("Failed", bytes_done=7),
                    LoadProgress("Downloading", bytes_done=1, bytes_total=10)], key=LoadProgress.rank)
    assert [r.bytes_done for r in ranks] == [7, 1, 9, 0]

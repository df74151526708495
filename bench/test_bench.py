"""Unit tests of the benchmarks' pure parts (no processes, well under a second):
`.venv/bin/python -m pytest bench/test_bench.py -q`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_stream import check_targets, ratios
from operator_scale import reflects_pending_pod, resource_of
from realplane import RequestCounts
from streamload import Stream, is_chat_token, is_openai_token, is_upstream_token, percentile, summarize
from synthetic_sglang import RID_MARK, encoded_events, expected_text


def _decode(events: tuple[tuple[bytes, bytes], ...]) -> list[dict]:
    return [json.loads((before + b"r1" + after)[len(b"data: "):]) for before, after in events]


def test_cumulative_events_follow_sglang_default() -> None:
    events = _decode(encoded_events(5, 7))
    assert [e["meta_info"]["completion_tokens"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["text"] == expected_text(5)
    assert len(events[-1]["output_ids"]) == 5
    assert events[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 5}
    assert all(e["meta_info"]["finish_reason"] is None for e in events[:-1])
    assert {e["meta_info"]["id"] for e in events} == {"r1"} and RID_MARK not in json.dumps(events)


def test_incremental_events_carry_only_the_new_token() -> None:
    events = _decode(encoded_events(5, 7, incremental=True))
    assert "".join(e["text"] for e in events) == expected_text(5)
    assert all(len(e["output_ids"]) == 1 for e in events)


def test_token_detection() -> None:
    assert is_upstream_token(b'data: {"text": " a"}\n')
    assert not is_upstream_token(b"data: [DONE]\n")
    assert is_openai_token(b'data: {"choices":[{"index":0,"delta":{"content":" a"}}]}\n')
    assert not is_openai_token(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n')


def test_summarize_counts_censors_and_splits_steady_gaps() -> None:
    early = Stream(sent=0.0, arrivals=[0.010, 0.040, 0.070, 0.100])
    late = Stream(sent=0.0, arrivals=[0.050, 0.080])
    starved = Stream(sent=0.0, cut=True)
    out = summarize([early, late, starved], start=0.0, end=0.1, deadline_s=1.0)
    assert out["tokens"] == 6 and out["tok_per_s"] == 60.0
    assert out["ttft_censored"] == 1 and out["complete_streams"] == 2
    assert out["ttft_p99_ms"] == 1000.0  # the starved stream counts at the deadline
    assert out["itl_p99_steady_ms"] == 30.0  # gaps from 0.07 on (after every stream's first token)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(101)), 99) == 99


def test_ratios_and_targets() -> None:
    base = {"ttft_p50_ms": 1.0, "ttft_p99_ms": 2.0, "itl_p99_ms": 40.0, "itl_p99_steady_ms": 35.0}
    runs = [
        {"mode": "paced", "level": 64, "path": "direct", "tok_per_s": 1000.0, **base},
        {"mode": "paced", "level": 64, "path": "engine", "tok_per_s": 850.0, **base, "ttft_p50_ms": 4.0},
        {"mode": "paced", "level": 64, "path": "seed", "tok_per_s": 50.0, **base},
    ]
    (row,) = ratios(runs)
    assert row["engine_over_direct"] == 0.85 and row["engine_over_seed"] == 17.0
    assert row["ttft_p50_added_ms"] == 3.0 and row["itl_p99_added_ms"] == 0.0 and row["ttft_p50_ratio"] == 4.0
    met = {t["target"]: t["met"] for t in check_targets([row])}
    probe_row = {"mode": "paced", "level": 1, "ttft_p50_added_ms": 5.0}
    probed = {t["target"]: t["value"] for t in check_targets([probe_row], {"added_p50_ms": 0.5})}
    assert probed["added TTFT p50 at 1 stream: <= 1 ms"] == 0.5
    assert probe_row["ttft_p50_added_ms"] == 5.0  # the per-run figure is left alone
    assert met["paced 30 tok/s, 64 streams: >= 0.98 of direct"] is False
    assert met["paced 30 tok/s, 256 streams: >= 0.98 of direct"] is None  # not measured


def test_resource_of_request_paths() -> None:
    assert resource_of("/apis/apps/v1/namespaces/default/deployments/m1") == "deployments"
    assert resource_of("/apis/g/v1/namespaces/default/sglangmodels/m1/status") == "sglangmodels/status"
    assert resource_of("/api/v1/namespaces/default/events") == "events"


def test_converged_on_the_real_plane_means_the_status_shows_the_pending_pod() -> None:
    def cr(replicas: int | None, reason: str) -> dict:
        return {"spec": {"replicas": 1}, "status": {"replicas": replicas, "conditions": [
            {"type": "Ready", "status": "False", "reason": reason}]}}

    assert reflects_pending_pod(cr(1, "Unschedulable"))
    assert not reflects_pending_pod(cr(0, "Unschedulable"))  # the Deployment's status not followed yet
    assert not reflects_pending_pod(cr(1, "RollingOut"))  # the scheduler's verdict not followed yet


def test_request_counts_by_kind_and_resource() -> None:
    counts = RequestCounts()
    counts.record("GET", "/api/v1/namespaces/default/pods", {"labelSelector": "a=b"})
    counts.record("GET", "/apis/apps/v1/namespaces/default/deployments", {"watch": "true"})
    counts.record("PATCH", "/apis/g/v1/namespaces/default/sglangmodels/m/status", {}, b"{}")
    assert dict(counts.counts) == {"total": 3, "reads": 1, "GET pods": 1, "watches": 1, "writes": 1,
                                   "PATCH sglangmodels/status": 1}


def test_chat_tokens_in_the_engines_shape_and_sglangs() -> None:
    assert is_chat_token(b'data: {"choices":[{"index":0,"delta":{"content":" a"}}]}\n')
    assert is_chat_token(b'data: {"choices":[{"index":0,"delta":{"reasoning_content":null,"content":" a"}}]}')
    assert not is_chat_token(b'data: {"choices":[{"delta":{"reasoning_content":null,"role":"assistant",'
                             b'"content":""}}]}')
    assert not is_chat_token(b'data: {"choices":[],"usage":{"prompt_tokens":1}}')

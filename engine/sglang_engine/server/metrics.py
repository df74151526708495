"""Prometheus metrics of the engine's HTTP API, in a registry of its own (tests build many apps).

Labels are the SERVED model name and the resolved adapter name (never the client's raw `model` string,
which would make label cardinality unbounded). Nothing is recorded per token: only at the first token
and at the end of a request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LABELS = ("model", "adapter")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class EngineMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sglang_engine_requests", "Chat completion requests by HTTP status code.",
            (*_LABELS, "code"), registry=r)
        self.in_flight = Gauge(
            "sglang_engine_requests_in_flight", "Chat completion requests being generated now.", _LABELS,
            registry=r)
        self.time_to_first_token = Histogram(
            "sglang_engine_time_to_first_token_seconds", "Time from request arrival to the first token.",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e_latency = Histogram(
            "sglang_engine_e2e_request_latency_seconds", "Time from request arrival to its last byte.",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter(
            "sglang_engine_prompt_tokens", "Prompt tokens processed.", _LABELS, registry=r)
        self.completion_tokens = Counter(
            "sglang_engine_completion_tokens", "Completion tokens generated.", _LABELS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

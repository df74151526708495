"""Prometheus metrics of the engine's HTTP API, in a registry of its own (tests build many apps).

Labels are the SERVED model name and the resolved adapter name (never the client's raw `model` string,
which would make label cardinality unbounded). Nothing is recorded per token: only at the first token
and at the end of a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sglang_engine.protocol import LOAD_PHASES, LoadProgress

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

    def track_loading(self, read: Callable[[], LoadProgress]) -> None:
        """Export the model's loading progress, read at each scrape."""
        self.registry.register(LoadingCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LoadingCollector(Collector):
    """`sglang_engine_load_phase{phase}` (1 for the current phase) and the download's and the weights'
    progress (absent when unknown), read from the engine at scrape time."""

    def __init__(self, read: Callable[[], LoadProgress]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = self.read()
        phase = GaugeMetricFamily("sglang_engine_load_phase",
                                  "The model's loading phase: 1 for the current one.", labels=["phase"])
        for name in LOAD_PHASES:
            phase.add_metric([name], 1.0 if name == p.phase else 0.0)
        yield phase
        values = (
            ("sglang_engine_download_bytes", "Bytes of the model on disk so far (downloaded or cached).",
             p.bytes_done if p.bytes_total is not None else None),
            ("sglang_engine_download_size_bytes", "Bytes of the model's files in all.", p.bytes_total),
            ("sglang_engine_download_files", "Files of the model downloaded so far.",
             p.files_done if p.files_total is not None else None),
            ("sglang_engine_download_size_files", "Files of the model in all.", p.files_total),
            ("sglang_engine_download_rate_bytes_per_second", "Download rate over the last 20 s.",
             p.bytes_per_second),
            ("sglang_engine_download_eta_seconds", "Estimated seconds until the download completes.",
             p.eta_seconds),
            ("sglang_engine_load_shards_loaded", "Checkpoint shards loaded so far.", p.shards_done),
            ("sglang_engine_load_shards", "Checkpoint shards in all.", p.shards_total),
        )
        for name, help_, value in values:
            if value is not None:
                yield GaugeMetricFamily(name, help_, value=float(value))

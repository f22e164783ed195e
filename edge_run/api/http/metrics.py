"""``GET /metrics``: Prometheus text format from ``prometheus-client``, one ``CollectorRegistry`` per app.

Where llama-server has the same measure, the name is its own (``llamacpp:prompt_tokens_total``,
``llamacpp:tokens_predicted_total``, ``llamacpp:requests_processing``, ``llamacpp:requests_deferred``),
with a ``model`` label since one edge-run serves many models. The rest are ``edge_run_*``. Counters and
histograms are fed as requests run; gauges are read from the model registry at each scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge_run.models.registry import ModelRegistry

__all__ = ["Metrics", "metrics_route"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_GAP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


class Metrics:
    """The app's metrics; ``registry`` is what ``/metrics`` exposes."""

    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.prompt_tokens = Counter("llamacpp:prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.tokens_predicted = Counter("llamacpp:tokens_predicted", "Tokens generated", ["model"], registry=r)
        self.reasoning_tokens = Counter(
            "edge_run_reasoning_tokens", "Generated tokens of thinking models' thoughts", ["model"], registry=r
        )
        self.cached_tokens = Counter(
            "edge_run_prompt_tokens_cached", "Prompt tokens reused from the prefix cache (hits)", ["model"], registry=r
        )
        self.requests = Counter(
            "edge_run_requests", "Requests that ran a model, by route and HTTP status", ["model", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "edge_run_time_to_first_token_seconds", "From the request's arrival to its first token", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.token_gap = Histogram(
            "edge_run_inter_token_latency_seconds", "Between two tokens of one answer, as the client receives them",
            ["model"], buckets=TOKEN_GAP_BUCKETS, registry=r,
        )  # fmt: skip
        r.register(_ModelsCollector(models))

    def prompt(self, model: str, tokens: int, cached: int) -> None:
        self.prompt_tokens.labels(model).inc(tokens)
        self.cached_tokens.labels(model).inc(cached)

    def completion(self, model: str, tokens: int, *, first_after: float | None, gap: float | None) -> None:
        self.tokens_predicted.labels(model).inc(tokens)
        if first_after is not None:
            self.ttft.labels(model).observe(first_after)
        if gap is not None:
            self.token_gap.labels(model).observe(gap)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelsCollector(Collector):
    """Gauges read from the registry at scrape time: what is loaded, busy, waiting; loads and unloads."""

    def __init__(self, models: ModelRegistry) -> None:
        self._models = models

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        processing = GaugeMetricFamily("llamacpp:requests_processing", "Requests in a slot", labels=["model"])
        deferred = GaugeMetricFamily("llamacpp:requests_deferred", "Requests waiting for a slot", labels=["model"])
        busy = GaugeMetricFamily("edge_run_slots_busy", "Slots decoding a request", labels=["model"])
        total = GaugeMetricFamily("edge_run_slots_total", "Slots of a loaded model", labels=["model"])
        loaded = GaugeMetricFamily("edge_run_model_loaded", "1 while the model is loaded", labels=["model"])
        loads = CounterMetricFamily("edge_run_model_loads", "Loads of the model", labels=["model"])
        unloads = CounterMetricFamily("edge_run_model_unloads", "Unloads of the model", labels=["model"])
        drafted = CounterMetricFamily(
            "edge_run_draft_tokens", "Drafted tokens, by whether sampling kept them", labels=["model", "outcome"]
        )
        for entry in self._models:
            model = entry.spec.id
            status = entry.backend.status() if entry.backend is not None else {}
            processing.add_metric([model], status.get("slots_busy", 0))
            deferred.add_metric([model], status.get("queued", 0))
            busy.add_metric([model], status.get("slots_busy", 0))
            total.add_metric([model], status.get("slots_total", 0))
            loaded.add_metric([model], 1 if entry.status == "loaded" else 0)
            loads.add_metric([model], entry.loads)
            unloads.add_metric([model], entry.unloads)
            drafted.add_metric([model, "accepted"], status.get("drafts_accepted", 0))
            drafted.add_metric([model, "rejected"], status.get("drafts_rejected", 0))
        yield from (processing, deferred, busy, total, loaded, loads, unloads, drafted)


@get("/metrics", summary="Prometheus metrics (needs a key unless --metrics-public)", include_in_schema=True)
async def metrics_route(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

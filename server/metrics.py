"""Prometheus metrics for the server, on a registry owned by one app (tests can run several apps).

Counters and histograms are updated by the handlers; the engine gauges (queue depth, running batch size,
and the router gauges ``realizar:num_requests_waiting`` / ``realizar:num_requests_running`` /
``realizar:kv_cache_usage_perc`` named in vLLM's style) are read from ``engine.stats()`` at scrape time by a collector, so they cost nothing between scrapes.
Observing a histogram costs a lock and a bisect (~1-2 us); the per-token ones (inter-token latency,
grammar mask time) are observed from the event loop or the engine thread, never while holding the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ServerMetrics", "kv_cache_usage"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 60.0)
_FAST_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)

# Keys the engine may use in stats() for each gauge (first present wins).
_QUEUE_KEYS = ("queue_depth", "queued", "waiting", "num_waiting")
_RUNNING_KEYS = ("running_batch_size", "running", "batch_size", "num_running")


def stat(stats: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class _EngineCollector(Collector):
    def __init__(self, engine_stats: Callable[[], dict[str, Any] | None]) -> None:
        self._engine_stats = engine_stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        try:
            stats = self._engine_stats() or {}
        except Exception:  # a closed engine has no gauges; the scrape still succeeds
            stats = {}
        queue = GaugeMetricFamily("realizar_queue_depth", "Requests waiting for a batch slot.")
        running = GaugeMetricFamily("realizar_running_batch_size", "Sequences in the running batch.")
        q, r = stat(stats, _QUEUE_KEYS), stat(stats, _RUNNING_KEYS)
        if q is not None:
            queue.add_metric([], q)
        if r is not None:
            running.add_metric([], r)
        yield queue
        yield running
        forced = CounterMetricFamily("realizar_forced_tokens", "Tokens appended because a grammar forced them "
                                     "(fast-forward), without sampling.")
        saved = CounterMetricFamily("realizar_model_steps_saved", "Model steps saved by feeding forced tokens "
                                    "several per pass.")
        healed = CounterMetricFamily("realizar_healed_tokens", "Sampled tokens replaced, with the forced run after "
                                     "them, by the tokenizer's own tokens for their text (token healing).")
        for family, key in ((forced, "forced_tokens"), (saved, "model_steps_saved"), (healed, "healed_tokens")):
            value = stat(stats, (key,))
            if value is not None:
                family.add_metric([], value)
            yield family
        yield from _prefix_cache_metrics(stats)
        yield from _router_gauges(stats, q, r)


def _router_gauges(stats: dict[str, Any], waiting: float | None, running: float | None) -> Iterable[GaugeMetricFamily]:
    """The three gauges load-aware routers read, in vLLM's colon style (``vllm:num_requests_waiting`` ...):
    point llm-d's endpoint picker at them with its metric-name flags (``--total-queued-requests-metric``,
    ``--total-running-requests-metric``, ``--kv-cache-usage-percentage-metric``)."""
    families = (
        ("realizar:num_requests_waiting", "Requests waiting for a batch slot (vLLM: vllm:num_requests_waiting).",
         waiting),
        ("realizar:num_requests_running", "Requests in the running batch (vLLM: vllm:num_requests_running).",
         running),
        ("realizar:kv_cache_usage_perc", "KV-cache usage, 0..1: the share of the preallocated KV slots "
         "(max_batch_size sequences of max_context positions each) held by running sequences.",
         kv_cache_usage(stats)),
    )
    for name, doc, value in families:
        family = GaugeMetricFamily(name, doc)
        if value is not None:
            family.add_metric([], value)
        yield family


def kv_cache_usage(stats: dict[str, Any]) -> float | None:
    """Share of the KV slots in use, 0..1 (each running sequence holds one slot of max_context positions)."""
    running, slots = stat(stats, _RUNNING_KEYS), stat(stats, ("max_batch_size",))
    if running is None or not slots:
        return None
    return min(1.0, running / slots)


# (metric, help, stats() key): the engine's prefix cache, read at scrape time.
_PREFIX_CACHE_COUNTERS = (
    ("realizar_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "prefix_cache_query_tokens"),
    ("realizar_prefix_cache_hits", "Prompt tokens whose KV came from the prefix cache.", "prefix_cache_hit_tokens"),
)
_PREFIX_CACHE_GAUGES = (
    ("realizar_prefix_cache_bytes", "Host memory the prefix cache's blocks hold.", "prefix_cache_bytes_in_use"),
    ("realizar_prefix_cache_capacity_bytes", "The prefix cache's bound (0: off).", "prefix_cache_capacity_bytes"),
)


def _prefix_cache_metrics(stats: dict[str, Any]) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    for name, doc, key in _PREFIX_CACHE_COUNTERS:
        family = CounterMetricFamily(name, doc)
        if (value := stat(stats, (key,))) is not None:
            family.add_metric([], value)
        yield family
    for name, doc, key in _PREFIX_CACHE_GAUGES:
        family = GaugeMetricFamily(name, doc)
        if (value := stat(stats, (key,))) is not None:
            family.add_metric([], value)
        yield family


class ServerMetrics:
    """Every metric the server exports, registered on a private registry."""

    def __init__(self, engine_stats: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("realizar_requests", "HTTP requests by route and status.",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("realizar_request_duration_seconds", "Request latency by route.",
                                         ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("realizar_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generated_tokens = Counter("realizar_generation_tokens", "Tokens generated.", ["model"], registry=r)
        self.ttft = Histogram("realizar_time_to_first_token_seconds", "Request arrival to first token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("realizar_inter_token_latency_seconds", "Time between streamed tokens.",
                             buckets=_FAST_BUCKETS + (10.0,), registry=r)
        self.grammar_compile = Histogram("realizar_grammar_compile_seconds", "compile_json_schema time per request "
                                         "(a cached schema: microseconds).", buckets=_FAST_BUCKETS + (10.0, 30.0), registry=r)
        self.grammar_mask = Histogram("realizar_grammar_mask_seconds", "Grammar mask time per token.",
                                      buckets=_FAST_BUCKETS, registry=r)
        self.cancelled = Counter("realizar_cancelled_requests", "Requests cancelled by a client disconnect.",
                                 registry=r)
        r.register(_EngineCollector(engine_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics of the UDF families, readable from SQL and servable over HTTP.

Every metric lives in :data:`COLLECTOR_REGISTRY`, one per process, instead of
prometheus_client's global default registry: the default one also carries the
process/platform collectors of whatever embeds DuckDB, and a registry of our own keeps
``faiss_metrics()`` rows and test assertions about our metrics only.

SQL surface:

* ``faiss_metrics()`` (scalar UDF) returns every sample as a list of
  ``STRUCT(metric, labels, stat, value)``; the table macro of the same name in
  ``sql/macros/faiss.sql`` unnests it into rows.  ``stat`` is the sample's suffix in the
  Prometheus exposition format (``count``, ``sum``, ``bucket``, ``total``, ``created``)
  or ``value`` for a gauge; a bucket's upper bound is its ``le`` label.
* ``metrics_serve(port)`` starts the Prometheus HTTP exporter for this process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from udfs.context import CatalogContext
from udfs.registry import UdfError, UdfSpec

logger = logging.getLogger("codeintel.metrics")

COLLECTOR_REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds buckets from 0.1 ms (Flat over a few thousand rows) to 10 s (a 2048-row chunk
# against a large IVF-PQ index).
_LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

ANN_SEARCH_SECONDS = Histogram(
    "faiss_ann_search_duration_seconds",
    "Wall time of one FAISS index.search call (one DuckDB chunk of query rows).",
    ["family"],
    buckets=_LATENCY_BUCKETS,
    registry=COLLECTOR_REGISTRY,
)
REFINE_SECONDS = Histogram(
    "faiss_refine_duration_seconds",
    "Wall time of one exact_rerank call (one DuckDB chunk of candidate lists).",
    buckets=_LATENCY_BUCKETS,
    registry=COLLECTOR_REGISTRY,
)
REFINE_KEPT_RATIO = Histogram(
    "faiss_refine_kept_ratio",
    "Per exact_rerank call: share of the ANN's own top-k candidates that survive into the "
    "re-ranked top-k (1.0: re-ranking changed nothing, so a lower k_factor would do).",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
    registry=COLLECTOR_REGISTRY,
)
RERANK_UNKNOWN_IDS = Counter(
    "faiss_rerank_unknown_ids",
    "Candidate ids passed to exact_rerank that the published index does not hold (dropped).",
    registry=COLLECTOR_REGISTRY,
)

_served_ports: dict[int, str] = {}
_serve_lock = threading.Lock()


def serve_metrics(port: int) -> str:
    """Start the HTTP exporter of :data:`COLLECTOR_REGISTRY` on ``port`` once per process; return its URL."""
    if not 1 <= port <= 65535:
        raise UdfError(f"metrics_serve: port must be between 1 and 65535, got {port}")
    with _serve_lock:
        if port not in _served_ports:
            try:
                start_http_server(port, registry=COLLECTOR_REGISTRY)
            except OSError as error:
                raise UdfError(
                    f"metrics_serve: cannot listen on port {port} ({error}); pick a free port"
                ) from error
            _served_ports[port] = f"http://0.0.0.0:{port}/metrics"
            logger.info("serving Prometheus metrics at %s", _served_ports[port])
        return _served_ports[port]


def metric_samples() -> list[dict[str, Any]]:
    """Every sample of :data:`COLLECTOR_REGISTRY` as ``{metric, labels, stat, value}`` rows."""
    rows = []
    for family in COLLECTOR_REGISTRY.collect():
        for sample in family.samples:
            suffix = sample.name[len(family.name) :].lstrip("_")
            rows.append(
                {
                    "metric": family.name,
                    "labels": dict(sample.labels),
                    "stat": suffix or "value",
                    "value": sample.value,
                }
            )
    return rows


def _faiss_metrics(context: CatalogContext) -> list[dict[str, Any]]:
    return metric_samples()


def _metrics_serve(context: CatalogContext, port: int) -> str:
    return serve_metrics(port)


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="faiss_metrics",
        function=_faiss_metrics,
        parameters=(),
        return_type="STRUCT(metric VARCHAR, labels MAP(VARCHAR, VARCHAR), stat VARCHAR, value DOUBLE)[]",
        kind="native",
        side_effects=True,
        doc="Every Prometheus sample of this process; SELECT * FROM faiss_metrics() gives one row each.",
    ),
    UdfSpec(
        name="metrics_serve",
        function=_metrics_serve,
        parameters=("INTEGER",),
        return_type="VARCHAR",
        kind="native",
        side_effects=True,
        doc="Start the Prometheus HTTP exporter on a port (idempotent per port); returns its URL.",
    ),
)

"""Prometheus metrics of the UDF families, readable from SQL and servable over HTTP.

Every metric lives in :data:`COLLECTOR_REGISTRY`, one per process, instead of
prometheus_client's global default registry: the default one also carries the
process/platform collectors of whatever embeds DuckDB, and a registry of our own keeps
``faiss_metrics()`` rows and test assertions about our metrics only.

SQL surface:

* ``faiss_metrics()`` (scalar UDF) returns every sample as a list of
  ``STRUCT(metric, labels, stat, value)``; the table macro of the same name in
  ``sql/macros/faiss_metrics.sql`` unnests it into rows.  ``stat`` is the sample's suffix in the
  Prometheus exposition format (``count``, ``sum``, ``bucket``, ``total``, ``created``)
  or ``value`` for a gauge; a bucket's upper bound is its ``le`` label.

No SQL function opens a listener: any SQL caller could otherwise expose this process on any
interface and port.  The HTTP exporter is started from Python, by a command or a host
program, with :func:`serve`, which takes its address from the connection's settings only
(udfs/settings.py: ``metrics_host``, loopback by default, and ``metrics_port``, 1024 or
above, so it never takes a privileged port even when run as root).  It answers ``/metrics``
only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

from udfs.context import CatalogContext
from udfs.registry import UdfError, UdfSpec
from udfs.settings import Settings, field_default

logger = logging.getLogger("codeintel.metrics")

COLLECTOR_REGISTRY = CollectorRegistry(auto_describe=True)

#: Ports below this are privileged on POSIX (sshd, web servers): never ours to take.
MIN_PORT = 1024
MAX_PORT = 65535

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
TOPK_EXACT_FALLBACK = Counter(
    "faiss_topk_exact_fallback_queries",
    "Query rows for which the ANN index returned fewer than min(k, ntotal) hits (an HNSW graph "
    "reaching too few nodes, too few probed IVF lists), so faiss_topk ranked them by exact search "
    "over the stored vectors instead (a higher efSearch or nprobe avoids it).",
    ["family"],
    registry=COLLECTOR_REGISTRY,
)
RERANK_UNKNOWN_IDS = Counter(
    "faiss_rerank_unknown_ids",
    "Candidate ids passed to exact_rerank that the published index does not hold (dropped).",
    registry=COLLECTOR_REGISTRY,
)

@dataclasses.dataclass
class MetricsExporter:
    """A running HTTP exporter of :data:`COLLECTOR_REGISTRY`; ``server.server_address`` is the bound socket."""

    host: str
    port: int
    server: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop listening and forget this exporter, so :func:`serve` may start it again."""
        with _serve_lock:
            if _exporters.get((self.host, self.port)) is self:
                del _exporters[(self.host, self.port)]
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


_exporters: dict[tuple[str, int], MetricsExporter] = {}
_serve_lock = threading.Lock()


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow scraper does not block the next; daemon threads end with the process."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """wsgiref writes every request to stderr; scrapes every few seconds are not worth a line each."""


def _metrics_only(app: Any) -> Any:
    """The WSGI app, answering ``/metrics`` only (prometheus_client's answers every path)."""

    def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"only /metrics is served here\n"]
        return app(environ, start_response)

    return application


def exporter_address(settings: Settings) -> tuple[str, int]:
    """``(metrics_host, metrics_port)`` from the settings, checked again (a Settings may be built unchecked)."""
    host, port = settings.metrics_host, settings.metrics_port
    if not isinstance(host, str) or not host.strip():
        raise UdfError(
            f"metrics: setting metrics_host must be a host name or address such as '127.0.0.1', got {host!r}; "
            "fix or remove it"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
        raise UdfError(
            f"metrics: setting metrics_port must be an integer from {MIN_PORT} to {MAX_PORT}, got {port!r} "
            f"(ports below {MIN_PORT} are privileged and refused); set metrics_port to a free port such as "
            f"{field_default('metrics_port')}"
        )
    return host.strip(), port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(context: CatalogContext) -> MetricsExporter:
    """Start the HTTP exporter at the connection's ``metrics_host``:``metrics_port`` (once per address per process).

    For a command or host program, never for SQL: the address comes from settings, which only
    whoever runs the process controls.  Returns the running exporter; call ``close()`` to stop it.
    """
    host, port = exporter_address(context.settings)
    with _serve_lock:
        running = _exporters.get((host, port))
        if running is not None:
            return running
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        except socket.gaierror as error:
            raise UdfError(
                f"metrics: setting metrics_host {host!r} does not resolve ({error}); set it to an address "
                "such as '127.0.0.1'"
            ) from error
        server_class = type("MetricsServer", (_ThreadingWSGIServer,), {"address_family": family})
        try:
            server = make_server(host, port, _metrics_only(make_wsgi_app(COLLECTOR_REGISTRY)),
                                 server_class, handler_class=_QuietHandler)
        except OSError as error:
            raise UdfError(
                f"metrics: cannot listen on {host}:{port} ({error}); set metrics_port to a free port "
                f"(from {MIN_PORT} to {MAX_PORT})"
            ) from error
        thread = threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True)
        thread.start()
        exporter = MetricsExporter(host, port, server, thread)
        _exporters[(host, port)] = exporter
    if not _is_loopback(host):
        logger.warning("metrics exporter listens on %s, reachable beyond this machine (setting metrics_host)",
                       host)
    logger.info("serving Prometheus metrics at %s", exporter.url)
    return exporter


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
)

"""Timing helpers: interleaved runs, per-query latencies, and instrumented FAISS searches.

``timed_searches()`` records every ``LoadedIndex.search`` call made while its ``with`` block
runs (the UDFs' calls from DuckDB worker threads included), and ``spin_aware_searches()``
swaps in a prototype search for its block.  Both wrap the method only inside the block and
put the original back when the last one exits, so importing this module changes nothing and
no other benchmark (bench_families.py) ever sees a wrapped search.  The wrap has to be on the
class: the UDFs search through indexes that each connection loads into its own context,
which no benchmark can reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench import adapters
from bench.common import CORES, median


def interleaved(
    actions: dict[str, Callable[[], Any]], runs: int, warmup: int = 1, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Wall seconds per run of each action, run round-robin (order reversed every other round)
    so that noise from other processes on the machine falls on every action alike; ``cpu``
    collects this process's CPU seconds (all threads) per run."""
    for action in actions.values():
        for _ in range(warmup):
            action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for run in range(runs):
        for name in names if run % 2 == 0 else reversed(names):
            cpu_started = time.process_time()
            started = time.perf_counter()
            actions[name]()
            times[name].append(time.perf_counter() - started)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - cpu_started)
    return times


def pair_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios: robust to a noisy round hitting both sides."""
    return median(a / b for a, b in zip(numerator, denominator, strict=True))


def best_of(*series: list[float]) -> list[float]:
    """Per round, the fastest of several peers (faiss with 1 OpenMP thread or with all cores:
    on a loaded 2-core machine either can win, so the peer is whichever did)."""
    return [min(values) for values in zip(*series, strict=True)]


def latency_ms(
    action: Callable[[int], Any], query_rows: Iterable[int], warmup: int = 3
) -> tuple[list[float], list[Any]]:
    rows = list(query_rows)
    for row in rows[:warmup]:
        action(row)
    times, results = [], []
    for row in rows:
        started = time.perf_counter()
        results.append(action(row))
        times.append((time.perf_counter() - started) * 1000)
    return times, results


def latencies_interleaved(
    actions: dict[str, Callable[[int], Any]], query_rows: Iterable[int], warmup: int = 3
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """latency_ms for several actions, alternating per query so that load changes hit all alike."""
    rows = list(query_rows)
    for row in rows[:warmup]:
        for action in actions.values():
            action(row)
    times: dict[str, list[float]] = {name: [] for name in actions}
    results: dict[str, list[Any]] = {name: [] for name in actions}
    for row in rows:
        for name, action in actions.items():
            started = time.perf_counter()
            results[name].append(action(row))
            times[name].append((time.perf_counter() - started) * 1000)
    return times, results


def latency_summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": median(times), "p90_ms": float(np.percentile(times, 90)), "n": len(times)}


# --------------------------------------------------------------------------- instrumented searches


@dataclasses.dataclass(frozen=True)
class SearchCall:
    """One ``LoadedIndex.search``: the calling thread, rows searched, wall seconds."""

    thread: int
    rows: int
    seconds: float


@dataclasses.dataclass
class SearchTimer:
    """The search calls made while a :func:`timed_searches` block ran."""

    calls: list[SearchCall] = dataclasses.field(default_factory=list)


class _SearchHook:
    """The wrap of ``LoadedIndex.search``, installed while any block needs it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.original: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
        #: Whether ``search`` was the class's own attribute (else inherited: delete the wrap to restore).
        self.own_attribute = True
        self.timers: list[SearchTimer] = []
        self.spin_aware = 0


_HOOK = _SearchHook()
_spin_aware_in_flight = 0
_spin_aware_lock = threading.Lock()


def _spin_aware_search(loaded: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """LoadedIndex.search with OpenMP threads = usable cores // searches in flight, where a call on
    a DuckDB worker thread (not a Python thread) leaves one core to the Python thread that called
    execute(): DuckDB's Python client busy-waits there until the query finishes."""
    global _spin_aware_in_flight
    with _spin_aware_lock:
        _spin_aware_in_flight += 1
        in_flight = _spin_aware_in_flight
    try:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if loaded.metric == "cos":
            queries = queries.copy()
            faiss.normalize_L2(queries)
        on_duckdb_worker = isinstance(threading.current_thread(), threading._DummyThread)
        usable = max(1, CORES - (1 if on_duckdb_worker else 0))
        faiss.omp_set_num_threads(loaded.threads or max(1, usable // in_flight))
        distances, labels = loaded.index.search(queries, k)
        return (-distances if loaded.metric == "l2" else distances), labels
    finally:
        with _spin_aware_lock:
            _spin_aware_in_flight -= 1


def _hooked_search(self: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    original = _HOOK.original
    assert original is not None
    started = time.perf_counter()
    result = (_spin_aware_search if _HOOK.spin_aware else original)(self, queries, k)
    if _HOOK.timers:
        call = SearchCall(threading.get_ident(), len(queries), time.perf_counter() - started)
        for timer in list(_HOOK.timers):
            timer.calls.append(call)
    return result


@contextlib.contextmanager
def _search_hooked() -> Iterator[None]:
    """Keep the wrap installed for the block; the last block out restores the original method."""
    loaded_class = adapters.LoadedIndex
    with _HOOK.lock:
        if _HOOK.users == 0:
            _HOOK.own_attribute = "search" in vars(loaded_class)
            _HOOK.original = loaded_class.search
            loaded_class.search = _hooked_search  # type: ignore[method-assign]
        _HOOK.users += 1
    try:
        yield
    finally:
        with _HOOK.lock:
            _HOOK.users -= 1
            if _HOOK.users == 0:
                if _HOOK.own_attribute:
                    loaded_class.search = _HOOK.original  # type: ignore[method-assign]
                else:
                    del loaded_class.search
                _HOOK.original = None


@contextlib.contextmanager
def timed_searches() -> Iterator[SearchTimer]:
    """Record every ``LoadedIndex.search`` call made in this process while the block runs."""
    timer = SearchTimer()
    with _search_hooked():
        _HOOK.timers.append(timer)
        try:
            yield timer
        finally:
            _HOOK.timers.remove(timer)


@contextlib.contextmanager
def spin_aware_searches() -> Iterator[None]:
    """Run ``LoadedIndex.search`` as the spin-aware prototype (:func:`_spin_aware_search`) in the block."""
    with _search_hooked():
        _HOOK.spin_aware += 1
        try:
            yield
        finally:
            _HOOK.spin_aware -= 1


def thread_cpu_seconds(native_id: int) -> float:
    """CPU seconds (user + system) one thread of this process has used, from /proc."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def call_profile(action: Callable[[], Any]) -> dict[str, Any]:
    """One instrumented run: index.search calls made through the UDF (rows each, threads, seconds),
    and CPU seconds of the process and of the Python main thread (the one that called execute)."""
    main_thread = threading.main_thread().native_id or threading.get_native_id()
    with timed_searches() as timer:
        main_cpu = thread_cpu_seconds(main_thread)
        cpu = time.process_time()
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        main_cpu = thread_cpu_seconds(main_thread) - main_cpu
    calls = timer.calls
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "main_thread_cpu_s": main_cpu,
        "calls": len(calls),
        "threads": len({c.thread for c in calls}),
        "calls_on_main_thread": sum(1 for c in calls if c.thread == threading.main_thread().ident),
        "rows_per_call": sorted({c.rows for c in calls}),
        "search_s": sum(c.seconds for c in calls),
    }

"""FAISS as SQL: faiss_topk/faiss_search against direct faiss, DuckDB vss HNSW and brute-force SQL.

Datasets: clustered synthetic unit-norm vectors (``tests/conftest.py:synthetic_chunks``,
``--sizes`` rows plus a held-out pool of 10,000 query vectors from the same generator,
cached under ``bench/results/data/``; isotropic cluster noise, or with ``--noise real-spectrum``
the mean and covariance of the demo store's real embeddings) and the real demo store (``demo_catalog/``; queries
are its symbol names, embedded).  Each dataset is imported as its own catalog under
``bench/results/catalogs/`` with ``bootstrap.import_chunks``; FAISS indexes are built there
with ``bootstrap.build_index`` and reused by later runs (``--rebuild`` builds them again).
Recall@k is against exact numpy brute force over the same vectors (ties with the k-th
score count as hits: the demo store holds duplicate chunks).

Per dataset:

1. recall sweeps per FAISS family (``--families``, default the one ``auto`` picks, ivf_flat,
   ivf_sq, hnsw: nprobe, efSearch, k_factor_rf), each point measured through SQL
   (``faiss_topk`` over a TEMP table of queries, run as run_script runs it: DuckDB on one
   thread) and with ``index.search`` on the same numpy queries; the cheapest
   setting with recall@10 >= 0.95 is then measured again: batched faiss_topk in three
   thread settings, LATERAL faiss_search, one-statement single queries, against
   index.search on 1 and on all cores (runs interleaved, medians, per-run ratios);
2. overhead diagnostics on the ``auto`` family: DuckDB ``threads`` x ``faiss_threads``,
   query source (DuckDB table, Arrow table in one or in 2048-row batches), no unnest,
   LATERAL, the UDF's Python body without DuckDB, and a monkeypatched prototype of the
   suggested fix; CPU seconds per thread show the Python client's busy-wait;
3. IVF-PQ + ``exact_rerank`` through ``faiss_search(k_factor := 1, 2, 4, ...)``;
4. brute-force SQL (ORDER BY array_inner_product LIMIT, QUALIFY row_number) on a small
   sample, and DuckDB vss HNSW (metric 'ip', hnsw_ef_search sweep) in an in-memory
   DuckDB, with EXPLAIN checks that the index is really used.

Run from the repository root; results go to ``bench/results/search_<dataset>.json`` and
``bench/results/bench_search.md`` and the tables are printed:

    .venv/bin/python bench/bench_search.py --sizes 200000 1000000
    .venv/bin/python bench/bench_search.py --quick          # smoke run, a minute or two
    .venv/bin/python bench/bench_search.py --sizes 200000 1000000 --render-only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import bootstrap  # noqa: E402
from udfs import faiss_index, faiss_search  # noqa: E402
from udfs.context import CatalogContext  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "bench" / "results"
DEMO_CATALOG = PROJECT / "demo_catalog"
DIM = 384
K = 10
QUERY_POOL = 10_000
RECALL_TARGET = 0.95
CORES = os.cpu_count() or 1
# Grids step by about sqrt(2), for FAISS and vss alike, so "the fastest setting meeting the
# target" lands close to the target for every contender, not a doubling past it.
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EF_SEARCHES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# ivf_pq_refine sweeps k_factor_rf (RFlat's exact re-rank of k * k_factor_rf PQ candidates; build
# default 4) at a few nprobe: once nprobe covers the true neighbours' lists, PQ's candidate
# quality, not nprobe, bounds its recall.
REFINE_NPROBES = (8, 12, 16, 32)
REFINE_K_FACTORS = (4, 16, 64, 128, 192, 256, 384)
RERANK_K_FACTORS = (1, 2, 4, 8, 16, 32)
SYNTHETIC_FAMILIES = ["auto", "ivf_flat", "ivf_sq", "hnsw", "ivf_pq"]
VSS_EF_SEARCHES = EF_SEARCHES
# A sweep point whose batched run takes longer than this ends its sweep (the next is slower still).
SWEEP_POINT_LIMIT_S = 60.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing and recall


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


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def pair_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios: robust to a noisy round hitting both sides."""
    return median(a / b for a, b in zip(numerator, denominator, strict=True))


def best_of(*series: list[float]) -> list[float]:
    """Per round, the fastest of several peers (faiss with 1 OpenMP thread or with all cores:
    on this loaded 2-core machine either can win, so the peer is whichever did)."""
    return [min(values) for values in zip(*series, strict=True)]


def retrying(action: Callable[[], Any], what: str, attempts: int = 20) -> Any:
    """Run ``action``, retrying on CatalogError: other people edit sql/ and views/ while this runs,
    and a half-written macro file makes bootstrap.connect fail until its UDF lands."""
    for attempt in range(attempts):
        try:
            return action()
        except bootstrap.CatalogError as error:
            if attempt == attempts - 1:
                raise
            log(f"{what}: {error}; retrying in 30 s")
            time.sleep(30)
    raise AssertionError("unreachable")


def hits_matrix(query_ids: np.ndarray, chunk_ids: np.ndarray, nq: int, k: int = K) -> np.ndarray:
    """(nq, k) ids from (query_id, chunk_id) result rows, -1 where a query got fewer than k."""
    order = np.argsort(query_ids, kind="stable")
    query_ids, chunk_ids = query_ids[order], chunk_ids[order]
    position = np.arange(len(query_ids)) - np.searchsorted(query_ids, query_ids, side="left")
    labels = np.full((nq, k), -1, dtype=np.int64)
    keep = position < k
    labels[query_ids[keep], position[keep]] = chunk_ids[keep]
    return labels


def sql_hits(connection: duckdb.DuckDBPyConnection, sql: str, nq: int, id_column: str = "chunk_id") -> np.ndarray:
    table = connection.execute(sql).to_arrow_table()
    return hits_matrix(table.column("query_id").to_numpy(), table.column(id_column).to_numpy(), nq)


def exact_topk(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k ids with numpy (blocks keep the score matrix near 256 MB), and
    each query's k-th best score."""
    query_block = 256
    vector_block = max(1, (256 << 20) // (4 * query_block))
    result = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float32)
    for qs in range(0, len(queries), query_block):
        q = np.ascontiguousarray(queries[qs : qs + query_block], dtype=np.float32)
        best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(q), 0), dtype=np.int64)
        for vs in range(0, len(vectors), vector_block):
            scores = q @ np.asarray(vectors[vs : vs + vector_block], dtype=np.float32).T
            kk = min(k, scores.shape[1])
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
            best_rows = np.concatenate([best_rows, top + vs], axis=1)
            keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
        result[qs : qs + len(q)] = ids[best_rows]
        kth[qs : qs + len(q)] = best_scores[:, -1]
    return result, kth


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


def single_labels(results: list[Any], rows: list[int]) -> np.ndarray:
    """(len(rows), k) ids from one-query fetchall() results; rows must be 0..n-1 (a pool prefix)."""
    assert rows == list(range(len(rows)))
    labels = np.full((len(rows), K), -1, dtype=np.int64)
    for i, found in enumerate(results):
        found = [r[0] for r in found][:K]
        labels[i, : len(found)] = found
    return labels


# --------------------------------------------------------------------------- datasets


class Dataset:
    """A store (ids, vectors), its catalog, query vectors and their exact top-k."""

    def __init__(self, name: str, description: str, directory: Path, catalog: Path, real: bool) -> None:
        self.name = name
        self.description = description
        self.directory = directory
        self.catalog = catalog
        self.real = real
        self.ids: np.ndarray = np.load(directory / "ids.npy")
        self.vectors: np.ndarray = np.load(directory / "vectors.npy", mmap_mode="r")
        self.query_pool: np.ndarray = np.load(directory / "queries.npy")

    @property
    def n(self) -> int:
        return len(self.ids)

    def queries(self, count: int) -> np.ndarray:
        return np.ascontiguousarray(self.query_pool[:count], dtype=np.float32)

    def truth(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k ids of the first ``count`` pool queries and each one's k-th best score
        (cached in truth.npy and truth_kth.npy)."""
        count = min(count, len(self.query_pool))
        paths = self.directory / "truth.npy", self.directory / "truth_kth.npy"
        if all(p.exists() for p in paths) and len(np.load(paths[0], mmap_mode="r")) >= count:
            return np.load(paths[0])[:count], np.load(paths[1])[:count]
        log(f"{self.name}: exact numpy top-{K} for {count} queries over {self.n} vectors")
        started = time.perf_counter()
        ids, kth = exact_topk(self.queries(count), self.vectors, self.ids)
        log(f"  {count / (time.perf_counter() - started):.0f} queries/s")
        np.save(paths[0], ids)
        np.save(paths[1], kth)
        return ids, kth

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_order"):
            self._order = np.argsort(self.ids)
            self._sorted = self.ids[self._order]
        positions = np.minimum(np.searchsorted(self._sorted, chunk_ids), len(self._sorted) - 1)
        return self._order[positions]

    def recall(self, labels: np.ndarray) -> float:
        """Recall@k of ``labels`` (ids for the first len(labels) pool queries, -1 padded).

        A returned id counts when it is in the exact top-k, or when its exact score ties the
        k-th best (duplicate chunks in the demo store have identical embeddings, so which of
        them makes the top-k is arbitrary)."""
        nq = len(labels)
        truth, kth = self.truth(nq)
        exact = (labels[:, :, None] == truth[:, None, :]).any(axis=2)
        valid = labels >= 0
        rows = self.rows_of(np.where(valid, labels, self.ids[0]))
        found = self.ids[rows] == labels
        candidates = np.asarray(self.vectors[np.sort(np.unique(rows.ravel()))])
        lookup = np.searchsorted(np.sort(np.unique(rows.ravel())), rows)
        scores = np.einsum("nkd,nd->nk", candidates[lookup], self.queries(nq))
        tied = valid & found & ~exact & (scores >= kth[:, None] - 1e-5)
        return float(np.minimum((exact | tied).sum(axis=1), K).mean() / K)

    def store_table(self) -> pa.Table:
        return pa.table(
            {
                "id": pa.array(self.ids, pa.int64()),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(self.vectors).ravel(), pa.float32()), DIM),
            }
        )


def ensure_catalog(source_parquet: Path, catalog: Path) -> None:
    if bootstrap.current_store(catalog) is None:
        log(f"importing {source_parquet} into {catalog}")
        bootstrap.import_chunks(source_parquet, catalog)


def write_arrays(directory: Path, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> None:
    np.save(directory / "ids.npy", ids)
    np.save(directory / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(directory / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))


def real_spectrum_vectors(count: int, clusters: int, seed: int) -> tuple[np.ndarray, str]:
    """``count`` unit vectors in ``clusters`` clusters whose centres and offsets are drawn with the
    mean and covariance of real embeddings (the demo store's MiniLM vectors), and a description.

    Isotropic noise (``synthetic_chunks``) is product quantization's worst case; real embeddings
    concentrate in a few dozen directions, and this set does too."""
    store = bootstrap.current_store(DEMO_CATALOG)
    if store is None:
        raise SystemExit("the real-spectrum set needs the demo store: run `.venv/bin/python bootstrap.py demo` first")
    real = np.stack(
        pq.read_table(store / "chunks.parquet", columns=["embedding"]).column(0).to_numpy(zero_copy_only=False)
    ).astype(np.float32)
    eigenvalues, directions = np.linalg.eigh(np.cov((real - real.mean(axis=0)).T))
    eigenvalues = np.clip(eigenvalues, 0, None)
    factor = (directions * np.sqrt(eigenvalues)).astype(np.float32)  # factor @ factor.T = covariance
    rng = np.random.default_rng(seed)
    centres = real.mean(axis=0) + 0.8 * rng.standard_normal((clusters, DIM), dtype=np.float32) @ factor.T
    vectors = np.empty((count, DIM), np.float32)
    for start in range(0, count, 100_000):
        rows = min(100_000, count - start)
        block = centres[rng.integers(0, clusters, rows)]
        block += 0.6 * rng.standard_normal((rows, DIM), dtype=np.float32) @ factor.T
        vectors[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    participation = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    return vectors, (
        f"centres and offsets drawn with the mean and covariance of the demo store's {len(real)} MiniLM embeddings "
        f"(participation ratio {participation:.0f} of {DIM} dimensions)"
    )


def synthetic_dataset(n: int, clusters: int, seed: int, noise: str = "isotropic") -> Dataset:
    """``synthetic_chunks(n + QUERY_POOL)``: the first n rows are the store, the rest the queries;
    with ``noise='real-spectrum'`` the embeddings come from :func:`real_spectrum_vectors`."""
    name = f"synthetic_{n}" if noise == "isotropic" else f"spectrum_{n}"
    directory = RESULTS / "data" / f"{name}_d{DIM}_c{clusters}_s{seed}"
    catalog = RESULTS / "catalogs" / directory.name
    source = directory / "chunks.parquet"
    noise_note = directory / "noise.txt"
    if not (directory / "queries.npy").exists():
        from tests.conftest import synthetic_chunks

        log(f"generating {n} + {QUERY_POOL} synthetic vectors ({clusters} clusters, {noise} noise, seed {seed})")
        directory.mkdir(parents=True, exist_ok=True)
        table = synthetic_chunks(n + QUERY_POOL, DIM, clusters, seed)
        noise_note.write_text("isotropic noise")
        if noise == "real-spectrum":
            vectors, note = real_spectrum_vectors(n + QUERY_POOL, clusters, seed)
            noise_note.write_text(note)
            column = table.schema.get_field_index("embedding")
            embedding_type = table.schema.field(column).type
            table = table.set_column(column, "embedding", pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel(), pa.float32()), DIM).cast(embedding_type))
            del vectors
        store = table.slice(0, n)
        pq.write_table(store, source)
        embedding = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        write_arrays(directory, store.column("id").to_numpy(), embedding[:n], embedding[n:])
        del table, store, embedding
        gc.collect()
    ensure_catalog(source, catalog)
    description = (
        f"synthetic: {n:,} clustered unit-norm vectors, d={DIM}, {clusters} clusters "
        f"(tests/conftest.py synthetic_chunks, seed {seed}"
        + f"; {noise_note.read_text() if noise_note.exists() else 'isotropic noise'}"
        + "); queries: held-out vectors of the same generator"
    )
    return Dataset(name, description, directory, catalog, real=False)


def demo_dataset() -> Dataset | None:
    """The demo store (real MiniLM embeddings of stdlib code); queries are embedded symbol names."""
    store = bootstrap.current_store(DEMO_CATALOG)
    if store is None:
        log("no demo store: run `.venv/bin/python bootstrap.py demo` first; skipping the demo dataset")
        return None
    directory = RESULTS / "data" / "demo"
    catalog = RESULTS / "catalogs" / "demo"
    fingerprint = bootstrap.read_store_manifest(store)["fingerprint"]
    marker = directory / "fingerprint.txt"
    if not marker.exists() or marker.read_text() != fingerprint:
        log(f"copying the demo store {store} and embedding query texts")
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(catalog, ignore_errors=True)
        directory.mkdir(parents=True)
        shutil.copy(store / "chunks.parquet", directory / "chunks.parquet")
        ensure_catalog(directory / "chunks.parquet", catalog)
        connection = bootstrap.connect(catalog)
        try:
            table = connection.execute(
                "SELECT id, embedding FROM read_parquet(?) ORDER BY id", [str(directory / "chunks.parquet")]
            ).to_arrow_table()
            # Query texts a person might type: symbol names with underscores as spaces.
            texts = connection.execute(
                "SELECT DISTINCT trim(replace(s, '_', ' ')) AS text "
                "FROM (SELECT unnest(symbols) AS s FROM read_parquet(?)) WHERE length(trim(replace(s, '_', ' '))) > 2 "
                "ORDER BY hash(text) LIMIT ?",
                [str(directory / "chunks.parquet"), QUERY_POOL],
            ).to_arrow_table()
            connection.register("texts_arrow", texts)
            queries = connection.execute("SELECT embed(text) AS e FROM texts_arrow").to_arrow_table()
        finally:
            connection.close()
        vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        q = queries.column("e").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        write_arrays(directory, table.column("id").to_numpy(), vectors, q)
        (directory / "query_texts.json").write_text(json.dumps(texts.column("text").to_pylist()))
        marker.write_text(fingerprint)
    ensure_catalog(directory / "chunks.parquet", catalog)
    dataset = Dataset("demo", "", directory, catalog, real=True)
    dataset.description = (
        f"demo store: {dataset.n} real chunks of Python standard-library packages (MiniLM-L6 int8, d={DIM}); "
        f"queries: {len(dataset.query_pool)} embedded symbol names (tiny: every index is exact Flat)"
    )
    return dataset


# --------------------------------------------------------------------------- instrumentation

#: (thread id, rows, seconds) of every LoadedIndex.search call while RECORDING is set: how
#: DuckDB chunks and parallelises faiss_topk.  Wraps the method in this process only.
SEARCH_CALLS: list[tuple[int, int, float]] = []
RECORDING = threading.Event()
_original_search = faiss_index.LoadedIndex.search


#: While set, LoadedIndex.search runs _spin_aware_search: a prototype of a further fix.
SPIN_AWARE = threading.Event()
_spin_aware_in_flight = 0
_spin_aware_lock = threading.Lock()


def _spin_aware_search(self: faiss_index.LoadedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """LoadedIndex.search with OpenMP threads = usable cores // searches in flight, where a call on
    a DuckDB worker thread (not a Python thread) leaves one core to the Python thread that called
    execute(): DuckDB's Python client busy-waits there until the query finishes."""
    global _spin_aware_in_flight
    with _spin_aware_lock:
        _spin_aware_in_flight += 1
        in_flight = _spin_aware_in_flight
    try:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cos":
            queries = queries.copy()
            faiss.normalize_L2(queries)
        on_duckdb_worker = isinstance(threading.current_thread(), threading._DummyThread)
        usable = max(1, CORES - (1 if on_duckdb_worker else 0))
        faiss.omp_set_num_threads(self.threads or max(1, usable // in_flight))
        distances, labels = self.index.search(queries, k)
        return (-distances if self.metric == "l2" else distances), labels
    finally:
        with _spin_aware_lock:
            _spin_aware_in_flight -= 1


def _recording_search(self: faiss_index.LoadedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    started = time.perf_counter()
    result = (_spin_aware_search if SPIN_AWARE.is_set() else _original_search)(self, queries, k)
    if RECORDING.is_set():
        SEARCH_CALLS.append((threading.get_ident(), len(queries), time.perf_counter() - started))
    return result


faiss_index.LoadedIndex.search = _recording_search  # type: ignore[method-assign]


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
    SEARCH_CALLS.clear()
    main_thread = threading.main_thread().native_id or threading.get_native_id()
    RECORDING.set()
    try:
        main_cpu = thread_cpu_seconds(main_thread)
        cpu = time.process_time()
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        main_cpu = thread_cpu_seconds(main_thread) - main_cpu
    finally:
        RECORDING.clear()
    calls = list(SEARCH_CALLS)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "main_thread_cpu_s": main_cpu,
        "calls": len(calls),
        "threads": len({c[0] for c in calls}),
        "calls_on_main_thread": sum(1 for c in calls if c[0] == threading.main_thread().ident),
        "rows_per_call": sorted({c[1] for c in calls}),
        "search_s": sum(c[2] for c in calls),
    }


# --------------------------------------------------------------------------- FAISS builds


def ensure_builds(dataset: Dataset, families: list[str], rebuild: bool) -> dict[str, dict[str, Any]]:
    """One published-then-kept version per family (``auto`` first), reused across runs.

    ``bench_builds.json`` in the catalog maps a family to its version; a version built from
    another store fingerprint, or deleted, is built again.
    """
    registry_path = dataset.catalog / "bench_builds.json"
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {}
    fingerprint = faiss_index.store_fingerprint(dataset.catalog)
    versions = dataset.catalog / "index" / "versions"
    builds: dict[str, dict[str, Any]] = {}
    for family in families:
        entry = registry.get(family)
        usable = (
            entry is not None
            and not (rebuild and not entry.get("rebuilt_this_run"))
            and (versions / entry["version"] / faiss_index.MANIFEST_FILE).is_file()
            and entry["store_fingerprint"] == fingerprint
        )
        if usable:
            cached = not entry.get("rebuilt_this_run")
        else:
            log(f"{dataset.name}: building FAISS family {family} over {dataset.n} vectors")
            started = time.perf_counter()
            built = retrying(lambda f=family: bootstrap.build_index(dataset.catalog, f), "build_index")
            wall = time.perf_counter() - started
            entry = {
                "version": built["version"],
                "wall_s": round(wall, 2),
                "store_fingerprint": fingerprint,
                "built_on": datetime.date.today().isoformat(),
                # Other work shares the machine: the 1-minute load average after the build says how much.
                "load_average": round(os.getloadavg()[0], 1),
                "rebuilt_this_run": True,
            }
            cached = False
        manifest = json.loads((versions / entry["version"] / faiss_index.MANIFEST_FILE).read_text())
        if family == "auto" and registry.get(manifest["family"], {}).get("version") != entry["version"]:
            registry[manifest["family"]] = entry  # auto's choice serves that family too
        registry[family] = entry
        registry_path.write_text(
            json.dumps(
                {f: {k: v for k, v in e.items() if k != "rebuilt_this_run"} for f, e in registry.items()}, indent=2
            )
        )
        builds[family] = {**entry, "cached": cached, "manifest": manifest}
        log(
            f"  {family}: {manifest['factory']} version {entry['version']} "
            f"({'cached, ' if cached else ''}build {manifest['build_seconds']:.1f} s, wall {entry['wall_s']:.1f} s)"
        )
    return builds


def parameter_grid(family: str, nlist: int | None) -> list[list[str]]:
    """Sweep groups of ParameterSpace strings, cheapest first within each group."""
    if family == "flat":
        return [[""]]
    if family == "hnsw":
        return [[f"efSearch={ef}" for ef in EF_SEARCHES]]
    nprobes = [p for p in NPROBES if p < (nlist or 1)] + [nlist or 1]
    nprobes = sorted(set(p for p in nprobes if p <= NPROBES[-1]))
    if family in ("ivf_flat", "ivf_sq", "ivf_pq"):
        return [[f"nprobe={p}" for p in nprobes]]
    return [[f"nprobe={p},k_factor_rf={kf}" for kf in REFINE_K_FACTORS] for p in REFINE_NPROBES if p <= (nlist or 1)]


# --------------------------------------------------------------------------- FAISS through SQL


def topk_sql(source: str = "queries", k: int = K) -> str:
    return f"SELECT q.query_id, unnest(faiss_topk(q.embedding, {k}), recursive := true) FROM {source} AS q"


def lateral_sql(source: str = "queries", k_factor: float = 1.0) -> str:
    return (
        f"SELECT q.query_id, r.chunk_id FROM {source} AS q, "
        f"LATERAL faiss_search(q.embedding, k := {K}, k_factor := {k_factor}) AS r"
    )


def rerank_sql(k_factor: float, source: str = "queries") -> str:
    if k_factor == 1:
        return topk_sql(source)
    candidates = math.ceil(K * k_factor)
    return (
        f"SELECT q.query_id, unnest(exact_rerank(q.embedding, [h.chunk_id FOR h IN "
        f"faiss_topk(q.embedding, {candidates})], {K}, 'ip'), recursive := true) FROM {source} AS q"
    )


def register_queries(connection: duckdb.DuckDBPyConnection, name: str, queries: np.ndarray) -> pa.Table:
    table = pa.table(
        {
            "query_id": pa.array(np.arange(len(queries)), pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(queries.ravel(), pa.float32()), DIM),
        }
    )
    connection.register(f"{name}_arrow", table)
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow ORDER BY query_id")
    return table


class FaissBench:
    """The catalog connection (default settings), twin connections with faiss_threads fixed at
    1 and at the core count, and a direct LoadedIndex of the same version.

    A twin is a second catalog directory whose store/ and index/ are symlinks to this one:
    bootstrap.connect cannot open the same catalog twice in one process (the UDF names collide
    in DuckDB's instance cache), and faiss_threads is read when a connection loads the index."""

    def __init__(self, dataset: Dataset, queries: np.ndarray, args: argparse.Namespace) -> None:
        self.dataset = dataset
        self.queries = queries
        self.args = args
        settings = bootstrap.resolve_settings(dataset.catalog.resolve(), None)
        threads = settings.get("faiss_threads")
        #: How this checkout's default connection sizes faiss's OpenMP team.
        self.default_threads = "adaptive" if threads is None else str(threads)
        self.connection = retrying(lambda: bootstrap.connect(dataset.catalog), "connect")
        self.twin_dirs: list[Path] = []
        self.ft1 = self._twin("ft1", 1)
        self.ftn = self._twin("ftn", CORES)
        for connection in self.connections:
            register_queries(connection, "queries", queries)
        #: What run_script and the CLI run with DuckDB on one thread (bootstrap.core_owning_names).
        self.owners = bootstrap.core_owning_names(self.connection)
        self.context = CatalogContext(catalog_dir=dataset.catalog.resolve(), settings=settings)
        self.loaded: faiss_index.LoadedIndex | None = None
        self.params = ""

    def _twin(self, name: str, faiss_threads: int) -> duckdb.DuckDBPyConnection:
        directory = self.dataset.catalog.parent / f"{self.dataset.catalog.name}_{name}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for entry in ("store", "index"):
            (directory / entry).symlink_to((self.dataset.catalog / entry).resolve())
        self.twin_dirs.append(directory)
        return retrying(lambda: bootstrap.connect(directory, settings={"faiss_threads": faiss_threads}), "connect")

    @property
    def connections(self) -> tuple[duckdb.DuckDBPyConnection, ...]:
        return (self.connection, self.ft1, self.ftn)

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        for directory in self.twin_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.context.resources.clear()
        self.loaded = None

    def use(self, version: str) -> None:
        faiss_index.publish(self.dataset.catalog, version)
        self.loaded = faiss_index.load_current(self.context)
        for connection in self.connections:
            connection.execute("SELECT faiss_index_info()").fetchall()  # load it on the SQL side too
        self.params = ""

    def set_params(self, params: str) -> None:
        if params:
            assert self.loaded is not None
            self.loaded.set_parameters(params, "bench")
            for connection in self.connections:
                connection.execute("SELECT faiss_set_params(?)", [params]).fetchall()
        self.params = params

    def sql_with_threads(
        self, statement: str, threads: int, connection: duckdb.DuckDBPyConnection | None = None
    ) -> Callable[[], Any]:
        """An action running ``statement`` with DuckDB ``threads`` set, restoring the default after."""
        connection = connection or self.connection

        def run() -> Any:
            connection.execute(f"SET threads = {threads}")
            try:
                return connection.execute(statement).to_arrow_table()
            finally:
                connection.execute(f"SET threads = {CORES}")

        return run

    def direct(self, queries: np.ndarray | None = None, k: int = K, threads: int = CORES) -> np.ndarray:
        """``index.search`` on the numpy queries with faiss's own OpenMP threads (all cores by default)."""
        assert self.loaded is not None
        faiss.omp_set_num_threads(threads)
        return self.loaded.index.search(self.queries if queries is None else queries, k)[1]

    def sql(self, statement: str) -> pa.Table:
        """``statement`` as run_script and the CLI run it: DuckDB on one thread when it calls FAISS."""
        with bootstrap.core_owner_threads(self.connection, bootstrap.sql_words(statement), self.owners):
            return self.connection.execute(statement).to_arrow_table()

    def plain(self, statement: str) -> pa.Table:
        """``statement`` through a plain ``execute`` on the default connection (threads = all cores)."""
        return self.connection.execute(statement).to_arrow_table()

    def recall_of(self, statement: str) -> float:
        return self.dataset.recall(sql_hits(self.connection, statement, len(self.queries)))

    # ------------------------------------------------------------------ sweeps and best setting

    def sweep(self, family: str) -> list[dict[str, Any]]:
        assert self.loaded is not None
        nlist = self.loaded.manifest["build_parameters"].get("nlist")
        points = []
        for group in parameter_grid(family, nlist):
            met = False
            for params in group:
                self.set_params(params)
                recall_sql = self.recall_of(topk_sql())
                recall_direct = self.dataset.recall(self.direct())
                times = interleaved(
                    {
                        "sql": lambda: self.sql(topk_sql()),
                        "direct": self.direct,
                        "direct_1": lambda: self.direct(threads=1),
                    },
                    self.args.sweep_runs,
                    warmup=0,
                )
                nq = len(self.queries)
                peer = best_of(times["direct"], times["direct_1"])
                point = {
                    "params": params,
                    "recall": recall_sql,
                    "recall_direct": recall_direct,
                    "sql_qps": nq / median(times["sql"]),
                    "direct_qps": nq / median(peer),
                    "direct_all_cores_qps": nq / median(times["direct"]),
                    "direct_1thread_qps": nq / median(times["direct_1"]),
                    "ratio": pair_ratio(times["sql"], peer),
                }
                points.append(point)
                log(
                    f"    {params or '(exact)'}: recall@10 {recall_sql:.4f} (direct {recall_direct:.4f}), "
                    f"SQL {point['sql_qps']:.0f} q/s, direct {point['direct_qps']:.0f} q/s, ratio {point['ratio']:.2f}"
                )
                if met or median(times["sql"]) > SWEEP_POINT_LIMIT_S:
                    break  # one point past the first that meets the target shows the trade-off
                met = recall_sql >= RECALL_TARGET
        return points

    def best_point(self, points: list[dict[str, Any]]) -> dict[str, Any]:
        """The cheapest setting meeting the target: per sweep group the first point that meets it
        (cost grows with nprobe and efSearch, so it is the fastest; picking by measured QPS would
        let a noisy run choose a dearer setting), then the group with the highest SQL QPS."""
        first_meeting: dict[str, dict[str, Any]] = {}
        for point in points:
            group = point["params"].partition(",")[0] if "k_factor_rf" in point["params"] else ""
            if point["recall"] >= RECALL_TARGET and group not in first_meeting:
                first_meeting[group] = point
        if first_meeting:
            return {**max(first_meeting.values(), key=lambda p: p["sql_qps"]), "target_met": True}
        return {**max(points, key=lambda p: p["recall"]), "target_met": False}

    def measure_best(self, params: str) -> dict[str, Any]:
        """At one setting: faiss_topk and LATERAL faiss_search batches against index.search,
        interleaved; then one-statement single-query latency against a 1-row index.search."""
        self.set_params(params)
        nq = len(self.queries)
        times = interleaved(
            {
                "topk": lambda: self.sql(topk_sql()),
                "topk_plain": lambda: self.plain(topk_sql()),
                "topk_ft1": self.sql_with_threads(topk_sql(), CORES, self.ft1),
                "topk_threads1_ftN": self.sql_with_threads(topk_sql(), 1, self.ftn),
                "lateral": lambda: self.sql(lateral_sql()),
                "direct": self.direct,
                "direct_1thread": lambda: self.direct(threads=1),
            },
            self.args.runs,
        )
        peer = best_of(times["direct"], times["direct_1thread"])
        rows = list(range(min(self.args.single_queries, nq)))
        one_statement = (
            f"SELECT chunk_id FROM faiss_search((SELECT embedding FROM queries WHERE query_id = {{row}}), k := {K})"
        )

        def set_variable_then_search(row: int) -> list[Any]:
            self.connection.execute(f"SET VARIABLE q = (SELECT embedding FROM queries WHERE query_id = {row})")
            return self.connection.execute(f"SELECT chunk_id FROM faiss_search(getvariable('q'), k := {K})").fetchall()

        def direct_single_query(row: int) -> Any:
            faiss.omp_set_num_threads(1)
            return self.loaded.index.search(self.queries[row : row + 1], K)

        latencies, results = latencies_interleaved(
            {
                "one_statement": lambda row: self.connection.execute(one_statement.format(row=row)).fetchall(),
                "variable": set_variable_then_search,
                "direct": direct_single_query,
            },
            rows,
        )
        single, found, single_variable, direct_single = (
            latencies["one_statement"],
            results["one_statement"],
            latencies["variable"],
            latencies["direct"],
        )
        return {
            "params": params,
            "default_faiss_threads": self.default_threads,
            "recall": self.recall_of(topk_sql()),
            "recall_lateral": self.recall_of(lateral_sql()),
            "recall_single": self.dataset.recall(single_labels(found, rows)),
            "topk_qps": nq / median(times["topk"]),
            "lateral_qps": nq / median(times["lateral"]),
            "direct_qps": nq / median(peer),
            "direct_all_cores_qps": nq / median(times["direct"]),
            "direct_1thread_qps": nq / median(times["direct_1thread"]),
            "overhead_ratio": pair_ratio(times["topk"], peer),
            "overhead_ratio_lateral": pair_ratio(times["lateral"], peer),
            "overhead_ratio_all_cores": pair_ratio(times["topk"], times["direct"]),
            "overhead_ratio_1thread": pair_ratio(times["topk"], times["direct_1thread"]),
            "topk_plain_qps": nq / median(times["topk_plain"]),
            "overhead_ratio_plain": pair_ratio(times["topk_plain"], peer),
            "topk_ft1_qps": nq / median(times["topk_ft1"]),
            "overhead_ratio_ft1": pair_ratio(times["topk_ft1"], peer),
            "topk_threads1_ftN_qps": nq / median(times["topk_threads1_ftN"]),
            "overhead_ratio_threads1_ftN": pair_ratio(times["topk_threads1_ftN"], peer),
            "single_sql": latency_summary(single),
            "single_sql_variable": latency_summary(single_variable),
            "single_direct": latency_summary(direct_single),
            "profile_topk": call_profile(lambda: self.sql(topk_sql())),
            "profile_lateral": call_profile(lambda: self.sql(lateral_sql())),
        }

    # ------------------------------------------------------------------ overhead diagnostics

    def overhead_matrix(self, params: str, queries: np.ndarray) -> list[dict[str, Any]]:
        """faiss_topk over ``queries`` in several DuckDB/faiss thread settings and query sources."""
        try:
            nq = len(queries)
            arrow = None
            for connection in self.connections:
                arrow = register_queries(connection, "oq", queries)
                connection.register("oq_arrow_2048", pa.Table.from_batches(arrow.to_batches(max_chunksize=2048)))
            del arrow
            self.set_params(params)

            def sql(connection: duckdb.DuckDBPyConnection, threads: int, statement: str) -> Callable[[], Any]:
                return self.sql_with_threads(statement, threads, connection)

            def spin_aware(action: Callable[[], Any]) -> Callable[[], Any]:
                def run() -> Any:
                    SPIN_AWARE.set()
                    try:
                        return action()
                    finally:
                        SPIN_AWARE.clear()

                return run

            # What DuckDB hands the UDF: FLOAT[] lists (ARRAY cast to LIST), chunks of 2048 rows.
            embedding = pa.array(queries.ravel(), pa.float32())
            as_lists = pa.ListArray.from_arrays(pa.array(np.arange(0, nq * DIM + 1, DIM, dtype=np.int32)), embedding)
            arrow_chunks = [as_lists.slice(start, 2048) for start in range(0, nq, 2048)]
            main, n, ft = self.connection, CORES, f"faiss_threads={self.default_threads}"
            configs: list[tuple[str, Callable[[], Any], bool]] = [
                (f"direct index.search, faiss OpenMP threads = {n}", lambda: self.direct(queries), False),
                ("direct index.search, faiss OpenMP threads = 1", lambda: self.direct(queries, threads=1), False),
                (f"SQL default: threads={n}, {ft}, DuckDB table", sql(main, n, topk_sql("oq")), True),
                (f"SQL threads={n}, {ft}, Arrow table (1 batch)", sql(main, n, topk_sql("oq_arrow")), True),
                (
                    f"SQL threads={n}, {ft}, Arrow table (2048-row batches)",
                    sql(main, n, topk_sql("oq_arrow_2048")),
                    True,
                ),
                (f"SQL threads=1, {ft}, DuckDB table", sql(main, 1, topk_sql("oq")), True),
                (f"SQL threads={n}, faiss_threads=1, DuckDB table", sql(self.ft1, n, topk_sql("oq")), True),
                (
                    f"SQL threads={n}, faiss_threads=1, Arrow table (2048-row batches)",
                    sql(self.ft1, n, topk_sql("oq_arrow_2048")),
                    True,
                ),
                ("SQL threads=1, faiss_threads=1, DuckDB table", sql(self.ft1, 1, topk_sql("oq")), True),
                (f"SQL threads=1, faiss_threads={n}, DuckDB table", sql(self.ftn, 1, topk_sql("oq")), True),
                (f"SQL threads={n}, faiss_threads={n}, DuckDB table", sql(self.ftn, n, topk_sql("oq")), True),
                (
                    f"SQL threads={n}, faiss_threads={n}, Arrow table (2048-row batches)",
                    sql(self.ftn, n, topk_sql("oq_arrow_2048")),
                    True,
                ),
                (
                    "SQL default, no unnest: sum(len(faiss_topk(...)))",
                    sql(main, n, f"SELECT sum(len(faiss_topk(q.embedding, {K}))) AS hits FROM oq AS q"),
                    True,
                ),
                ("SQL default, LATERAL faiss_search", sql(main, n, lateral_sql("oq")), True),
                (
                    f"faiss_topk's Python body on Arrow, no DuckDB (2048-row chunks, {ft})",
                    lambda: self.udf_body(arrow_chunks),
                    True,
                ),
                (
                    f"SQL threads={n}, prototype: adaptive minus the core the caller spins on, DuckDB table",
                    spin_aware(sql(main, n, topk_sql("oq"))),
                    True,
                ),
                (
                    f"SQL threads={n}, prototype: adaptive minus the core the caller spins on, Arrow 2048-row batches",
                    spin_aware(sql(main, n, topk_sql("oq_arrow_2048"))),
                    True,
                ),
            ]
            cpu: dict[str, list[float]] = {}
            times = interleaved({name: action for name, action, _ in configs}, self.args.runs, cpu=cpu)
            all_cores, one_thread = times[configs[0][0]], times[configs[1][0]]
            peer = best_of(all_cores, one_thread)
            rows = []
            for name, action, through_udf in configs:
                row = {
                    "config": name,
                    "median_s": median(times[name]),
                    "qps": nq / median(times[name]),
                    "ratio": pair_ratio(times[name], peer),
                    "ratio_all_cores": pair_ratio(times[name], all_cores),
                    "cpu_s": median(cpu[name]),
                }
                if through_udf:
                    row["profile"] = call_profile(action)
                rows.append(row)
                log(
                    f"    {name}: {row['median_s']:.3f} s, ratio {row['ratio']:.2f}"
                    + (
                        f", {row['profile']['calls']} calls on {row['profile']['threads']} thread(s), "
                        f"search {row['profile']['search_s']:.3f} s, main-thread CPU "
                        f"{row['profile']['main_thread_cpu_s']:.2f} s"
                        if through_udf
                        else ""
                    )
                )
            return rows
        finally:
            for connection in self.connections:
                connection.execute(f"SET threads = {CORES}")
                connection.unregister("oq_arrow_2048")
                connection.unregister("oq_arrow")
                connection.execute("DROP TABLE IF EXISTS oq")

    def udf_body(self, chunks: list[pa.Array]) -> list[pa.Array]:
        """faiss_search.faiss_topk called from Python per chunk: the UDF's own Arrow work, no DuckDB."""
        return [
            faiss_search.faiss_topk(
                self.context,
                pa.chunked_array([chunk]),
                pa.chunked_array([pa.array(np.full(len(chunk), K, dtype=np.int32))]),
            )
            for chunk in chunks
        ]

    # ------------------------------------------------------------------ IVF-PQ + exact_rerank

    def direct_rerank(self, k_factor: float, threads: int = CORES) -> np.ndarray:
        """The peer of faiss_search(k_factor): index.search for ceil(k*k_factor), exact numpy re-rank."""
        assert self.loaded is not None
        candidates = math.ceil(K * k_factor)
        labels = self.direct(k=candidates, threads=threads)
        if k_factor == 1:
            return labels
        rows, found = self.loaded.rows_of(labels)
        scores = np.einsum(
            "nkd,nd->nk", np.asarray(self.loaded.vectors[rows.ravel()]).reshape(*rows.shape, DIM), self.queries
        )
        scores[~found] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        return np.take_along_axis(labels, top, axis=1)

    def rerank_body(self, k_factor: float) -> list[pa.Array]:
        """index.search, then faiss_search.exact_rerank called from Python per 2048-row chunk
        (the UDF's own work on Arrow, no DuckDB): separates exact_rerank's cost from DuckDB's."""
        labels = self.direct(k=math.ceil(K * k_factor), threads=1)
        nq = len(self.queries)
        out = []
        for start in range(0, nq, 2048):
            q = self.queries[start : start + 2048]
            c = labels[start : start + 2048]
            offsets = pa.array(np.arange(0, len(q) * DIM + 1, DIM, dtype=np.int32))
            cand_offsets = pa.array(np.arange(0, c.size + 1, c.shape[1], dtype=np.int32))
            out.append(
                faiss_search.exact_rerank(
                    self.context,
                    pa.chunked_array([pa.ListArray.from_arrays(offsets, pa.array(q.ravel(), pa.float32()))]),
                    pa.chunked_array([pa.ListArray.from_arrays(cand_offsets, pa.array(c.ravel(), pa.int64()))]),
                    pa.chunked_array([pa.array(np.full(len(q), K, dtype=np.int32))]),
                    pa.chunked_array([pa.array(["ip"] * len(q))]),
                )
            )
        return out

    def rerank(self, params: str) -> list[dict[str, Any]]:
        self.set_params(params)
        nq = len(self.queries)
        rows = list(range(min(self.args.single_queries, nq)))
        results = []
        for k_factor in RERANK_K_FACTORS:
            times = interleaved(
                {
                    "select": lambda kf=k_factor: self.sql(rerank_sql(kf)),
                    "lateral": lambda kf=k_factor: self.sql(lateral_sql(k_factor=kf)),
                    "direct": lambda kf=k_factor: self.direct_rerank(kf),
                    "direct_1": lambda kf=k_factor: self.direct_rerank(kf, threads=1),
                    "body": lambda kf=k_factor: self.rerank_body(kf),
                },
                self.args.runs,
            )
            peer = best_of(times["direct"], times["direct_1"])
            one_statement = (
                "SELECT chunk_id FROM faiss_search((SELECT embedding FROM queries WHERE query_id = {row}), "
                f"k := {K}, k_factor := {k_factor})"
            )
            single, found = latency_ms(
                lambda row, s=one_statement: self.connection.execute(s.format(row=row)).fetchall(), rows
            )
            result = {
                "k_factor": k_factor,
                "params": params,
                "recall": self.recall_of(rerank_sql(k_factor)),
                "recall_lateral": self.recall_of(lateral_sql(k_factor=k_factor)),
                "recall_direct": self.dataset.recall(self.direct_rerank(k_factor)),
                "recall_single": self.dataset.recall(single_labels(found, rows)),
                "select_qps": nq / median(times["select"]),
                "lateral_qps": nq / median(times["lateral"]),
                "direct_qps": nq / median(peer),
                "body_qps": nq / median(times["body"]),
                "ratio": pair_ratio(times["select"], peer),
                "single_sql": latency_summary(single),
            }
            results.append(result)
            log(
                f"    k_factor {k_factor}: recall@10 {result['recall']:.4f}, "
                f"select-list {result['select_qps']:.0f} q/s, "
                f"LATERAL {result['lateral_qps']:.0f} q/s, direct {result['direct_qps']:.0f} q/s, "
                f"single {result['single_sql']['median_ms']:.2f} ms"
            )
        return results


def faiss_phase(dataset: Dataset, args: argparse.Namespace, results: dict[str, Any]) -> None:
    families = ["auto"] if dataset.real else args.families
    builds = ensure_builds(dataset, families, args.rebuild)
    queries = dataset.queries(args.queries)
    dataset.truth(args.queries)  # the overhead diagnostics need no recall, so no truth beyond --queries
    bench = FaissBench(dataset, queries, args)
    faiss_results: dict[str, Any] = {}
    results["faiss"] = faiss_results
    results["queries"] = len(queries)
    try:
        measured: set[str] = set()
        for label in families:
            build = builds[label]
            family = build["manifest"]["family"]
            if family in measured or (label == "ivf_pq"):
                continue  # auto already measured this family; ivf_pq is the re-rank section's
            measured.add(family)
            log(f"{dataset.name}: FAISS {family} ({build['manifest']['factory']}), sweep over {len(queries)} queries")
            bench.use(build["version"])
            points = bench.sweep(family)
            best = bench.best_point(points)
            log(
                f"  best: {best['params'] or '(exact)'} recall {best['recall']:.4f}; measuring batched and single-query"
            )
            final = bench.measure_best(best["params"])
            faiss_results[family] = {
                "label": f"auto -> {family}" if label == "auto" else family,
                "factory": build["manifest"]["factory"],
                "version": build["version"],
                "family_reason": build["manifest"]["family_reason"],
                "build_s": build["manifest"]["build_seconds"],
                "build_wall_s": build["wall_s"],
                "build_cached": build["cached"],
                "build_load_average": build.get("load_average"),
                "build_threads": min(CORES, 1 + dataset.n // 50_000),
                "sweep": points,
                "target_met": best["target_met"],
                "best": final,
            }
            if label == "auto":
                overhead_queries = dataset.queries(min(args.overhead_queries, len(dataset.query_pool)))
                log(
                    f"{dataset.name}: overhead diagnostics on {family} at {best['params'] or '(exact)'}, "
                    f"{len(overhead_queries)} queries"
                )
                results["overhead"] = {
                    "family": family,
                    "params": best["params"],
                    "queries": len(overhead_queries),
                    "rows": bench.overhead_matrix(best["params"], overhead_queries),
                }
            save(dataset, results)
        if "ivf_pq" in builds:
            build = builds["ivf_pq"]
            ivf_flat = faiss_results.get("ivf_flat")
            nprobe = ivf_flat["best"]["params"] if ivf_flat else "nprobe=16"
            log(
                f"{dataset.name}: IVF-PQ ({build['manifest']['factory']}) + exact_rerank at {nprobe} "
                "(the nprobe IVF-Flat needed for the target)"
            )
            bench.use(build["version"])
            results["rerank"] = {
                "factory": build["manifest"]["factory"],
                "build_s": build["manifest"]["build_seconds"],
                "rows": bench.rerank(nprobe),
            }
            save(dataset, results)
    finally:
        bench.close()
        gc.collect()


# --------------------------------------------------------------------------- brute-force SQL and vss


def plan_text(connection: duckdb.DuckDBPyConnection, statement: str) -> str:
    return "\n".join(row[1] for row in connection.execute("EXPLAIN " + statement).fetchall())


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + f"]::FLOAT[{DIM}]"


def sql_baselines_phase(dataset: Dataset, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Brute-force SQL and DuckDB vss HNSW over the same vectors, in an in-memory DuckDB."""
    queries = dataset.queries(args.queries)
    nq = len(queries)
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    try:
        bootstrap.load_extensions(connection)
        connection.execute(f"SET threads = {CORES}")
        connection.execute("SET enable_progress_bar = false")
        items = dataset.store_table()
        connection.register("items_arrow", items)
        connection.execute("CREATE TABLE items AS SELECT id, v FROM items_arrow")
        connection.unregister("items_arrow")
        del items
        register_queries(connection, "queries", queries)

        # ---- brute force: ORDER BY ... LIMIT per query, QUALIFY row_number() for a batch
        sample = min(args.brute_queries, nq)
        if sample:
            log(f"{dataset.name}: brute-force SQL on {sample} queries")
            single_statement = (
                f"SELECT id FROM items ORDER BY array_inner_product(v, (SELECT embedding FROM queries "
                f"WHERE query_id = {{row}})) DESC LIMIT {K}"
            )
            batch_statement = (
                f"SELECT query_id, id FROM (SELECT q.query_id, c.id, array_inner_product(c.v, q.embedding) AS score "
                f"FROM queries AS q, items AS c WHERE q.query_id < {sample}) "
                f"QUALIFY row_number() OVER (PARTITION BY query_id ORDER BY score DESC) <= {K}"
            )
            rows = list(range(sample))
            single, found = latency_ms(
                lambda row: connection.execute(single_statement.format(row=row)).fetchall(), rows, warmup=1
            )
            batch_times = interleaved(
                {"batch": lambda: connection.execute(batch_statement).to_arrow_table()}, max(1, args.runs // 2)
            )["batch"]
            batch_hits = sql_hits(connection, batch_statement, sample, id_column="id")
            started = time.perf_counter()
            numpy_sample = min(nq, 256)
            exact_topk(queries[:numpy_sample], dataset.vectors, dataset.ids)  # the peer: numpy, no index
            numpy_s = time.perf_counter() - started
            results["brute"] = {
                "queries": sample,
                "recall_single": dataset.recall(single_labels(found, rows)),
                "recall_batch": dataset.recall(batch_hits[:sample]),
                "single_sql": latency_summary(single),
                "batch_qps": sample / median(batch_times),
                "numpy_queries": numpy_sample,
                "numpy_qps": numpy_sample / numpy_s,
                "plans_without_hnsw": not any(
                    "HNSW" in plan_text(connection, s) for s in (single_statement.format(row=0), batch_statement)
                ),
            }
            log(
                f"  single {results['brute']['single_sql']['median_ms']:.1f} ms, "
                f"batch {results['brute']['batch_qps']:.1f} q/s, "
                f"numpy {results['brute']['numpy_qps']:.0f} q/s"
            )
            save(dataset, results)

        if args.skip_vss:
            return
        # ---- vss HNSW (defaults M=16, ef_construction=128), metric ip
        log(f"{dataset.name}: vss HNSW build over {dataset.n} vectors")
        started = time.perf_counter()
        connection.execute("CREATE INDEX items_hnsw ON items USING HNSW (v) WITH (metric = 'ip')")
        build_s = time.perf_counter() - started
        log(f"  built in {build_s:.1f} s")
        vss: dict[str, Any] = {
            "build_s": build_s,
            "build_load_average": round(os.getloadavg()[0], 1),
            "options": "metric='ip', M=16, ef_construction=128 (vss defaults)",
            "threads": CORES,
        }
        results["vss"] = vss
        save(dataset, results)
        batch = (
            f"SELECT q.query_id, r.id FROM queries AS q, LATERAL (SELECT c.id FROM items AS c "
            f"ORDER BY array_negative_inner_product(c.v, q.embedding) LIMIT {K}) AS r"
        )
        variable_statement = (
            f"SELECT id FROM items ORDER BY array_negative_inner_product(v, getvariable('q')::FLOAT[{DIM}]) LIMIT {K}"
        )
        connection.execute("SET VARIABLE q = (SELECT embedding FROM queries WHERE query_id = 0)")
        vss["plans"] = {
            "lateral_default_optimizers": "HNSW_INDEX_JOIN" in plan_text(connection, batch),
            "single_variable": "HNSW_INDEX_SCAN" in plan_text(connection, variable_statement),
            "single_literal": "HNSW_INDEX_SCAN"
            in plan_text(
                connection,
                f"SELECT id FROM items ORDER BY array_negative_inner_product(v, {vector_literal(queries[0])}) "
                f"LIMIT {K}",
            ),
            "single_subquery": "HNSW_INDEX_SCAN"
            in plan_text(
                connection,
                "SELECT id FROM items ORDER BY array_negative_inner_product(v, (SELECT embedding FROM queries "
                f"WHERE query_id = 0)) LIMIT {K}",
            ),
            "ip_desc_variable": "HNSW_INDEX_SCAN"
            in plan_text(
                connection,
                f"SELECT id FROM items ORDER BY array_inner_product(v, getvariable('q')::FLOAT[{DIM}]) DESC LIMIT {K}",
            ),
        }
        # The LATERAL batch with the default optimizers is a brute-force plan: time it on the small sample.
        if sample and not vss["plans"]["lateral_default_optimizers"]:
            silent = batch.replace(
                "FROM queries AS q,", f"FROM (SELECT * FROM queries WHERE query_id < {sample}) AS q,"
            )
            started = time.perf_counter()
            silent_hits = sql_hits(connection, silent, sample, id_column="id")
            vss["silent_brute_force"] = {
                "queries": sample,
                "qps": sample / (time.perf_counter() - started),
                "recall": dataset.recall(silent_hits),
            }
        connection.execute("SET disabled_optimizers = 'top_n_window_elimination'")
        vss["plans"]["lateral_without_top_n_window_elimination"] = "HNSW_INDEX_JOIN" in plan_text(connection, batch)
        log(f"  plans: {vss['plans']}")
        if not vss["plans"]["lateral_without_top_n_window_elimination"]:
            log("  WARNING: the vss LATERAL batch does not use the HNSW index; its timings are brute force")
        points = []
        met = False
        for ef in VSS_EF_SEARCHES:
            connection.execute(f"SET hnsw_ef_search = {ef}")
            recall = dataset.recall(sql_hits(connection, batch, nq, id_column="id"))
            times = interleaved(
                {"batch": lambda: connection.execute(batch).to_arrow_table()}, args.sweep_runs, warmup=0
            )["batch"]
            points.append({"params": f"hnsw_ef_search={ef}", "ef": ef, "recall": recall, "sql_qps": nq / median(times)})
            log(f"    hnsw_ef_search={ef}: recall@10 {recall:.4f}, {nq / median(times):.0f} q/s")
            if met or median(times) > SWEEP_POINT_LIMIT_S:
                break
            met = recall >= RECALL_TARGET
        vss["sweep"] = points
        meeting = [p for p in points if p["recall"] >= RECALL_TARGET]
        best = meeting[0] if meeting else max(points, key=lambda p: p["recall"])  # smallest ef meeting the target
        vss["target_met"] = bool(meeting)
        connection.execute(f"SET hnsw_ef_search = {best['ef']}")
        times = interleaved({"batch": lambda: connection.execute(batch).to_arrow_table()}, args.runs)["batch"]
        rows = list(range(min(args.single_queries, nq)))

        def set_variable_then_search(row: int) -> list[Any]:
            connection.execute(f"SET VARIABLE q = (SELECT embedding FROM queries WHERE query_id = {row})")
            return connection.execute(variable_statement).fetchall()

        latencies, results = latencies_interleaved(
            {
                "variable": set_variable_then_search,
                "literal": lambda row: connection.execute(
                    "SELECT id FROM items ORDER BY array_negative_inner_product(v, "
                    f"{vector_literal(queries[row])}) LIMIT {K}"
                ).fetchall(),
            },
            rows,
        )
        single_variable, found = latencies["variable"], results["variable"]
        single_literal, found_literal = latencies["literal"], results["literal"]
        vss["best"] = {
            "params": best["params"],
            "recall": dataset.recall(sql_hits(connection, batch, nq, id_column="id")),
            "lateral_qps": nq / median(times),
            "recall_single": dataset.recall(single_labels(found, rows)),
            "recall_single_literal": dataset.recall(single_labels(found_literal, rows)),
            "single_sql_variable": latency_summary(single_variable),
            "single_sql_literal": latency_summary(single_literal),
        }
        log(
            f"  best {best['params']}: recall {vss['best']['recall']:.4f}, {vss['best']['lateral_qps']:.0f} q/s, "
            f"single {vss['best']['single_sql_variable']['median_ms']:.2f} ms"
        )
        save(dataset, results)
    finally:
        connection.close()
        gc.collect()


# --------------------------------------------------------------------------- results and tables


def result_path(name: str) -> Path:
    return RESULTS / f"search_{name}.json"


def save(dataset: Dataset, results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_path(dataset.name).write_text(json.dumps(results, indent=1, default=str))


def run_metadata(args: argparse.Namespace) -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    bootstrap.load_extensions(connection)
    vss_version = connection.execute(
        "SELECT extension_version FROM duckdb_extensions() WHERE extension_name = 'vss'"
    ).fetchone()
    connection.close()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{CORES} cores ({cpu}), {memory_gib:.0f} GiB RAM, no GPU, {platform.system()} "
        f"{platform.release()}; shared with other work (load average at start "
        f"{os.getloadavg()[0]:.1f})",
        "libraries": {
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "vss": vss_version[0] if vss_version else "?",
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
        },
        "command": ".venv/bin/python bench/bench_search.py " + " ".join(sys.argv[1:]),
        "queries": args.queries,
        "single_queries": args.single_queries,
        "brute_queries": args.brute_queries,
        "runs": args.runs,
        "sweep_runs": args.sweep_runs,
        "overhead_queries": args.overhead_queries,
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ms(summary: dict[str, float] | None) -> str:
    return "-" if not summary else f"{summary['median_ms']:.2f}"


def load_note(load: float | None) -> str:
    return "" if load is None else f" (load {load:.1f})"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_dataset(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"#### {results['dataset']}: {results['description']}", ""]
    out.append(
        f"{results.get('queries', meta['queries']):,} queries per batch, k = {K}, "
        f"recall@{K} against exact numpy brute force; "
        f"single-query latency = median over {meta['single_queries']} queries, one SQL statement each "
        f"(the query vector read by a scalar subquery from a TEMP table, never bound as a list); "
        f"batched = median of {meta['runs']} runs. {meta['date']}."
    )
    out.append("")
    faiss_results = results.get("faiss", {})
    vss = results.get("vss")
    brute = results.get("brute")
    vss_qps = vss["best"]["lateral_qps"] if vss and "best" in vss else None
    vss_ms = vss["best"]["single_sql_variable"]["median_ms"] if vss and "best" in vss else None

    # ---- headline: fastest setting meeting the target, per contender
    rows = []
    for entry in faiss_results.values():
        best = entry["best"]
        flag = "" if entry["target_met"] else " (target not reached)"
        rows.append(
            [
                f"FAISS {entry['label']} `{entry['factory']}`, faiss_topk batch (run_script) / faiss_search single",
                f"{best['params'] or 'exact'}{flag}",
                fmt(best["recall"], 4),
                fmt(best["topk_qps"]),
                fmt(best["topk_qps"] / vss_qps, 2) if vss_qps else "-",
                ms(best["single_sql"]),
                fmt(best["single_sql"]["median_ms"] / vss_ms, 2) if vss_ms else "-",
                f"{entry['build_s']:.1f}" + load_note(entry.get("build_load_average")),
            ]
        )
    if vss and "best" in vss:
        best = vss["best"]
        rows.append(
            [
                f"DuckDB vss HNSW ({vss['options']}), LATERAL batch / ORDER BY LIMIT single",
                best["params"] + ("" if vss["target_met"] else " (target not reached)"),
                fmt(best["recall"], 4),
                fmt(best["lateral_qps"]),
                "1.00",
                ms(best["single_sql_variable"]),
                "1.00",
                f"{vss['build_s']:.1f}" + load_note(vss.get("build_load_average")),
            ]
        )
    elif vss:
        rows.append(["DuckDB vss HNSW", "build only", "-", "-", "-", "-", "-", f"{vss['build_s']:.1f}"])
    if brute:
        rows.append(
            [
                f"brute-force SQL array_inner_product ({brute['queries']} queries): "
                "QUALIFY batch / ORDER BY LIMIT single",
                "exact",
                fmt(brute["recall_batch"], 4),
                fmt(brute["batch_qps"], 1),
                fmt(brute["batch_qps"] / vss_qps, 3) if vss_qps else "-",
                ms(brute["single_sql"]),
                fmt(brute["single_sql"]["median_ms"] / vss_ms, 1) if vss_ms else "-",
                "0",
            ]
        )
        rows.append(
            [
                f"numpy exact top-{K} (peer, {brute['numpy_queries']} queries)",
                "exact",
                "1.0000",
                fmt(brute["numpy_qps"]),
                fmt(brute["numpy_qps"] / vss_qps, 2) if vss_qps else "-",
                "-",
                "-",
                "0",
            ]
        )
    out.append(
        f"Fastest setting with recall@{K} >= {RECALL_TARGET} per contender (× vss: ratio to the vss row, "
        "same run; single-query for vss is `SET VARIABLE q` + `SELECT`, 2 statements, because its index scan "
        "needs a constant query vector):"
    )
    out.append("")
    out.append(
        table(
            ["contender", "setting", f"recall@{K}", "batched QPS", "× vss", "single-query ms", "× vss", "build s"],
            rows,
            "llrrrrrr",
        )
    )
    out.append("")

    # ---- FAISS SQL against direct faiss at the best setting
    if faiss_results:
        rows = []
        default_threads = "1"
        for entry in faiss_results.values():
            best = entry["best"]
            default_threads = best.get("default_faiss_threads", "1")

            def qps_ratio(qps_key: str, ratio_key: str, best: dict[str, Any] = best) -> list[str]:
                if ratio_key not in best:
                    return ["-", "-"]
                return [fmt(best[qps_key]), f"{best[ratio_key]:.2f}"]

            rows.append(
                [
                    entry["label"],
                    best["params"] or "exact",
                    fmt(best["direct_all_cores_qps"]),
                    fmt(best["direct_1thread_qps"]),
                    fmt(best["topk_qps"]),
                    f"**{best['overhead_ratio']:.2f}**",
                    *qps_ratio("topk_plain_qps", "overhead_ratio_plain"),
                    *qps_ratio("topk_ft1_qps", "overhead_ratio_ft1"),
                    *qps_ratio("topk_threads1_ftN_qps", "overhead_ratio_threads1_ftN"),
                    fmt(best["lateral_qps"]),
                    f"{best['overhead_ratio_lateral']:.2f}",
                    ms(best["single_sql"]),
                    ms(best["single_sql_variable"]),
                    f"{best['single_direct']['median_ms']:.3f}",
                ]
            )
        out.append(
            "FAISS through SQL against `index.search` on the same numpy queries (same loaded index and "
            "parameters, runs interleaved). Ratio = SQL time / peer time, median of per-run ratios; the peer "
            f"is the faster of index.search with faiss on 1 OpenMP thread and on all {CORES} in that run; "
            "target <= 1.15. `run_script` = the statement as run_script and the CLI run it: a statement calling "
            "a UDF with its own thread pool runs with DuckDB `threads = 1` (bootstrap.core_owning_names), with "
            f"this checkout's faiss_threads default (`{default_threads}`); `plain execute` = "
            f"`connection.execute` with DuckDB threads={CORES}; `threads=1` = `SET threads = 1` for the "
            "statement; `faiss_threads=N` = a connection with that setting. Single-query columns: median ms per "
            "plain statement; index.search on 1 thread:"
        )
        out.append("")
        out.append(
            table(
                [
                    "index",
                    "setting",
                    f"index.search QPS, {CORES} threads",
                    "index.search QPS, 1 thread",
                    "faiss_topk QPS (run_script)",
                    "ratio",
                    f"faiss_topk QPS, plain execute, threads={CORES}",
                    "ratio",
                    "faiss_topk QPS, faiss_threads=1",
                    "ratio",
                    f"faiss_topk QPS, threads=1 + faiss_threads={CORES}",
                    "ratio",
                    "LATERAL faiss_search QPS",
                    "ratio",
                    "single faiss_search ms",
                    "single SET VARIABLE+SELECT ms",
                    "single index.search ms",
                ],
                rows,
                "llrrrrrrrrrrrrrrr",
            )
        )
        out.append("")

    # ---- sweeps
    rows = []
    for entry in faiss_results.values():
        for point in entry["sweep"]:
            rows.append(
                [
                    f"FAISS {entry['label']}",
                    point["params"] or "exact",
                    fmt(point["recall"], 4),
                    fmt(point["sql_qps"]),
                    fmt(point["direct_qps"]),
                    f"{point['ratio']:.2f}",
                ]
            )
    if vss and "sweep" in vss:
        for point in vss["sweep"]:
            rows.append(
                ["vss HNSW (LATERAL)", point["params"], fmt(point["recall"], 4), fmt(point["sql_qps"]), "-", "-"]
            )
    if rows:
        out.append(
            f"Recall sweeps (median of {meta['sweep_runs']} runs per point; a sweep stops one point after "
            "the target is reached):"
        )
        out.append("")
        out.append(
            table(
                [
                    "contender",
                    "setting",
                    f"recall@{K}",
                    "SQL QPS (faiss_topk / vss LATERAL)",
                    "index.search QPS (peer)",
                    "SQL/peer time",
                ],
                rows,
                "llrrrr",
            )
        )
        out.append("")

    # ---- overhead diagnostics
    overhead = results.get("overhead")
    if overhead:
        rows = []
        for row in overhead["rows"]:
            profile = row.get("profile")
            rows.append(
                [
                    row["config"],
                    f"{row['median_s']:.3f}",
                    fmt(row["qps"]),
                    f"{row['ratio']:.2f}",
                    f"{row['ratio_all_cores']:.2f}",
                    f"{row['cpu_s']:.2f}" if "cpu_s" in row else "-",
                    f"{profile['main_thread_cpu_s']:.2f}" if profile and "main_thread_cpu_s" in profile else "-",
                    f"{profile['calls_on_main_thread']}/{profile['calls']}"
                    if profile and "calls_on_main_thread" in profile
                    else (str(profile["calls"]) if profile else "-"),
                    str(profile["threads"]) if profile else "-",
                    f"{profile['search_s']:.2f}" if profile else "-",
                ]
            )
        out.append(
            f"Overhead diagnostics: faiss_topk over {overhead['queries']:,} queries, {overhead['family']} at "
            f"{overhead['params'] or 'exact'}, median of {meta['runs']} interleaved runs. CPU s = this process's CPU "
            "time (all threads) per run; the last four columns come from one instrumented run: CPU seconds of the "
            "Python main thread (the one that called execute), index.search calls made on the main thread / all "
            "calls, distinct threads calling, seconds inside index.search summed over calls:"
        )
        out.append("")
        out.append(
            table(
                [
                    "configuration",
                    "median s",
                    "QPS",
                    "ratio vs peer (faster direct)",
                    f"ratio vs direct {CORES} threads",
                    "CPU s",
                    "main-thread CPU s",
                    "calls on main / all",
                    "threads calling",
                    "search s",
                ],
                rows,
                "lrrrrrrrrr",
            )
        )
        out.append("")

    # ---- re-rank
    rerank = results.get("rerank")
    if rerank:
        rows = [
            [
                str(row["k_factor"]),
                row["params"],
                fmt(row["recall"], 4),
                fmt(row["select_qps"]),
                fmt(row["lateral_qps"]),
                fmt(row["direct_qps"]),
                fmt(row["body_qps"]),
                f"{row['ratio']:.2f}",
                ms(row["single_sql"]),
            ]
            for row in rerank["rows"]
        ]
        out.append(
            f"IVF-PQ `{rerank['factory']}` (build {rerank['build_s']:.1f} s) with exact re-rank: "
            "`faiss_search(q, k := 10, k_factor := f)` = faiss_topk for ceil(10·f) candidates, then "
            "exact_rerank over vectors.npy (select-list form: "
            "`exact_rerank(q, [h.chunk_id FOR h IN faiss_topk(q, 10·f)], 10, 'ip')`; peer: index.search + "
            "numpy re-rank; `UDF body` = index.search + the exact_rerank Python function called on Arrow "
            "without DuckDB, 1 thread):"
        )
        out.append("")
        out.append(
            table(
                [
                    "k_factor",
                    "setting",
                    f"recall@{K}",
                    "select-list QPS",
                    "LATERAL faiss_search QPS",
                    "peer QPS",
                    "UDF body QPS",
                    "select-list/peer time",
                    "single faiss_search ms",
                ],
                rows,
                "llrrrrrrr",
            )
        )
        out.append("")

    # ---- vss plan checks
    if vss and "plans" in vss:
        plans = vss["plans"]
        notes = [
            f"vss plan checks (EXPLAIN): LATERAL batch uses HNSW_INDEX_JOIN with default optimizers: "
            f"{plans['lateral_default_optimizers']}; with `SET disabled_optimizers='top_n_window_elimination'`: "
            f"{plans['lateral_without_top_n_window_elimination']}. Single query uses HNSW_INDEX_SCAN with "
            f"`getvariable('q')`: {plans['single_variable']}, with a literal vector: {plans['single_literal']}, "
            f"with a scalar subquery: {plans['single_subquery']}, with `ORDER BY array_inner_product DESC`: "
            f"{plans['ip_desc_variable']}."
        ]
        silent = vss.get("silent_brute_force")
        if silent:
            notes.append(
                f"The LATERAL batch with default optimizers (brute force despite the index) ran "
                f"{silent['qps']:.1f} q/s on {silent['queries']} queries."
            )
        if "best" in vss:
            notes.append(
                f"vss single query with the vector as a SQL literal (1 statement, text formatting included): "
                f"{ms(vss['best']['single_sql_literal'])} ms."
            )
        out.append(" ".join(notes))
        out.append("")
    return "\n".join(out)


def render(all_results: list[dict[str, Any]]) -> str:
    if not all_results:
        return ""
    meta = all_results[-1]["meta"]
    libraries = ", ".join(f"{name} {version}" for name, version in meta["libraries"].items())
    head = [f"Machine: {meta['machine']}. Libraries: {libraries}. Command: `{meta['command']}`.", ""]
    return "\n".join(head + [render_dataset(r) for r in all_results])


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[200_000], help="synthetic store sizes (default 200000)"
    )
    parser.add_argument("--queries", type=int, default=2000, help="queries per batch (<= 10000; default 2000)")
    parser.add_argument(
        "--overhead-queries", type=int, default=10_000, help="queries for the overhead diagnostics (default 10000)"
    )
    parser.add_argument("--single-queries", type=int, default=200, help="one-statement queries timed (default 200)")
    parser.add_argument("--brute-queries", type=int, default=20, help="queries for brute-force SQL (0: skip)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each final measurement (median)")
    parser.add_argument("--sweep-runs", type=int, default=3, help="timed runs per sweep point (median)")
    parser.add_argument("--clusters", type=int, default=256, help="clusters of the synthetic generator")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument(
        "--noise",
        choices=["isotropic", "real-spectrum"],
        default="isotropic",
        help="synthetic sets: isotropic cluster noise (default), or the covariance of the demo store's embeddings",
    )
    parser.add_argument("--skip-vss", action="store_true", help="skip the vss HNSW contender")
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo store")
    parser.add_argument(
        "--families",
        nargs="+",
        default=SYNTHETIC_FAMILIES,
        choices=["auto", *faiss_index.FAMILIES],
        help=f"FAISS builds measured on the synthetic sets (default {' '.join(SYNTHETIC_FAMILIES)}); "
        "overhead diagnostics need auto, the re-rank table ivf_pq",
    )
    parser.add_argument("--rebuild", action="store_true", help="build FAISS indexes again instead of reusing them")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="print and write the tables from the saved JSON of --sizes (and demo), run nothing",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20000 vectors, 500 queries, few runs (overrides the sizes and counts)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.overhead_queries = [20_000], 500, 2000
        args.single_queries, args.brute_queries, args.runs, args.sweep_runs = 30, 5, 3, 1
    if not 1 <= args.queries <= QUERY_POOL or not 1 <= args.overhead_queries <= QUERY_POOL:
        parser.error(f"--queries and --overhead-queries must be in [1, {QUERY_POOL}]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prefix = "synthetic" if args.noise == "isotropic" else "spectrum"
    names = ([] if args.skip_demo else ["demo"]) + [f"{prefix}_{n}" for n in args.sizes]
    if args.render_only:
        all_results = [json.loads(result_path(name).read_text()) for name in names if result_path(name).exists()]
    else:
        meta = run_metadata(args)
        all_results = []
        datasets: list[Callable[[], Dataset | None]] = [] if args.skip_demo else [demo_dataset]
        datasets += [lambda n=n: synthetic_dataset(n, args.clusters, args.seed, args.noise) for n in args.sizes]
        for make in datasets:
            dataset = make()
            if dataset is None:
                continue
            results: dict[str, Any] = {"dataset": dataset.name, "description": dataset.description, "meta": meta}
            save(dataset, results)
            faiss_phase(dataset, args, results)
            sql_baselines_phase(dataset, args, results)
            results["meta"] = {**meta, "load_average_end": os.getloadavg()[0]}
            save(dataset, results)
            all_results.append(results)
            print(render_dataset(results), flush=True)
            (RESULTS / "bench_search.md").write_text(render(all_results))
            del dataset
            gc.collect()
    text = render(all_results)
    (RESULTS / "bench_search.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()

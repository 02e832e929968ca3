"""Single-query latency: one statement, one query vector, against DuckDB's floor, index.search and vss.

Per synthetic store size (``--sizes``; data and catalogs shared with bench_search.py under
``bench/results``), for each FAISS family (``--families``, default ``auto`` and ``hnsw``):

1. batched QPS through SQL (``faiss_topk`` over ``--queries`` queries, DuckDB threads = 1)
   at the cheapest setting with recall@10 >= 0.95, and the family's build seconds;
2. at that setting (vss's single query runs at its own chosen ``hnsw_ef_search``),
   single-query statements, each over another held-out query vector bound with
   ``SET VARIABLE q`` (untimed; vss's single query is measured the same way), forms run
   round-robin per query so load from other work falls on all alike; median (p50) and p90
   over ``--statements`` statements:

   * ``SELECT 1`` and a native (tuple) Python UDF on one row: DuckDB's floor;
   * ``faiss_topk(getvariable('q'), 10)``; ``faiss_search(...)`` alone (each hit with its uri,
     bytes and lines), joined to ``chunks`` (the store's Parquet parts) and to
     ``chunk_locations`` (the keyed table), the latter also with DuckDB at ``threads = 1`` (set
     and restored untimed around the statement);
   * the issue's form, the query in a one-row table read by a scalar subquery;
   * ``index.search`` of the one vector (1 OpenMP thread, as the UDF runs it) and
     ``LoadedIndex.search``;

3. DuckDB vss HNSW in an in-memory DuckDB (``--skip-vss`` to leave out): build seconds,
   batched LATERAL QPS and the single-query p50 at its cheapest ``hnsw_ef_search`` meeting
   the same recall;
4. with the embedder in the statement, ``faiss_search(embed(text))`` alone and joined to
   ``chunks``, and ``embed(text)`` alone, per embedder: MiniLM over the synthetic store (384-d, as MiniLM's),
   the static code embedder over a small catalog ingested from this repository's ``udfs/``.

Results: ``bench/results/search_latency_<dataset>.json``, tables on stdout, and with ``--write`` the
"Single-query latency" section of BENCHMARKS.md.

    .venv/bin/python bench/bench_latency.py --sizes 200000 --write
    .venv/bin/python bench/bench_latency.py --sizes 200000 1000000 --write   # the full run
    .venv/bin/python bench/bench_latency.py --quick                          # smoke run, 20k vectors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench import adapters  # noqa: E402
from bench.common import CORES, DIM, RECALL_TARGET, RESULTS, K, log, median, processor_name  # noqa: E402
from bench.datasets import Dataset, synthetic_dataset  # noqa: E402
from bench.phases import VSS_EF_SEARCHES, ensure_builds, parameter_grid, register_queries, sql_hits  # noqa: E402
from bench.render import result_path, save, table, write_section  # noqa: E402
from bench.timing import latency_summary  # noqa: E402

SECTION = "## Single-query latency (bench/bench_latency.py)"
#: Texts for the embedder rows: each statement embeds another one (no cache can answer it).
TEXTS = ("parse a requirements file", "retry with exponential backoff", "read a config file into a dict",
         "send an http request with headers", "walk a directory tree and filter files")
#: The one-query faiss_search statement every phase times: the hits with their uri and lines.
SEARCH = "SELECT rank, uri, start_line, end_line, score FROM faiss_search(getvariable('q'), k := 10)"
#: faiss_search timed in vss's rounds, alternating with its statements (see ``vss``).
SAME_ROUNDS = "faiss_search with uri and lines, timed in vss's rounds"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000], help="synthetic store sizes")
    parser.add_argument("--families", nargs="+", default=["auto", "hnsw"], choices=["auto", *adapters.FAMILIES])
    parser.add_argument("--statements", type=int, default=200, help="single-query statements per form (median)")
    parser.add_argument("--queries", type=int, default=2000, help="queries per batch (batched QPS, recall)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each batched measurement (median)")
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--noise", choices=["isotropic", "real-spectrum"], default="isotropic")
    parser.add_argument("--skip-vss", action="store_true")
    parser.add_argument("--skip-embed", action="store_true", help="leave out the embedder rows")
    parser.add_argument("--rebuild", action="store_true", help="build the FAISS indexes again")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    parser.add_argument("--profile-only", action="store_true",
                        help="time only the pieces of one statement, into the saved results of --sizes")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 vectors, few statements")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.statements, args.queries, args.runs = [20_000], 40, 500, 2
    return args


class Timed(float):
    """Milliseconds an action timed itself (around its statement only), returned instead of its rows."""


def rounds(actions: dict[str, Callable[[], Any]], before: Callable[[int], None], count: int,
           warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds per statement of each action: statement i of every action runs after
    ``before(i)`` (untimed), round-robin, the order reversed every other round.  An action that
    returns :class:`Timed` is counted by its own timing (its setup stays untimed)."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for i in range(-warmup, count):
        before(max(i, 0))
        for name in names if i % 2 == 0 else reversed(names):
            started = time.perf_counter()
            result = actions[name]()
            elapsed = result if isinstance(result, Timed) else (time.perf_counter() - started) * 1000
            if i >= 0:
                times[name].append(float(elapsed))
    return times


def tuned(setting: str, connection: duckdb.DuckDBPyConnection, loaded: adapters.LoadedIndex | None = None) -> None:
    """Search ``connection``'s loaded index, and ``loaded`` (a LoadedIndex the bench holds), at ``setting``
    (the batched row's, as vss runs at its chosen hnsw_ef_search); an empty setting leaves the build's
    default parameters."""
    if setting:
        connection.execute("SELECT faiss_set_params(?)", [setting])
        if loaded is not None:
            loaded.set_parameters(setting, "bench")


def single_query_forms(dataset: Dataset, version: str, count: int, setting: str) -> dict[str, Any]:
    """Every single-query form on the published ``version`` at ``setting``, interleaved per query."""
    adapters.publish(dataset.catalog, version)
    connection = adapters.connect(dataset.catalog, settings={"embed_model": "minilm"})
    try:
        queries = dataset.queries(count)
        connection.create_function("bench_native", lambda x: x + 1, ["INTEGER"], "INTEGER", type="native")
        connection.create_function("bench_native_vector", lambda v: len(v), ["FLOAT[]"], "INTEGER", type="native")
        connection.execute("CREATE OR REPLACE TEMP TABLE one AS SELECT 1 AS x")
        loaded = adapters.load_current(adapters.catalog_context(dataset.catalog, catalog_settings=True))
        tuned(setting, connection, loaded)
        join = ("SELECT c.uri, c.start_line, h.rank, h.score FROM faiss_search(getvariable('q'), k := 10) AS h "
                "JOIN chunks AS c ON c.id = h.chunk_id")
        located = join.replace("JOIN chunks AS c", "JOIN chunk_locations AS c")
        threads = connection.execute("SELECT current_setting('threads')").fetchone()[0]
        current: dict[str, np.ndarray] = {}

        def before(i: int) -> None:
            vector = queries[i % len(queries)]
            current["q"] = vector[None].copy()
            connection.execute("SET VARIABLE q = ?::FLOAT[384]", [vector.tolist()])
            connection.execute("CREATE OR REPLACE TEMP TABLE qv AS SELECT getvariable('q') AS e")

        def run(sql: str) -> Callable[[], Any]:
            return lambda: connection.execute(sql).fetchall()

        def one_thread() -> Timed:
            connection.execute("SET threads = 1")
            try:
                started = time.perf_counter()
                connection.execute(located).fetchall()
                return Timed((time.perf_counter() - started) * 1000)
            finally:
                connection.execute("SET threads = ?", [threads])

        def index_search() -> Any:
            faiss.omp_set_num_threads(1)  # as LoadedIndex.search does for one query
            return loaded.index.search(current["q"], K)

        actions = {
            "SELECT 1": run("SELECT 1"),
            "native UDF, one INTEGER row": run("SELECT bench_native(x) FROM one"),
            "native UDF, one FLOAT[384] row": run("SELECT bench_native_vector(getvariable('q'))"),
            "index.search (1 vector)": index_search,
            "LoadedIndex.search": lambda: loaded.search(current["q"], K),
            "faiss_topk(q, 10)": run("SELECT faiss_topk(getvariable('q'), 10)"),
            "faiss_search(q, k := 10), hits with uri and lines": run(SEARCH),
            "faiss_search JOIN chunks": run(join),
            "faiss_search JOIN chunk_locations": run(located),
            "faiss_search JOIN chunk_locations, DuckDB threads = 1": one_thread,
            "faiss_search((SELECT e FROM qv)) JOIN chunks": run(
                "SELECT c.uri, c.start_line, h.rank, h.score FROM faiss_search((SELECT e FROM qv), k := 10) AS h "
                "JOIN chunks AS c ON c.id = h.chunk_id"),
            "faiss_topk(e, 10) FROM qv": run("SELECT faiss_topk(e, 10) FROM qv"),
        }
        times = rounds(actions, before, count)
        return {name: latency_summary(values) for name, values in times.items()}
    finally:
        connection.close()


def profile(dataset: Dataset, version: str, count: int, setting: str) -> dict[str, Any]:
    """Where one faiss_search statement's time goes: each piece timed on its own, interleaved per query."""
    import pyarrow as pa

    adapters.publish(dataset.catalog, version)
    connection = adapters.connect(dataset.catalog, settings={"embed_model": "minilm"})
    try:
        context = adapters.catalog_context(dataset.catalog, catalog_settings=True)
        loaded = adapters.load_current(context)
        tuned(setting, connection, loaded)
        queries = dataset.queries(count)
        constant = adapters.faiss_topk(context, pa.array([queries[0].tolist()], pa.list_(pa.float32())),
                                       pa.array([K], pa.int32()))
        connection.create_function("bench_native_vector", lambda v: len(v), ["FLOAT[]"], "INTEGER", type="native")
        connection.create_function("bench_arrow_constant_hits", lambda v: constant, ["FLOAT[]"],
                                   adapters.HITS_TYPE, type="arrow")
        hit_ids = [int(h["chunk_id"]) for h in constant.to_pylist()[0]]
        located = adapters.current_locations(context, "bench")
        hit_array = np.array(hit_ids, dtype=np.int64)
        located_hits = list(zip(range(1, K + 1), hit_ids, [1.0] * K, *located.locate(hit_array), strict=True))
        connection.create_function("bench_native_constant_hits", lambda v: located_hits, ["FLOAT[]"],
                                   adapters.LOCATED_HITS_TYPE, type="native")
        connection.execute("CREATE OR REPLACE TEMP TABLE bench_hits AS SELECT unnest(?::BIGINT[]) AS chunk_id",
                           [hit_ids])
        # The same ten hits as a DuckDB value: the statement shape with no UDF call at all.
        connection.create_function("bench_located_hits", lambda: located_hits, [], adapters.LOCATED_HITS_TYPE,
                                   type="native")
        connection.execute("SET VARIABLE bench_hits = bench_located_hits()")
        # And as a ten-row table: what returning ten rows of these columns costs with no list to unnest.
        connection.execute("CREATE OR REPLACE TEMP TABLE bench_hit_rows AS "
                           "SELECT unnest(getvariable('bench_hits'), recursive := true)")
        current: dict[str, Any] = {}
        body_ms: list[float] = []

        def timed_body(q: list[float]) -> int:
            started = time.perf_counter()
            hits = adapters.faiss_search_hits(context, q, float(K), 1.0)
            body_ms.append((time.perf_counter() - started) * 1000)
            return len(hits)

        connection.create_function("bench_timed_body", timed_body, ["FLOAT[]"], "INTEGER", type="native")

        def body_inside_statement() -> Timed:
            connection.execute("SELECT bench_timed_body(getvariable('q'))").fetchall()
            return Timed(body_ms[-1])

        def before(i: int) -> None:
            vector = queries[i % len(queries)]
            current["matrix"] = vector[None].copy()
            current["q"] = vector.tolist()
            connection.execute("SET VARIABLE q = ?::FLOAT[384]", [vector.tolist()])

        def run(sql: str) -> Callable[[], Any]:
            return lambda: connection.execute(sql).fetchall()

        def unnested_as_faiss_search(hits_list: str) -> str:
            """A list of located hits made into rows as sql/macros/faiss_search.sql does, the bench's columns."""
            return ("SELECT rank, uri, start_line, end_line, score FROM (SELECT unnest(hit) "
                    f"FROM unnest({hits_list}) AS hits(hit))")

        def search(threads: int) -> Callable[[], Any]:
            def action() -> Any:
                faiss.omp_set_num_threads(threads)
                return loaded.index.search(current["matrix"], K)
            return action

        def set_threads_pair() -> None:
            previous = connection.execute("SELECT current_setting('threads')").fetchone()[0]
            connection.execute("SET threads = ?", [1])
            connection.execute("SET threads = ?", [previous])

        actions = {
            "SELECT 1 (statement floor)": run("SELECT 1"),
            "native UDF on one FLOAT[384] row": run("SELECT bench_native_vector(getvariable('q'))"),
            "arrow UDF on one FLOAT[384] row, constant hits": run(
                "SELECT bench_arrow_constant_hits(getvariable('q'))"),
            f"index.search, 1 query, {CORES} OpenMP threads": search(CORES),
            "index.search, 1 query, 1 OpenMP thread": search(1),
            "faiss_search_hits Python body (no DuckDB)": lambda: adapters.faiss_search_hits(
                context, current["q"], float(K), 1.0),
            "locating 10 hits (udfs/hit_locations.py)": lambda: located.locate(hit_array),
            "faiss_search_hits Python body, timed inside a statement (the cache a statement leaves)":
                body_inside_statement,
            "10 constant located hits in a variable, unnested as faiss_search does (no UDF, no search)": run(
                unnested_as_faiss_search("getvariable('bench_hits')")),
            "the same 10 located hits read from a TEMP table (no list, no UDF, no search)": run(
                "SELECT rank, uri, start_line, end_line, score FROM bench_hit_rows"),
            "native UDF returning 10 constant located hits, unnested as faiss_search does (no search)": run(
                unnested_as_faiss_search("bench_native_constant_hits(getvariable('q'))")),
            "EXPLAIN SELECT 1": run("EXPLAIN SELECT 1"),
            "EXPLAIN faiss_search (bind, plan, and the UDF call DuckDB folds on a constant q)": run(
                "EXPLAIN SELECT * FROM faiss_search(getvariable('q'), k := 10)"),
            "10 hit ids JOIN chunks (no search)": run(
                "SELECT c.uri, c.start_line FROM bench_hits AS h JOIN chunks AS c ON c.id = h.chunk_id"),
            "10 hit ids JOIN chunk_locations (no search)": run(
                "SELECT c.uri, c.start_line FROM bench_hits AS h JOIN chunk_locations AS c ON c.id = h.chunk_id"),
            "thread rule's statements (current_setting + 2 SET threads)": set_threads_pair,
        }
        times = rounds(actions, before, count)
        return {name: latency_summary(values) for name, values in times.items()}
    finally:
        connection.close()


def batched(dataset: Dataset, version: str, family: str, nq: int, runs: int) -> dict[str, Any]:
    """Batched faiss_topk through SQL (DuckDB threads = 1) at the cheapest setting meeting the recall target,
    and the LATERAL faiss_search form of the same batch at that setting (DuckDB's own threads: faiss_search
    searches one query per call on one OpenMP thread, so the thread rule does not apply to it)."""
    adapters.publish(dataset.catalog, version)
    connection = adapters.connect(dataset.catalog, settings={"embed_model": "minilm"})
    try:
        register_queries(connection, "queries", dataset.queries(nq))
        threads = connection.execute("SELECT current_setting('threads')").fetchone()[0]
        connection.execute("SET threads = 1")
        manifest = json.loads((dataset.catalog / "index" / "versions" / version / adapters.MANIFEST_FILE).read_text())
        statement = f"SELECT q.query_id, unnest(faiss_topk(q.embedding, {K}), recursive := true) FROM queries AS q"
        chosen, recall = "", 0.0
        grid = parameter_grid(manifest["family"], manifest["build_parameters"].get("nlist"))
        for setting in [s for group in grid for s in group]:
            if setting:
                connection.execute("SELECT faiss_set_params(?)", [setting])
            recall = dataset.recall(sql_hits(connection, statement, nq))
            chosen = setting
            if recall >= RECALL_TARGET:
                break
        lateral = f"SELECT q.query_id, r.chunk_id FROM queries AS q, LATERAL faiss_search(q.embedding, k := {K}) AS r"
        # The previous default, for the same run: faiss_search's hits from an arrow UDF, the batched
        # faiss_topk body (what faiss_search_hits ran with k_factor 1 before it became native),
        # under the thread rule as run_script ran it (DuckDB threads = 1).
        context = adapters.catalog_context(dataset.catalog, catalog_settings=True)
        if chosen:
            adapters.load_current(context).set_parameters(chosen, "bench")
        connection.create_function("bench_arrow_hits", lambda q, k: adapters.faiss_topk(context, q, k),
                                   ["FLOAT[]", "INTEGER"], adapters.HITS_TYPE, type="arrow", null_handling="special")
        connection.execute("CREATE OR REPLACE TEMP MACRO bench_arrow_search(q, k := 10) AS TABLE "
                           "SELECT hit.rank AS rank, hit.chunk_id AS chunk_id, hit.score AS score "
                           "FROM (SELECT unnest(bench_arrow_hits(q, k)) AS hit)")
        arrow_lateral = lateral.replace("LATERAL faiss_search(", "LATERAL bench_arrow_search(")
        times, lateral_times, arrow_times = [], [], []
        for _ in range(runs):  # interleaved
            connection.execute("SET threads = 1")
            for sql, into in ((statement, times), (arrow_lateral, arrow_times)):
                started = time.perf_counter()
                connection.execute(sql).to_arrow_table()
                into.append(time.perf_counter() - started)
            connection.execute("SET threads = ?", [threads])
            started = time.perf_counter()
            connection.execute(lateral).to_arrow_table()
            lateral_times.append(time.perf_counter() - started)
        lateral_recall = dataset.recall(sql_hits(connection, lateral, nq))
        arrow_recall = dataset.recall(sql_hits(connection, arrow_lateral, nq))
        return {"setting": chosen, "recall": recall, "qps": nq / median(times),
                "lateral_qps": nq / median(lateral_times), "lateral_recall": lateral_recall, "lateral_threads": threads,
                "arrow_lateral_qps": nq / median(arrow_times), "arrow_lateral_recall": arrow_recall,
                "build_s": manifest["build_seconds"], "factory": manifest["factory"], "family": manifest["family"],
                "auto_measurement": manifest.get("auto_measurement")}
    finally:
        connection.close()


def vss(dataset: Dataset, nq: int, count: int, runs: int, version: str | None = None,
        setting: str = "") -> dict[str, Any]:
    """DuckDB vss HNSW (vss defaults, metric 'ip'): build, batched LATERAL QPS and single-query p50
    at the cheapest hnsw_ef_search meeting the target (as bench_search.py measures it).

    With ``version``, the same rounds also time ``faiss_search`` on that published index (at
    ``setting``, the batched row's), the statements alternating with vss's: a ratio taken at one
    moment, where the single-query forms and vss's phase run minutes apart on a machine whose
    speed drifts."""
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    ours = None
    try:
        adapters.load_extensions(connection)
        connection.execute(f"SET threads = {CORES}")
        items = dataset.store_table()
        connection.register("items_arrow", items)
        # With where each chunk is, so that a single query can return what faiss_search returns.
        connection.register("locations_arrow", adapters.read_locations(adapters.current_store(dataset.catalog)))
        connection.execute("CREATE TABLE items AS SELECT a.id, a.v, l.uri, l.start_line, l.end_line "
                           "FROM items_arrow AS a JOIN locations_arrow AS l ON l.id = a.id")
        connection.unregister("items_arrow")
        connection.unregister("locations_arrow")
        register_queries(connection, "queries", dataset.queries(nq))
        log(f"{dataset.name}: vss HNSW build over {dataset.n} vectors")
        started = time.perf_counter()
        connection.execute("CREATE INDEX items_hnsw ON items USING HNSW (v) WITH (metric = 'ip')")
        build_s = time.perf_counter() - started
        connection.execute("SET disabled_optimizers = 'top_n_window_elimination'")  # else LATERAL brute-forces
        batch = (f"SELECT q.query_id, r.id FROM queries AS q, LATERAL (SELECT c.id FROM items AS c "
                 f"ORDER BY array_negative_inner_product(c.v, q.embedding) LIMIT {K}) AS r")
        single = (f"SELECT id FROM items ORDER BY array_negative_inner_product(v, getvariable('q')::FLOAT[{DIM}]) "
                  f"LIMIT {K}")
        ef, recall = VSS_EF_SEARCHES[0], 0.0
        for ef in VSS_EF_SEARCHES:
            connection.execute(f"SET hnsw_ef_search = {ef}")
            recall = dataset.recall(sql_hits(connection, batch, nq, id_column="id"))
            if recall >= RECALL_TARGET:
                break
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            connection.execute(batch).to_arrow_table()
            times.append(time.perf_counter() - started)
        queries = dataset.queries(count)

        def before(i: int) -> None:
            for client in (connection, ours) if ours is not None else (connection,):
                client.execute("SET VARIABLE q = ?::FLOAT[384]", [queries[i % len(queries)].tolist()])

        located = single.replace("SELECT id FROM", "SELECT id, uri, start_line, end_line FROM")
        actions = {"single": lambda: connection.execute(single).fetchall(),
                   "located": lambda: connection.execute(located).fetchall()}
        if version is not None:
            adapters.publish(dataset.catalog, version)
            ours = adapters.connect(dataset.catalog, settings={"embed_model": "minilm"})
            tuned(setting, ours)
            actions[SAME_ROUNDS] = lambda: ours.execute(SEARCH).fetchall()
        latencies = rounds(actions, before, count)
        return {"build_s": build_s, "setting": f"hnsw_ef_search={ef}", "recall": recall, "qps": nq / median(times),
                **{name: latency_summary(values) for name, values in latencies.items()}}
    finally:
        if ours is not None:
            ours.close()
        connection.close()


def embed_forms(catalog: Path, settings: dict[str, Any], count: int) -> dict[str, Any]:
    """``embed(text)`` alone and inside ``faiss_search(...)``, alone (uri and lines included) and joined to
    ``chunks`` and to ``chunk_locations``, another text each statement."""
    connection = adapters.connect(catalog, settings=settings)
    try:
        texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(count + 3)]
        current = {"text": texts[0]}

        def before(i: int) -> None:
            current["text"] = texts[i]

        join = ("SELECT c.uri, h.rank, h.score FROM faiss_search(embed(?), k := 10) AS h "
                "JOIN chunks AS c ON c.id = h.chunk_id")
        actions = {
            "SELECT embed(text)": lambda: connection.execute("SELECT embed(?)", [current["text"]]).fetchall(),
            "faiss_search(embed(text)), hits with uri and lines": lambda: connection.execute(
                "SELECT rank, uri, start_line, end_line, score FROM faiss_search(embed(?), k := 10)",
                [current["text"]]).fetchall(),
            "faiss_search(embed(text)) JOIN chunks": lambda: connection.execute(join, [current["text"]]).fetchall(),
            "faiss_search(embed(text)) JOIN chunk_locations": lambda: connection.execute(
                join.replace("JOIN chunks AS c", "JOIN chunk_locations AS c"), [current["text"]]).fetchall(),
        }
        chunks = connection.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return {"chunks": chunks, **{name: latency_summary(v) for name, v in rounds(actions, before, count).items()}}
    finally:
        connection.close()


def static_code_catalog(results: Path) -> Path:
    """A small catalog of this repository's udfs/ embedded by the static code embedder, with a Flat index."""
    catalog = results / "catalogs" / "latency_static_code"
    if adapters.current_store(catalog) is None:
        log(f"ingesting {adapters.PROJECT_DIR / 'udfs'} into {catalog} (static code embedder)")
        adapters.ingest(adapters.PROJECT_DIR / "udfs", catalog, settings={"embed_model": "static-code"})
        adapters.build_index(catalog, "flat", settings={"embed_model": "static-code"})
    return catalog


def measure_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    dataset = synthetic_dataset(n, args.clusters, args.seed, args.noise, args.results_dir)
    results: dict[str, Any] = {"dataset": dataset.name, "n": n, "description": dataset.description,
                               "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_average_start": round(os.getloadavg()[0], 2), "families": {}}
    builds = ensure_builds(dataset, list(args.families), args.rebuild)
    dataset.truth(args.queries)
    for family in args.families:
        entry = builds[family]
        # Batched first: its setting (the cheapest reaching the recall target, as vss's
        # hnsw_ef_search is chosen) is the one the single-query statements then run at.
        log(f"{dataset.name}: {family}: batched QPS at recall@{K} >= {RECALL_TARGET}")
        batch = batched(dataset, entry["version"], family, args.queries, args.runs)
        log(f"{dataset.name}: {family} ({entry['manifest']['factory']}): single-query forms at "
            f"{batch['setting'] or 'the default parameters'}")
        forms = single_query_forms(dataset, entry["version"], args.statements, batch["setting"])
        if family == args.families[0]:
            results["profile"] = {"family": entry["manifest"]["family"], "setting": batch["setting"],
                                  "pieces": profile(dataset, entry["version"], args.statements, batch["setting"])}
        results["families"][family] = {"build_wall_s": entry["wall_s"], "cached_build": entry["cached"],
                                       "single": forms, "batched": batch}
        save(f"latency_{dataset.name}", results, args.results_dir)
    if not args.skip_vss:
        first = args.families[0]
        results["vss"] = vss(dataset, args.queries, args.statements, args.runs, builds[first]["version"],
                             results["families"][first]["batched"]["setting"])
    if not args.skip_embed:
        adapters.publish(dataset.catalog, builds[args.families[0]]["version"])
        log(f"{dataset.name}: embedder rows")
        results["embed"] = {"minilm": embed_forms(dataset.catalog, {"embed_model": "minilm"}, args.statements // 2)}
        results["embed"]["static-code"] = embed_forms(static_code_catalog(args.results_dir),
                                                      {"embed_model": "static-code"}, args.statements // 2)
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    save(f"latency_{dataset.name}", results, args.results_dir)
    return results


def profile_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Add the per-piece profile to the saved results of size ``n`` (measured on its first family)."""
    dataset = synthetic_dataset(n, args.clusters, args.seed, args.noise, args.results_dir)
    path = result_path(f"latency_{dataset.name}", args.results_dir)
    results = json.loads(path.read_text())
    family = args.families[0]
    version = ensure_builds(dataset, [family], False)[family]["version"]
    manifest = json.loads((dataset.catalog / "index" / "versions" / version / adapters.MANIFEST_FILE).read_text())
    setting = results["families"][family]["batched"]["setting"]
    log(f"{dataset.name}: profile of one statement on {family} ({manifest['factory']}) at {setting or 'defaults'}")
    results["profile"] = {"family": manifest["family"], "setting": setting,
                          "pieces": profile(dataset, version, args.statements, setting),
                          "load_average": round(os.getloadavg()[0], 2)}
    save(f"latency_{dataset.name}", results, args.results_dir)
    return results


def latency_row(name: str, summary: dict[str, float], peers: tuple[float | None, ...]) -> list[str]:
    """A statement's p50 and p90, then its p50 as a multiple of each peer's (blank for a missing peer)."""
    ms = summary["median_ms"]
    return [name, f"{ms:.3f}", f"{summary['p90_ms']:.3f}", *("" if p is None else f"{ms / p:.2f}" for p in peers)]


def render(all_results: list[dict[str, Any]], command: str) -> str:
    lines = [SECTION, "",
             f"`{command}`; {CORES} cores ({processor_name()}), duckdb {duckdb.__version__}, "
             f"faiss {faiss.__version__}. "
             "Every statement binds another held-out query vector (`SET VARIABLE q`, untimed) and every form runs "
             "once per query, round-robin; p50 and p90 over the statements. Ratios are against rows of the same run.",
             ""]
    for results in all_results:
        lines += [f"### {results['n']:,} vectors ({results['dataset']}, {results['started']}, load average "
                  f"{results['load_average_start']} -> {results['load_average_end']})", ""]
        vss_row = results.get("vss")
        if results.get("profile"):
            pieces = results["profile"]["pieces"]
            rows = [[name, f"{summary['median_ms']:.3f}", f"{summary['p90_ms']:.3f}"]
                    for name, summary in pieces.items()]
            setting = results["profile"].get("setting")
            at = f" at `{setting}`" if setting else ""
            lines += [f"Where one statement's time goes ({results['profile']['family']} index{at}; each piece timed "
                      "on its own, interleaved per query):", "", table(["piece", "p50 ms", "p90 ms"], rows, "lrr"), ""]
        for family, entry in results["families"].items():
            single, batch = entry["single"], entry["batched"]
            native = single["native UDF, one FLOAT[384] row"]["median_ms"]
            # Two vss peers: its single query returning ids, and returning what faiss_search returns
            # (ids with uri and lines, from the same table): the like-for-like one.
            vss_ids = vss_row["single"]["median_ms"] if vss_row else None
            vss_located = vss_row["located"]["median_ms"] if vss_row and "located" in vss_row else None
            peers = (native, vss_ids, vss_located)
            rows = [latency_row(name, summary, peers) for name, summary in single.items()]
            if vss_row:
                rows.append(latency_row(f"vss single query ({vss_row['setting']}), ids", vss_row["single"], peers))
                if vss_located is not None:
                    rows.append(latency_row("vss single query, ids with uri and lines", vss_row["located"], peers))
                if SAME_ROUNDS in vss_row and family == next(iter(results["families"])):
                    # Not against the native UDF: that statement was not timed in these rounds.
                    rows.append(latency_row(f"{SAME_ROUNDS} ({results['families'][family]['batched']['family']})",
                                            vss_row[SAME_ROUNDS], (None, vss_ids, vss_located)))
            label = family if family == batch["family"] else f"{family} -> {batch['family']}"
            at = (f" at `{batch['setting']}` (the batched row's setting, the cheapest reaching recall@{K} >= "
                  f"{RECALL_TARGET}, as vss's hnsw_ef_search is chosen)") if batch["setting"] else ""
            lines += [f"FAISS {label} `{batch['factory']}`, single-query statements{at} (ms):", "",
                      table(["statement", "p50 ms", "p90 ms", "x native UDF (FLOAT[384])", "x vss single (ids)",
                             "x vss single (ids, uri, lines)"], rows, "lrrrrr"), ""]
            rows = [[f"FAISS {label}", batch["setting"] or "exact", f"{batch['recall']:.4f}", f"{batch['qps']:,.0f}",
                     f"{batch['qps'] / vss_row['qps']:.1f}" if vss_row else "", f"{batch['build_s']:.1f}",
                     f"{batch['build_s'] / vss_row['build_s']:.2f}" if vss_row else ""]]
            if "lateral_qps" in batch:
                rows.append([f"the same, LATERAL faiss_search (native hits UDF, DuckDB threads = "
                             f"{batch['lateral_threads']})", batch["setting"] or "exact",
                             f"{batch['lateral_recall']:.4f}", f"{batch['lateral_qps']:,.0f}",
                             f"{batch['lateral_qps'] / vss_row['qps']:.1f}" if vss_row else "", "", ""])
            if "arrow_lateral_qps" in batch:
                rows.append(["the same, LATERAL over the previous arrow hits UDF (DuckDB threads = 1)",
                             batch["setting"] or "exact", f"{batch['arrow_lateral_recall']:.4f}",
                             f"{batch['arrow_lateral_qps']:,.0f}",
                             f"{batch['arrow_lateral_qps'] / vss_row['qps']:.1f}" if vss_row else "", "", ""])
            if vss_row:
                rows.append(["DuckDB vss HNSW", vss_row["setting"], f"{vss_row['recall']:.4f}",
                             f"{vss_row['qps']:,.0f}", "1.0", f"{vss_row['build_s']:.1f}", "1.00"])
            lines += [table(["batched (faiss_topk, DuckDB threads = 1)", "setting", "recall@10", "QPS", "x vss",
                             "build s", "x vss build"], rows, "llrrrrr"), ""]
            measurement = batch.get("auto_measurement")
            if measurement:
                rows = [[c["family"], " / ".join(f"{p['search_parameters'] or 'exact'} {p['recall']:.3f}"
                                                  for p in c["samples"]),
                         " / ".join(f"{p['qps']:,.0f}" for p in c["samples"]),
                         " / ".join(f"{p['build_s']:.2f}" for p in c["samples"]),
                         f"{c['projected_qps']:,.0f}", f"{c['projected_build_s']:.1f}",
                         str(c["samples"][-1].get("code_bytes", "")),
                         "**chosen**" if c["family"] == measurement["chosen"] else ""]
                        for c in measurement["candidates"]]
                lines += [f"`auto`'s measurement (manifest `auto_measurement`, {measurement['measure_seconds']} s, "
                          f"samples of {measurement['samples'][0]} / {measurement['samples'][1]} vectors, "
                          f"{measurement['queries']} held-out queries):", "",
                          table(["family", "setting, recall", "QPS", "build s", "projected QPS",
                                 "projected build s", "code bytes / vector", ""], rows, "lllrrrrl"), ""]
        for embedder, entry in (results.get("embed") or {}).items():
            rows = [[name, f"{summary['median_ms']:.2f}", f"{summary['p90_ms']:.2f}"]
                    for name, summary in entry.items() if name != "chunks"]
            lines += [f"With the embedder in the statement, {embedder} ({entry['chunks']:,} chunks):", "",
                      table(["statement", "p50 ms", "p90 ms"], rows, "lrr"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = ".venv/bin/python bench/bench_latency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    all_results = [profile_size(n, args) if args.profile_only else measure_size(n, args) for n in args.sizes]
    text = render(all_results, command.strip())
    print(text)
    (args.results_dir / "bench_latency.md").write_text(text + "\n")
    if args.write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()

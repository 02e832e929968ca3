"""Docstring-to-function retrieval on the demo store: quality per channel and pool-writing cost.

The store is the demo's (``DEMO_PACKAGES`` of this Python's standard library);
the query set is ``sql/export_docstring_queries.sql``: each function's first docstring
sentence asks for that function's chunk.  Measured twice:

* ``stripped``: the packages copied with every docstring blanked out (replaced by ``pass``
  and blank lines, so line numbers and hence the judgments stay valid): the fair measure;
* ``original``: the packages as ingested by the demo, docstrings included, which flatters
  every channel (each query's words are in its answer).

On each store: a flat FAISS index, the BM25 index, then pools for faiss, bm25 and hybrid at
several weights; MRR@10, nDCG@10 and recall@10 come from ``sql/report_eval.sql``.  Cost: wall
seconds of ``sql/write_pool.sql`` (channel, explain columns, Parquet files) per 1,000 queries,
median of ``--runs`` runs with the explain caches cleared before each.

Catalogs live under ``bench/results/eval/`` (reused: an unchanged store is not re-ingested).
Writes the "Evaluation" section of ``BENCHMARKS.md``.  Run from the repository root:

    .venv/bin/python bench/bench_eval.py [--embedders static-code minilm PATH ...]

Each embedder gets its own catalog of the same store, side by side in one run; the fusion of
the hybrid channel is measured with ``sql/tune_fusion.sql`` (see the section it writes).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402  (needs the path above)

from bench import adapters  # noqa: E402
from bench.common import RESULTS as ALL_RESULTS  # noqa: E402
from bench.datasets import stdlib_root, stripped_copy  # noqa: E402
from bench.render import write_section  # noqa: E402
from udfs import explain  # noqa: E402

RESULTS = ALL_RESULTS / "eval"
SECTION_TITLE = "## Evaluation: docstring-to-function retrieval (bench/bench_eval.py)"
#: (faiss_weight, bm25_weight) of the hybrid runs.
HYBRID_WEIGHTS = ((1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (1.0, 0.5))
CHANNELS = ("faiss", "bm25", "hybrid")
EMBEDDERS = ("static-code", "minilm")


def prepare(repo: Path, catalog: Path, settings: dict[str, Any]) -> float:
    """Ingest (timed, seconds) and a flat index; an unchanged store is kept, so time a fresh catalog."""
    include = [f"{package}/**" for package in adapters.DEMO_PACKAGES]
    started = time.perf_counter()
    result = adapters.ingest(repo, catalog, include=include, settings=settings)
    seconds = time.perf_counter() - started
    print(f"{catalog.name}: {result.manifest['chunk_count']} chunks "
          f"({'unchanged' if result.unchanged else 'ingested'} in {seconds:.1f} s)", file=sys.stderr)
    adapters.build_index(catalog, "flat", settings=settings)
    return seconds


def pool_parameters() -> list[dict[str, Any]]:
    return [{"channel": "faiss"}, {"channel": "bm25"}] + [
        {"channel": "hybrid", "faiss_weight": faiss_weight, "bm25_weight": bm25_weight}
        for faiss_weight, bm25_weight in HYBRID_WEIGHTS
    ]


def run_relation(relation: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def split_query_set(queries_file: str, qrels_file: str, folder: Path) -> list[tuple[str, str]]:
    """The query set cut in two halves by a hash of query_id: [(queries, qrels)] per half."""
    folder.mkdir(parents=True, exist_ok=True)
    halves = []
    with duckdb.connect() as connection:
        for half in (0, 1):
            paths = (str(folder / f"queries_{half}.parquet"), str(folder / f"qrels_{half}.parquet"))
            for source, target in zip((queries_file, qrels_file), paths, strict=True):
                connection.sql("SELECT * FROM read_parquet($source) WHERE hash(query_id) % 2 = $half",
                               params={"source": source, "half": half}).write_parquet(target)
            halves.append(paths)
    return halves


def run_metrics(connection: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    (row,) = run_relation(connection.sql(
        "SELECT run_id, judged_queries, mrr_at_10, ndcg_at_10, recall_at_10 FROM v_eval_per_channel "
        "WHERE run_id = $run_id", params={"run_id": run_id}))
    return row


def evaluate(catalog: Path, stdlib: Path, runs: int, settings: dict[str, Any]
             ) -> tuple[list[dict[str, Any]], dict[str, float], int, dict[str, Any]]:
    """Quality rows of sql/report_eval.sql, seconds per 1,000 queries per channel, the query count,
    and the measured fusion: tuned on the whole set (optimistic) and cross-fitted (tuned on one
    half of the queries, measured on the other, both ways)."""
    connection = adapters.connect(catalog, settings=settings)
    try:
        adapters.build_bm25_index(connection)
        queries_file, qrels_file, queries, _ = adapters.run_script(
            connection, adapters.SQL_DIR / "export_docstring_queries.sql",
            {"repo_root": str(stdlib) + os.sep}).fetchone()
        halves = split_query_set(queries_file, qrels_file, catalog / "eval" / "halves")
        fusion: dict[str, Any] = {"held_out": []}
        for tune, test in ((halves[0], halves[1]), (halves[1], halves[0])):
            adapters.run_script(connection, adapters.SQL_DIR / "load_queries.sql",
                                 {"queries_path": tune[0], "qrels_path": tune[1]})
            tuned = run_relation(adapters.run_script(connection, adapters.SQL_DIR / "tune_fusion.sql"))[0]
            adapters.run_script(connection, adapters.SQL_DIR / "load_queries.sql",
                                 {"queries_path": test[0], "qrels_path": test[1]})
            run_ids = {channel: adapters.run_script(connection, adapters.SQL_DIR / "write_pool.sql",
                                                     {"channel": channel}).fetchone()[0]
                       for channel in CHANNELS}
            adapters.apply_views(connection, catalog)
            fusion["held_out"].append({"tuned": tuned, **{c: run_metrics(connection, r) for c, r in run_ids.items()}})
        adapters.run_script(connection, adapters.SQL_DIR / "load_queries.sql",
                             {"queries_path": queries_file, "qrels_path": qrels_file})
        fusion["whole_set"] = run_relation(adapters.run_script(connection, adapters.SQL_DIR / "tune_fusion.sql"))[0]
        for parameters in pool_parameters():
            adapters.run_script(connection, adapters.SQL_DIR / "write_pool.sql", parameters)
        # The hybrid run with the whole-set profile (no weights given): what write_pool.sql does by default.
        adapters.run_script(connection, adapters.SQL_DIR / "write_pool.sql", {"channel": "hybrid"})
        costs = {channel: 1000 * pool_seconds(connection, channel, runs) / queries for channel in CHANNELS}
        adapters.apply_views(connection, catalog)
        # The cross-fitting runs answered half the queries each: their rows belong to the fusion table.
        half_runs = {half[channel]["run_id"] for half in fusion["held_out"] for channel in CHANNELS}
        quality = [row for row in run_relation(adapters.run_script(connection, adapters.SQL_DIR / "report_eval.sql"))
                   if row["run_id"] not in half_runs]
        return quality, costs, queries, fusion
    finally:
        connection.close()


def pool_seconds(connection: duckdb.DuckDBPyConnection, channel: str, runs: int) -> float:
    timings = []
    for _ in range(runs):
        for cache in (explain.identifier_terms, explain.chunk_structure, explain.query_match_terms):
            cache.cache_clear()
        started = time.perf_counter()
        adapters.run_script(connection, adapters.SQL_DIR / "write_pool.sql", {"channel": channel})
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def quality_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| store | embedder | channel | settings | MRR@10 | nDCG@10 | recall@10 |",
             "|---|---|---|---|---|---|---|"]
    for (store, embedder), rows in results.items():
        for row in rows:
            settings = re.sub(r" depth=\d+", "", row["settings"])
            lines.append(f"| {store} | {embedder} | {row['channel']} | {settings} | {row['mrr_at_10']:.3f} | "
                         f"{row['ndcg_at_10']:.3f} | {row['recall_at_10']:.3f} |")
    return lines


def weighted_mean(halves: list[dict[str, Any]], channel: str, metric: str) -> float:
    total = sum(half[channel]["judged_queries"] for half in halves)
    return sum(half[channel][metric] * half[channel]["judged_queries"] for half in halves) / total


def fusion_table(fusions: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = ["| store | embedder | dense MRR@10 | bm25 MRR@10 | hybrid MRR@10 (cross-fitted) | hybrid recall@10 "
             "| >= best input | profile per half (faiss:bm25, rrf_k) | whole-set pick | whole-set MRR@10 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (store, embedder), fusion in fusions.items():
        halves = fusion["held_out"]
        dense, bm25, hybrid = (weighted_mean(halves, channel, "mrr_at_10") for channel in CHANNELS)
        recall = weighted_mean(halves, "hybrid", "recall_at_10")
        picks = "; ".join(f"{h['tuned']['faiss_weight']:g}:{h['tuned']['bm25_weight']:g}, {h['tuned']['rrf_k']:g}"
                          for h in halves)
        whole = fusion["whole_set"]
        lines.append(f"| {store} | {embedder} | {dense:.3f} | {bm25:.3f} | {hybrid:.3f} | {recall:.3f} | "
                     f"{'yes' if hybrid >= max(dense, bm25) - 1e-12 else 'no'} | {picks} | "
                     f"{whole['faiss_weight']:g}:{whole['bm25_weight']:g}, {whole['rrf_k']:g} | "
                     f"{whole['mrr_at_10']:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed pool writes per channel (median)")
    parser.add_argument("--embedders", nargs="+", default=list(EMBEDDERS),
                        help="embed_model values measured side by side (default: static-code minilm)")
    parser.add_argument("--stores", nargs="+", default=["stripped", "original"], choices=["stripped", "original"])
    args = parser.parse_args()
    stdlib = stdlib_root()
    RESULTS.mkdir(parents=True, exist_ok=True)
    repos = {"stripped": stripped_copy(stdlib, RESULTS / "stripped_src"), "original": stdlib}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fusions: dict[tuple[str, str], dict[str, Any]] = {}
    ingest_seconds: dict[str, float] = {}
    costs: dict[str, float] = {}
    queries = 0
    for store in args.stores:
        for embedder in args.embedders:
            catalog = RESULTS / f"{store}-{embedder.replace('/', '_')}"
            # A fresh catalog, so the ingest is timed whole (an unchanged store would be kept).
            shutil.rmtree(catalog, ignore_errors=True)
            settings = {"embed_model": embedder}
            seconds = prepare(repos[store], catalog, settings)
            ingest_seconds.setdefault(embedder, seconds)
            results[store, embedder], store_costs, queries, fusions[store, embedder] = evaluate(
                catalog, stdlib, args.runs, settings)
            costs = costs or store_costs  # the cost is measured on the first store and embedder
    cost_lines = ["| channel | s per 1,000 queries |", "|---|---|",
                  *(f"| {channel} | {seconds:.2f} |" for channel, seconds in costs.items())]
    ingest_lines = ["| embedder | ingest of the stripped store, s |", "|---|---|",
                    *(f"| {embedder} | {seconds:.1f} |" for embedder, seconds in ingest_seconds.items())]
    section = "\n".join([
        SECTION_TITLE, "",
        f"Command: `.venv/bin/python bench/bench_eval.py --embedders {' '.join(args.embedders)}`. "
        f"{queries} queries (first docstring sentences of {', '.join(adapters.DEMO_PACKAGES)} from Python "
        f"{platform.python_version()}'s standard library), each answered by its function's chunk (grade 2 for "
        "the chunk of the `def` line, 1 for the rest of the body); flat FAISS index over each embedder's "
        "vectors, BM25 over `code_terms`, hybrid = weighted RRF over each channel's top 100. "
        "*stripped*: docstrings blanked out of the indexed code (the fair measure); *original*: the demo store, "
        "whose code contains the very sentences asked (optimistic). The static model never trained on these "
        "packages (`codeintel/corpus.py` HELD_OUT_PACKAGES).", "",
        "Fusion measured, not assumed: `sql/tune_fusion.sql` picks weights and rrf_k on one half of the queries "
        "(split by a hash of query_id) and the hybrid run is scored on the other half, both ways "
        "(*cross-fitted*: no query scores the profile it helped pick); *whole-set* is the pick over all "
        "queries, the profile a catalog gets when tuned on its own query set (optimistic on that set).", "",
        *fusion_table(fusions), "",
        "Every run (the hybrid rows without weights use the whole-set profile, `sql/write_pool.sql`'s default):", "",
        *quality_table(results), "",
        *ingest_lines, "",
        f"Pool writing (`sql/write_pool.sql`, k = 10: channel, explain columns, zstd Parquet), stripped store, "
        f"{args.embedders[0]}, the {queries} queries' time scaled to 1,000, median of {args.runs}, "
        f"{os.cpu_count()} cores, duckdb {duckdb.__version__}:", "",
        *cost_lines, "",
    ])
    write_section(section, SECTION_TITLE)
    print(section)


if __name__ == "__main__":
    main()

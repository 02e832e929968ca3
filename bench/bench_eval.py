"""Docstring-to-function retrieval on the demo store: quality per channel and pool-writing cost.

The store is the demo's (``bootstrap.DEMO_PACKAGES`` of this Python's standard library);
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

    .venv/bin/python bench/bench_eval.py
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import shutil
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402  (needs the path above)

import bootstrap  # noqa: E402
from udfs import explain  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "eval"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION_TITLE = "## Evaluation: docstring-to-function retrieval (bench/bench_eval.py)"
#: (faiss_weight, bm25_weight) of the hybrid runs.
HYBRID_WEIGHTS = ((1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (1.0, 0.5))
CHANNELS = ("faiss", "bm25", "hybrid")


def blank_docstrings(source: str) -> str:
    """``source`` with each module, class and function docstring replaced by ``pass``.

    The lines a docstring took are kept as blank lines, so every other line keeps its number.
    """
    tree = ast.parse(source)
    docstrings = [
        node.body[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    ]
    lines = source.splitlines(keepends=True)
    for docstring in sorted(docstrings, key=lambda node: node.lineno, reverse=True):
        first, last = docstring.lineno - 1, (docstring.end_lineno or docstring.lineno) - 1
        # ast column offsets count UTF-8 bytes.
        head = lines[first].encode()[: docstring.col_offset].decode()
        tail = lines[last].encode()[docstring.end_col_offset or 0 :].decode()
        lines[first : last + 1] = [head + "pass" + tail, *["\n"] * (last - first)]
    stripped = "".join(lines)
    ast.parse(stripped)  # still valid Python
    return stripped


def stripped_copy(stdlib: Path, destination: Path) -> Path:
    """The demo packages copied to ``destination`` with their docstrings blanked out."""
    shutil.rmtree(destination, ignore_errors=True)
    for package in bootstrap.DEMO_PACKAGES:
        shutil.copytree(stdlib / package, destination / package,
                        ignore=shutil.ignore_patterns("__pycache__", *bootstrap.IGNORED_DIRECTORIES))
    for path in destination.rglob("*.py"):
        path.write_text(blank_docstrings(path.read_text(encoding="utf-8")), encoding="utf-8")
    return destination


def prepare(repo: Path, catalog: Path) -> None:
    include = [f"{package}/**" for package in bootstrap.DEMO_PACKAGES]
    result = bootstrap.ingest(repo, catalog, include=include)
    print(f"{catalog.name}: {result.manifest['chunk_count']} chunks "
          f"({'unchanged' if result.unchanged else 'ingested'})", file=sys.stderr)
    bootstrap.build_index(catalog, "flat")


def pool_parameters() -> list[dict[str, Any]]:
    return [{"channel": "faiss"}, {"channel": "bm25"}] + [
        {"channel": "hybrid", "faiss_weight": faiss_weight, "bm25_weight": bm25_weight}
        for faiss_weight, bm25_weight in HYBRID_WEIGHTS
    ]


def run_relation(relation: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def evaluate(catalog: Path, stdlib: Path, runs: int) -> tuple[list[dict[str, Any]], dict[str, float], int]:
    """Quality rows of sql/report_eval.sql, seconds per 1,000 queries per channel, and the query count."""
    connection = bootstrap.connect(catalog)
    try:
        bootstrap.build_bm25_index(connection)
        queries_file, qrels_file, queries, _ = bootstrap.run_script(
            connection, bootstrap.SQL_DIR / "export_docstring_queries.sql",
            {"repo_root": str(stdlib) + os.sep}).fetchone()
        bootstrap.run_script(connection, bootstrap.SQL_DIR / "load_queries.sql",
                             {"queries_path": queries_file, "qrels_path": qrels_file})
        for parameters in pool_parameters():
            bootstrap.run_script(connection, bootstrap.SQL_DIR / "write_pool.sql", parameters)
        costs = {channel: 1000 * pool_seconds(connection, channel, runs) / queries for channel in CHANNELS}
        bootstrap.apply_views(connection, catalog)
        quality = run_relation(bootstrap.run_script(connection, bootstrap.SQL_DIR / "report_eval.sql"))
        return quality, costs, queries
    finally:
        connection.close()


def pool_seconds(connection: duckdb.DuckDBPyConnection, channel: str, runs: int) -> float:
    timings = []
    for _ in range(runs):
        for cache in (explain.identifier_terms, explain.chunk_structure, explain.query_match_terms):
            cache.cache_clear()
        started = time.perf_counter()
        bootstrap.run_script(connection, bootstrap.SQL_DIR / "write_pool.sql", {"channel": channel})
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def quality_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| store | channel | settings | MRR@10 | nDCG@10 | recall@10 |", "|---|---|---|---|---|---|"]
    for store, rows in results.items():
        for row in rows:
            settings = re.sub(r" depth=\d+", "", row["settings"])
            lines.append(f"| {store} | {row['channel']} | {settings} | {row['mrr_at_10']:.3f} | "
                         f"{row['ndcg_at_10']:.3f} | {row['recall_at_10']:.3f} |")
    return lines


def write_section(text: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md (or append it), keeping the others."""
    existing = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION_TITLE) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text, existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text
    BENCHMARKS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed pool writes per channel (median)")
    args = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stores = {"stripped": stripped_copy(stdlib, RESULTS / "stripped_src"), "original": stdlib}
    results: dict[str, list[dict[str, Any]]] = {}
    costs: dict[str, float] = {}
    queries = 0
    for store, repo in stores.items():
        prepare(repo, RESULTS / store)
        results[store], store_costs, queries = evaluate(RESULTS / store, stdlib, args.runs)
        costs = costs or store_costs  # the cost is measured on the first (stripped) store
    cost_lines = ["| channel | s per 1,000 queries |", "|---|---|",
                  *(f"| {channel} | {seconds:.2f} |" for channel, seconds in costs.items())]
    section = "\n".join([
        SECTION_TITLE, "",
        f"{queries} queries (first docstring sentences of {', '.join(bootstrap.DEMO_PACKAGES)} from Python "
        f"{platform.python_version()}'s standard library), each answered by its function's chunk (grade 2 for "
        "the chunk of the `def` line, 1 for the rest of the body); flat FAISS index over all-MiniLM-L6-v2 int8 "
        "embeddings, BM25 over `code_terms`, hybrid = RRF with rrf_k 60 over each channel's top 100. "
        "*stripped*: docstrings blanked out of the indexed code (the fair measure); *original*: the demo store, "
        "whose code contains the very sentences asked (optimistic).", "",
        *quality_table(results), "",
        f"Pool writing (`sql/write_pool.sql`, k = 10: channel, explain columns, zstd Parquet), stripped store, "
        f"the {queries} queries' time scaled to 1,000, median of {args.runs}, {os.cpu_count()} cores, "
        f"duckdb {duckdb.__version__}:", "",
        *cost_lines, "",
    ])
    write_section(section)
    print(section)


if __name__ == "__main__":
    main()

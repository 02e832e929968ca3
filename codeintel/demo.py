"""The demo's evaluation and lenses, driven through the SQL scripts: BM25, docstring queries,
fusion, pools, coverage, per-channel quality and the XTR oracle lens."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import duckdb

from codeintel.chunk_locations import apply_catalog_objects
from codeintel.layout import SQL_DIR
from codeintel.sqlfiles import print_relation, run_script

LOG = logging.getLogger("codeintel")

#: The demo's XTR lens: lens queries and chunks drawn besides their pooled ones (see evaluate_demo).
DEMO_XTR_QUERIES = 12


DEMO_XTR_SAMPLE = 40



def build_bm25_index(connection: duckdb.DuckDBPyConnection,
                     symbol_repeats: int | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run ``sql/build_bm25_index.sql``; return its summary row."""
    return run_script(connection, SQL_DIR / "build_bm25_index.sql", {"symbol_repeats": symbol_repeats})


def build_xtr_lens(connection: duckdb.DuckDBPyConnection, catalog: Path, **parameters: Any) -> None:
    """Build the XTR oracle lens (``sql/build_xtr.sql``), apply its views, print ``sql/report_xtr.sql``."""
    LOG.info("XTR lens: %s", run_script(connection, SQL_DIR / "build_xtr.sql", parameters).fetchone())
    apply_catalog_objects(connection, catalog)
    print_relation(run_script(connection, SQL_DIR / "report_xtr.sql"))


def evaluate_demo(connection: duckdb.DuckDBPyConnection, catalog: Path, repo_root: Path) -> None:
    """Docstring-to-function evaluation of the demo store; prints coverage and per-channel quality.

    The queries are first sentences of the stdlib functions' docstrings, the answers the
    functions' chunks (sql/export_docstring_queries.sql).  The indexed code still holds those
    docstrings, a known bias in every channel's favour; bench/bench_eval.py also measures on
    a copy with the docstrings blanked out.
    """
    LOG.info("BM25 index: %s", build_bm25_index(connection).fetchone())
    queries_file, qrels_file, queries, functions = run_script(
        connection, SQL_DIR / "export_docstring_queries.sql", {"repo_root": str(repo_root) + os.sep}).fetchone()
    LOG.info("docstring query set: %d queries from %d documented functions", queries, functions)
    run_script(connection, SQL_DIR / "load_queries.sql", {"queries_path": queries_file, "qrels_path": qrels_file})
    # The hybrid run fuses with weights measured on this query set (fusion.json), not assumed ones.
    LOG.info("fusion profile: %s", run_script(connection, SQL_DIR / "tune_fusion.sql").fetchone())
    for channel in ("faiss", "bm25", "hybrid"):
        LOG.info("pool: %s", run_script(connection, SQL_DIR / "write_pool.sql", {"channel": channel}).fetchone())
    apply_catalog_objects(connection, catalog)
    heatmap_file, _ = run_script(connection, SQL_DIR / "write_coverage_heatmap.sql").fetchone()
    LOG.info("coverage heatmap: %s; the docstrings asked are in the indexed code, so scores are optimistic",
             heatmap_file)
    print_relation(run_script(connection, SQL_DIR / "report_coverage.sql"))
    print_relation(run_script(connection, SQL_DIR / "report_eval.sql"))
    # A seeded sample of DEMO_XTR_QUERIES queries: their pooled chunks plus DEMO_XTR_SAMPLE drawn ones make a
    # dev split of about 200 chunks, whose encoder pass takes about half a minute on two cores.
    build_xtr_lens(connection, catalog, query_sample=DEMO_XTR_QUERIES, sample=DEMO_XTR_SAMPLE)


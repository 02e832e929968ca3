"""v_eval_per_query / v_eval_per_channel against ir-measures (pytrec_eval), on generated runs."""

from __future__ import annotations

import datetime
import math
import shutil
from pathlib import Path

import duckdb
import ir_measures
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ir_measures import RR, R, nDCG

import bootstrap
from tests.conftest import copy_catalog
from tests.eval_support import write_hand_run

RUN_K = 15
MEASURES = {"rr_at_10": RR @ 10, "ndcg_at_10": nDCG @ 10, "recall_at_10": R @ 10, "recall_at_k": R @ RUN_K}
CREATED = datetime.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def metrics_catalog(synthetic_catalog_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """A synthetic catalog whose run and qrels files each test rewrites; views applied once."""
    catalog = copy_catalog(synthetic_catalog_template, tmp_path_factory.mktemp("metrics") / "catalog")
    write_files(catalog, {"q": [(1, 1)]}, {"first": {"q": [1]}})
    connection = bootstrap.connect(catalog)
    # The files are rewritten by pyarrow many times a second; DuckDB's file cache checks
    # modification times, which may not change between two rewrites.
    connection.execute("SET enable_external_file_cache = false")
    yield catalog, connection
    connection.close()


def write_files(catalog: Path, qrels: dict[str, list[tuple[int, int]]], runs: dict[str, dict[str, list[int]]]) -> None:
    """Replace the qrels file and every run: qrels as (chunk_id, grade) per query, runs as ranked ids."""
    for directory in ("pools", "runs"):
        shutil.rmtree(catalog / directory, ignore_errors=True)
    for run_id, hits in runs.items():
        write_hand_run(catalog, run_id, "generated", hits, RUN_K, CREATED)
    (catalog / "eval").mkdir(exist_ok=True)
    rows = [{"query_id": query_id, "chunk_id": chunk_id, "grade": grade}
            for query_id, judged in qrels.items() for chunk_id, grade in judged]
    # The columns of the file sql/load_queries.sql writes; judgments here are by chunk id only.
    schema = pa.schema([("query_id", pa.string()), ("chunk_id", pa.int64()), ("uri", pa.string()),
                        ("start_line", pa.int32()), ("end_line", pa.int32()), ("grade", pa.int32())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), catalog / "eval" / "qrels.parquet")


def per_query(connection: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, float]]:
    relation = connection.sql("SELECT * FROM v_eval_per_query")
    rows = [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]
    return {(row["run_id"], row["query_id"]): {name: row[name] for name in MEASURES} for row in rows}


def reference(qrels: dict[str, list[tuple[int, int]]], hits: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """ir-measures per query; scores fall with rank so pytrec_eval's own ordering is the run's."""
    judged = {query_id: {str(chunk_id): grade for chunk_id, grade in rows} for query_id, rows in qrels.items()}
    run = {query_id: {str(chunk_id): 1.0 / rank for rank, chunk_id in enumerate(ids, start=1)}
           for query_id, ids in hits.items()}
    names = {measure: name for name, measure in MEASURES.items()}
    values: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(list(MEASURES.values()), judged, run):
        values.setdefault(metric.query_id, {})[names[metric.measure]] = metric.value
    return values


@st.composite
def judged_runs(draw: st.DrawFn) -> tuple[dict, dict[str, dict[str, list[int]]]]:
    """Qrels with graded judgments (at least one relevant chunk per query) and two runs over them."""
    universe = st.integers(min_value=1, max_value=40)
    query_ids = [f"q{i}" for i in range(draw(st.integers(1, 6)))]
    qrels = {}
    for query_id in query_ids:
        chunks = draw(st.lists(universe, min_size=1, max_size=12, unique=True))
        grades = draw(st.lists(st.integers(0, 3), min_size=len(chunks), max_size=len(chunks)))
        assume(any(grades))
        qrels[query_id] = list(zip(chunks, grades, strict=True))
    runs = {run_id: {query_id: draw(st.lists(universe, min_size=1, max_size=RUN_K, unique=True))
                     for query_id in query_ids}
            for run_id in ("run-a", "run-b")}
    return qrels, runs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=judged_runs())
def test_metrics_equal_ir_measures(metrics_catalog, case) -> None:
    catalog, connection = metrics_catalog
    qrels, runs = case
    write_files(catalog, qrels, runs)
    ours = per_query(connection)
    for run_id, hits in runs.items():
        expected = reference(qrels, hits)
        for query_id in qrels:
            assert ours[(run_id, query_id)] == pytest.approx(expected[query_id], abs=1e-9), (run_id, query_id)
        aggregate = connection.execute(
            "SELECT mrr_at_10, ndcg_at_10, recall_at_10, recall_at_k FROM v_eval_per_channel WHERE run_id = ?",
            [run_id]).fetchone()
        means = [sum(expected[q][name] for q in qrels) / len(qrels) for name in MEASURES]
        assert aggregate == pytest.approx(means, abs=1e-9)


def test_graded_ndcg_uses_linear_gain(metrics_catalog) -> None:
    catalog, connection = metrics_catalog
    # Chunk 1 grade 3, chunk 2 grade 1; the run ranks 2, 9, 1.
    write_files(catalog, {"q": [(1, 3), (2, 1)]}, {"r": {"q": [2, 9, 1]}})
    row = connection.execute("SELECT rr_at_10, ndcg_at_10, recall_at_10 FROM v_eval_per_query").fetchone()
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert row == pytest.approx((1.0, dcg / ideal, 1.0))


def test_a_query_without_results_scores_zero_and_unjudged_queries_do_not_count(metrics_catalog) -> None:
    catalog, connection = metrics_catalog
    write_files(catalog, {"answered": [(1, 1)], "unanswered": [(2, 1)], "only-negatives": [(3, 0)]},
                {"r": {"answered": [1, 5]}})
    assert connection.execute(
        "SELECT query_id, rr_at_10, ndcg_at_10, recall_at_k FROM v_eval_per_query ORDER BY query_id").fetchall() == [
        ("answered", 1.0, 1.0, 1.0), ("unanswered", 0.0, 0.0, 0.0)]
    assert connection.execute("SELECT judged_queries, mrr_at_10 FROM v_eval_per_channel").fetchone() == (2, 0.5)


def test_recall_at_k_counts_beyond_rank_10(metrics_catalog) -> None:
    catalog, connection = metrics_catalog
    write_files(catalog, {"q": [(1, 1), (2, 1)]}, {"r": {"q": [*range(100, 110), 1, 2]}})
    assert connection.execute("SELECT rr_at_10, recall_at_10, recall_at_k, k FROM v_eval_per_query").fetchone() == (
        0.0, 0.0, 1.0, RUN_K)

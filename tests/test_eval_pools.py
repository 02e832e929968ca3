"""Pools: sql/write_pool.sql registers runs and writes one Parquet file per run, never overwriting."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import errors
from codeintel.chunk_locations import apply_catalog_objects
from tests.conftest import EVAL_QUERY_COUNT
from tests.eval_support import write_pool

POOL_COLUMNS = ["run_id", "query_id", "channel", "rank", "chunk_id", "score", "explain_symbols",
                "explain_ast_kinds", "explain_cst_hits"]


@pytest.fixture
def connection(eval_catalog: Path) -> duckdb.DuckDBPyConnection:
    connection = bootstrap.connect(eval_catalog)
    yield connection
    connection.close()


def test_each_channel_writes_a_run_and_the_pool_view_unions_them(eval_catalog: Path, connection) -> None:
    summaries = [write_pool(connection, channel=channel, k=5) for channel in ("faiss", "bm25", "hybrid")]
    run_ids = [summary["run_id"] for summary in summaries]
    assert len(set(run_ids)) == 3
    for summary in summaries:
        pool_file = Path(summary["pool_file"])
        assert pool_file == eval_catalog / "pools" / f"{summary['run_id']}.parquet"
        assert pq.read_schema(pool_file).names == POOL_COLUMNS
        assert pq.ParquetFile(pool_file).metadata.row_group(0).column(0).compression == "ZSTD"
        assert (eval_catalog / "runs" / f"{summary['run_id']}.parquet").is_file()
        assert summary["pool_rows"] == EVAL_QUERY_COUNT * 5

    apply_catalog_objects(connection, eval_catalog)  # the pool views appear once their files exist
    assert connection.execute(
        "SELECT channel, count(DISTINCT query_id), min(rank), max(rank), count(*) FROM pool GROUP BY channel "
        "ORDER BY channel").fetchall() == [(channel, EVAL_QUERY_COUNT, 1, 5, EVAL_QUERY_COUNT * 5)
                                           for channel in ("bm25", "faiss", "hybrid")]
    registered = connection.execute("SELECT run_id, channel, index_version, parameters ->> 'k' FROM runs "
                                    "ORDER BY created_at").fetchall()
    assert [row[:2] for row in registered] == [(s["run_id"], s["channel"]) for s in summaries]
    assert registered[0][2].startswith("faiss:") and registered[1][2].startswith("bm25:")
    assert registered[2][2].startswith("faiss:") and "+bm25:" in registered[2][2]
    assert {row[3] for row in registered} == {"5"}
    # The Parquet mirror holds the same rows as the table.
    assert connection.execute("SELECT * FROM v_runs EXCEPT SELECT *, (parameters ->> 'k')::INTEGER FROM runs"
                              ).fetchall() == []


def test_a_run_never_overwrites_another(eval_catalog: Path, connection) -> None:
    first = write_pool(connection, channel="bm25", run_id="fixed-run")
    pool_file = Path(first["pool_file"])
    before = pool_file.read_bytes()
    with pytest.raises(errors.CatalogError, match="exists and overwrite is false"):
        write_pool(connection, channel="faiss", run_id="fixed-run")
    assert pool_file.read_bytes() == before
    assert connection.execute("SELECT channel FROM runs WHERE run_id = 'fixed-run'").fetchall() == [("bm25",)]


def test_an_unknown_channel_is_refused(connection) -> None:
    with pytest.raises(errors.CatalogError, match="channel must be 'faiss', 'bm25' or 'hybrid', got 'vector'"):
        write_pool(connection, channel="vector")


def test_batched_faiss_channel_equals_one_search_per_query(connection) -> None:
    batched = connection.execute("SELECT query_id, rank, chunk_id FROM channel_faiss(k := 7) "
                                 "ORDER BY query_id, rank").fetchall()
    one_by_one = connection.execute(
        "SELECT q.query_id, r.rank, r.chunk_id FROM queries AS q, LATERAL faiss_search(q.embedding, k := 7) AS r "
        "ORDER BY q.query_id, r.rank").fetchall()
    assert batched == one_by_one and len(batched) == EVAL_QUERY_COUNT * 7


def test_explain_columns_say_why_a_chunk_came_back(eval_catalog: Path, connection) -> None:
    write_pool(connection, channel="bm25", k=3)
    apply_catalog_objects(connection, eval_catalog)
    # Query q7 is 'fn_7 value'; its best BM25 hit is the chunk defining fn_7(value).
    row = connection.execute(
        "SELECT c.symbols, p.explain_symbols, p.explain_ast_kinds, p.explain_cst_hits "
        "FROM pool AS p JOIN chunks AS c ON c.id = p.chunk_id WHERE p.query_id = 'q7' AND p.rank = 1").fetchone()
    assert row[0] == ["fn_7"] and row[1] == ["fn_7"]
    assert row[2][:3] == ["function_definition", "identifier", "parameters"]
    assert row[3] == ["fn_7", "value"]


def test_write_pool_needs_queries_and_the_bm25_index(synthetic_catalog: Path) -> None:
    connection = bootstrap.connect(synthetic_catalog)
    try:
        with pytest.raises(errors.CatalogError, match="no queries table; load a query set"):
            write_pool(connection, channel="faiss")
        connection.execute("CREATE TABLE queries AS SELECT 'q' AS query_id, 'x' AS text, embedding FROM chunks LIMIT 1")
        with pytest.raises(errors.CatalogError, match="channel hybrid needs the BM25 index; build it"):
            write_pool(connection, channel="hybrid")
    finally:
        connection.close()


def test_parameters_of_one_run_do_not_leak_into_the_next(connection) -> None:
    """DuckDB variables outlive a script; write_pool.sql resets its parameters once read."""
    write_pool(connection, channel="hybrid", bm25_weight=2.5, run_id="weighted")
    write_pool(connection, channel="hybrid")
    weights = connection.execute("SELECT (parameters ->> 'bm25_weight')::DOUBLE FROM runs ORDER BY created_at"
                                 ).fetchall()
    assert weights == [(2.5,), (1.0,)]


def test_runs_record_the_index_version_and_tuning_in_force(eval_catalog: Path, connection) -> None:
    current = eval_catalog / "index" / "CURRENT"
    assert connection.execute("SELECT eval_catalog_versions().faiss_tuning").fetchone() == (None,)
    (current / "tuning.json").write_text('{"parameters": "nprobe=8"}')
    versions = connection.execute("SELECT unnest(eval_catalog_versions())").fetchone()
    assert versions[2:] == (current.resolve().name, "nprobe=8")
    assert versions[0] == (eval_catalog / "store" / "CURRENT").resolve().name
    write_pool(connection, channel="bm25", run_id="lexical")
    assert connection.execute("SELECT tuning_profile FROM runs WHERE run_id = 'lexical'").fetchone() == (None,)

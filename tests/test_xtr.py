"""The XTR oracle lens: MaxSim kernel, float16 token vectors, both oracles, the recall views and their errors."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import errors, layout, sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from tests.conftest import EVAL_QUERY_COUNT, copy_catalog
from tests.eval_support import load_query_set, write_hand_run, write_pool
from udfs import store_schema, xtr
from udfs.embedding import SentenceEmbedder
from udfs.registry import UdfError

POOL_K = 5
LENS_K = 10
LENS_SAMPLE = 20
# float16 keeps 11 significant bits: components of a unit vector (below 1) move by at most 2^-12.
FLOAT16_TOLERANCE = 2.0**-12


def direct_maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """Sum over query tokens of the best inner product with a document token, one pair at a time."""
    total = 0.0
    for query_token in query:
        total += max(float(np.dot(query_token, document_token)) for document_token in document)
    return total


def stacked(texts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(text) for text in texts]
    return np.concatenate(texts), np.concatenate(([0], np.cumsum(lengths)[:-1]))


@pytest.mark.parametrize("block_floats", [xtr.SIMILARITY_BLOCK_FLOATS, 7])
def test_late_interaction_scores_equal_a_direct_maxsim(block_floats: int, monkeypatch) -> None:
    # 7 floats per block forces one query-token row per matmul: the blocks must stitch exactly.
    monkeypatch.setattr(xtr, "SIMILARITY_BLOCK_FLOATS", block_floats)
    rng = np.random.default_rng(7)
    queries = [rng.standard_normal((n, 6)).astype(np.float32) for n in (1, 3, 4)]
    documents = [rng.standard_normal((n, 6)).astype(np.float32) for n in (2, 1, 5, 3)]
    scores = xtr.late_interaction_scores(*stacked(queries), *stacked(documents))
    expected = [[direct_maxsim(query, document) for document in documents] for query in queries]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_ranked_top_k_breaks_ties_towards_the_first_column() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]], dtype=np.float32)
    assert xtr.ranked_top_k(scores, 3).tolist() == [[1, 0, 2], [0, 1, 2]]
    assert xtr.ranked_top_k(scores, 10).shape == (2, 4)


# --------------------------------------------------------------------------- a lens built on the eval catalog


@pytest.fixture(scope="module")
def lens_catalog(eval_catalog_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eval catalog with a faiss and a bm25 run (k = 5) and the XTR lens built over them."""
    catalog = copy_catalog(eval_catalog_template, tmp_path_factory.mktemp("xtr") / "catalog")
    connection = bootstrap.connect(catalog)
    try:
        for channel in ("faiss", "bm25"):
            write_pool(connection, channel=channel, k=POOL_K)
    finally:
        connection.close()
    # Reconnected, so the pool view reads the new pool files.
    connection = bootstrap.connect(catalog)
    try:
        summary = sqlfiles.run_script(connection, layout.SQL_DIR / "build_xtr.sql",
                                       {"sample": LENS_SAMPLE, "k": LENS_K}).fetchone()
        assert summary[2:5] == (EVAL_QUERY_COUNT, EVAL_QUERY_COUNT, LENS_K)
        apply_catalog_objects(connection, catalog)
    finally:
        connection.close()
    return catalog


@pytest.fixture(scope="module")
def lens_connection(lens_catalog: Path) -> duckdb.DuckDBPyConnection:
    # Read-only, so the stock client's process below can open the file too.
    connection = bootstrap.connect(lens_catalog, read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def read_token_vectors(path: Path, key: str) -> dict[object, np.ndarray]:
    """Each text's stored token vectors (float16 upcast), rows in token order."""
    table = pq.read_table(path).sort_by([(key, "ascending"), ("token_position", "ascending")])
    vectors = table.column("vector").combine_chunks()
    matrix = vectors.flatten().to_numpy().astype(np.float32).reshape(len(table), vectors.type.list_size)
    keys = np.asarray(table.column(key).to_pylist(), dtype=object)
    return {value: matrix[keys == value] for value in dict.fromkeys(keys)}


def test_dev_split_is_the_pooled_and_judged_chunks_plus_the_sample(lens_catalog: Path,
                                                                    lens_connection: duckdb.DuckDBPyConnection) -> None:
    split = lens_connection.execute(
        "SELECT chunk_id, pooled, judged, sampled FROM read_parquet(?)", [str(lens_catalog / "xtr/dev_split.parquet")]
    ).fetchall()
    pooled = {row[0] for row in lens_connection.execute("SELECT DISTINCT chunk_id FROM pool").fetchall()}
    judged = {row[0] for row in lens_connection.execute("SELECT chunk_id FROM v_qrels_chunks WHERE grade > 0")
              .fetchall()}
    assert {row[0] for row in split if row[1]} == pooled
    assert {row[0] for row in split if row[2]} == judged
    sampled = {row[0] for row in split if row[3]}
    assert len(sampled) == LENS_SAMPLE and not sampled & (pooled | judged)
    assert {row[0] for row in split} == pooled | judged | sampled


def test_token_vectors_round_trip_through_float16(lens_catalog: Path, embedder: SentenceEmbedder) -> None:
    path = lens_catalog / "xtr" / xtr.TOKEN_VECTORS_FILE
    schema = pq.read_schema(path)
    assert schema.field("vector").type == pa.list_(pa.float16(), 384)
    stored = read_token_vectors(path, "chunk_id")
    chunks = store_schema.read_live_chunks(layout.current_store(lens_catalog), ["id", "content"])
    content = dict(zip(chunks.column("id").to_pylist(), chunks.column("content").to_pylist(), strict=True))
    chunk_ids = sorted(stored)[:8]
    fresh = embedder.embed_tokens([content[chunk_id] for chunk_id in chunk_ids])
    for chunk_id, vectors in zip(chunk_ids, fresh, strict=True):
        assert stored[chunk_id].shape == vectors.shape
        np.testing.assert_allclose(stored[chunk_id], vectors, rtol=0, atol=FLOAT16_TOLERANCE)
    # A stock DuckDB reads the float16 column as FLOAT, with the same values.
    first = duckdb.sql(f"SELECT vector FROM read_parquet('{path}') WHERE chunk_id = {chunk_ids[0]} "
                       "ORDER BY token_position LIMIT 1").fetchone()[0]
    np.testing.assert_array_equal(np.asarray(first, dtype=np.float32), stored[chunk_ids[0]][0])
    tokens = duckdb.sql(f"SELECT list(token ORDER BY token_position) FROM read_parquet('{path}') "
                        f"WHERE chunk_id = {chunk_ids[0]}").fetchone()[0]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) == len(fresh[0])


def test_xtr_oracle_is_the_maxsim_top_k_of_the_stored_vectors(lens_catalog: Path) -> None:
    lens = lens_catalog / "xtr"
    chunks = read_token_vectors(lens / xtr.TOKEN_VECTORS_FILE, "chunk_id")
    queries = read_token_vectors(lens / xtr.QUERY_TOKEN_VECTORS_FILE, "query_id")
    oracle = pq.read_table(lens / xtr.ORACLE_FILE).to_pylist()
    assert len(oracle) == EVAL_QUERY_COUNT * LENS_K
    chunk_ids = sorted(chunks)
    for query_id in ("q0", "q17"):
        scores = np.array([direct_maxsim(queries[query_id], chunks[chunk_id]) for chunk_id in chunk_ids])
        best = np.argsort(-scores, kind="stable")[:LENS_K]
        rows = [row for row in oracle if row["query_id"] == query_id]
        assert [row["rank"] for row in rows] == list(range(1, LENS_K + 1))
        assert [row["chunk_id"] for row in rows] == [chunk_ids[i] for i in best]
        np.testing.assert_allclose([row["score"] for row in rows], scores[best], rtol=1e-5)


def test_flat_oracle_is_exact_inner_product_over_the_same_split(lens_catalog: Path) -> None:
    lens = lens_catalog / "xtr"
    split = pq.read_table(lens / xtr.DEV_SPLIT_FILE).column("chunk_id").to_numpy()
    store = store_schema.read_live_chunks(layout.current_store(lens_catalog), ["id", "embedding"])
    position = {chunk_id: row for row, chunk_id in enumerate(store.column("id").to_pylist())}
    vectors = np.asarray(store.column("embedding").to_pylist(), dtype=np.float32)[[position[i] for i in split]]
    queries = pq.read_table(lens_catalog / "eval" / "queries.parquet")
    query_vectors = dict(zip(queries.column("query_id").to_pylist(), queries.column("embedding").to_pylist(),
                             strict=True))
    flat = pq.read_table(lens / xtr.FLAT_ORACLE_FILE).to_pylist()
    for query_id in ("q3", "q39"):
        scores = vectors @ np.asarray(query_vectors[query_id], dtype=np.float32)
        best = np.argsort(-scores, kind="stable")[:LENS_K]
        rows = [row for row in flat if row["query_id"] == query_id]
        assert [row["chunk_id"] for row in rows] == split[best].tolist()
        np.testing.assert_allclose([row["score"] for row in rows], scores[best], rtol=1e-5)


def test_exact_faiss_run_agrees_with_the_flat_oracle(lens_connection: duckdb.DuckDBPyConnection) -> None:
    """The Flat index's top 5 over the whole store are pooled, so they are the split's exact top 5 too."""
    rows = lens_connection.execute(
        "SELECT channel, k, lens_queries, xtr_queries, recall_vs_flat, hits_outside_dev_split, note "
        "FROM v_xtr_recall_per_run ORDER BY channel").fetchall()
    assert [row[:4] for row in rows] == [("bm25", POOL_K, EVAL_QUERY_COUNT, EVAL_QUERY_COUNT),
                                         ("faiss", POOL_K, EVAL_QUERY_COUNT, EVAL_QUERY_COUNT)]
    assert rows[1][4] == pytest.approx(1.0)
    assert {row[5] for row in rows} == {0}
    assert all("not ground truth" in row[6] for row in rows)


def test_a_stock_duckdb_client_reads_the_lens_views(lens_catalog: Path) -> None:
    program = textwrap.dedent("""
        import sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print(con.execute("SELECT count(*) FROM v_xtr_recall_per_query").fetchone()[0])
        print(con.execute("SELECT count(*) FROM v_xtr_recall_per_run WHERE recall_vs_xtr IS NOT NULL").fetchone()[0])
    """)
    output = subprocess.run(
        [sys.executable, "-I", "-c", program, str(lens_catalog / layout.CATALOG_DB)],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()
    assert output == [str(2 * EVAL_QUERY_COUNT), "2"]


# --------------------------------------------------------------------------- the views on a hand-made lens


def write_hand_lens(catalog: Path) -> None:
    """Lens depth 3 over chunks 1..8; q1 has both rankings, q2 (no text) a Flat one only."""
    lens = catalog / xtr.LENS_DIR
    lens.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(
        [{"chunk_id": chunk_id, "pooled": True, "judged": False, "sampled": False, "token_count": 4}
         for chunk_id in range(1, 9)], schema=xtr.DEV_SPLIT_SCHEMA), lens / xtr.DEV_SPLIT_FILE)

    def ranking(rankings: dict[str, list[int]]) -> pa.Table:
        return pa.Table.from_pylist(
            [{"query_id": query_id, "rank": rank, "chunk_id": chunk_id, "score": 1.0 / rank}
             for query_id, chunk_ids in rankings.items() for rank, chunk_id in enumerate(chunk_ids, start=1)],
            schema=xtr.ORACLE_SCHEMA)

    pq.write_table(ranking({"q1": [1, 2, 3, 4]}), lens / xtr.ORACLE_FILE)
    pq.write_table(ranking({"q1": [2, 5, 1, 3], "q2": [6, 7, 8, 5]}), lens / xtr.FLAT_ORACLE_FILE)
    pq.write_table(pa.Table.from_pylist([{"built_at": datetime.datetime(2026, 1, 2), "k": 3, "note": xtr.NOTE}],
                                        schema=xtr.LENS_SCHEMA), lens / xtr.LENS_FILE)


def test_recall_views_on_a_hand_made_lens(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    created = datetime.datetime(2026, 1, 1)
    # faiss at k 3: chunk 9 is outside the dev split.  bm25 at k 5 is compared at the lens depth 3 and
    # returned nothing for q2.  "elsewhere" ran on another query set and is left out.
    write_hand_run(catalog, "faiss-run", "faiss", {"q1": [1, 9, 5], "q2": [5, 6, 7]}, 3, created)
    write_hand_run(catalog, "bm25-run", "bm25", {"q1": [3, 2, 4, 1, 7]}, 5, created)
    write_hand_run(catalog, "elsewhere", "hybrid", {"q9": [1]}, 3, created)
    write_hand_lens(catalog)
    connection = bootstrap.connect(catalog)
    try:
        per_query = connection.execute(
            "SELECT run_id, query_id, k, recall_vs_xtr, recall_vs_flat, xtr_flat_overlap, hits_in_dev_split, "
            "hits_outside_dev_split FROM v_xtr_recall_per_query ORDER BY run_id, query_id").fetchall()
        per_run = connection.execute(
            "SELECT run_id, k, lens_queries, xtr_queries, recall_vs_xtr, recall_vs_flat, xtr_flat_overlap, "
            "hits_outside_dev_split FROM v_xtr_recall_per_run ORDER BY run_id").fetchall()
        report = sqlfiles.run_script(connection, layout.SQL_DIR / "report_xtr.sql")
        report_rows = report.fetchall()
        report_columns = report.columns
    finally:
        connection.close()
    third, two_thirds = pytest.approx(1 / 3), pytest.approx(2 / 3)
    # XTR top 3 of q1: {1, 2, 3}; Flat top 3: q1 {2, 5, 1}, q2 {6, 7, 8}; they share {1, 2} for q1.
    assert per_query == [
        ("bm25-run", "q1", 3, two_thirds, third, two_thirds, 3, 0),     # top 3 {3, 2, 4}
        ("bm25-run", "q2", 3, None, 0.0, None, 0, 0),                   # nothing returned
        ("faiss-run", "q1", 3, third, two_thirds, two_thirds, 2, 1),    # {1, 5}; 9 counts neither way
        ("faiss-run", "q2", 3, None, two_thirds, None, 3, 0),           # {5, 6, 7}
    ]
    assert per_run == [
        ("bm25-run", 3, 2, 1, two_thirds, pytest.approx(1 / 6), two_thirds, 0),
        ("faiss-run", 3, 2, 1, third, two_thirds, two_thirds, 1),
    ]
    assert [row[0] for row in report_rows] == ["bm25", "faiss"]
    assert "note" in report_columns and "not ground truth" in report_rows[0][report_columns.index("note")]


# --------------------------------------------------------------------------- bad input


def test_build_without_a_query_set_says_to_load_one(synthetic_catalog: Path) -> None:
    connection = bootstrap.connect(synthetic_catalog)
    try:
        with pytest.raises(errors.CatalogError, match=r"no queries table; load a query set with "
                                                         r"sql/load_queries\.sql first"):
            sqlfiles.run_script(connection, layout.SQL_DIR / "build_xtr.sql")
    finally:
        connection.close()
    assert not (synthetic_catalog / xtr.LENS_DIR).exists()


def test_cli_without_a_query_set_fails_cleanly(synthetic_catalog: Path) -> None:
    completed = subprocess.run([sys.executable, "bootstrap.py", "xtr", "--catalog", str(synthetic_catalog)],
                               capture_output=True, text=True, cwd=layout.PROJECT_DIR)
    assert completed.returncode == 2
    assert "load a query set with sql/load_queries.sql" in completed.stderr and "Traceback" not in completed.stderr


@pytest.fixture
def unjudged_catalog(synthetic_catalog: Path, tmp_path: Path) -> Path:
    """The synthetic catalog with two queries, no judgments and no runs."""
    connection = bootstrap.connect(synthetic_catalog)
    try:
        load_query_set(connection, tmp_path / "query_set",
                       [{"query_id": "a", "text": "fn_1 value"}, {"query_id": "b", "text": "fn_2 value"}])
    finally:
        connection.close()
    return synthetic_catalog


def test_empty_dev_split_is_refused(unjudged_catalog: Path) -> None:
    connection = bootstrap.connect(unjudged_catalog)
    try:
        with pytest.raises(errors.CatalogError, match="the dev split is empty.*pass sample > 0"):
            sqlfiles.run_script(connection, layout.SQL_DIR / "build_xtr.sql", {"sample": 0})
        with pytest.raises(errors.CatalogError, match="sample must be at least 0, got -1"):
            sqlfiles.run_script(connection, layout.SQL_DIR / "build_xtr.sql", {"sample": -1})
    finally:
        connection.close()
    assert not (unjudged_catalog / xtr.LENS_DIR).exists()


def test_build_lens_refuses_an_empty_split_before_encoding(tmp_path: Path) -> None:
    empty = xtr.DevSplit(chunk_ids=np.empty(0, dtype=np.int64), contents=[],
                         embeddings=np.empty((0, 4), dtype=np.float32), pooled=np.empty(0, dtype=bool),
                         judged=np.empty(0, dtype=bool), sampled=np.empty(0, dtype=bool))
    queries = xtr.LensQueries(query_ids=["q"], texts=["x"], embeddings=np.ones((1, 4), dtype=np.float32))
    # No encoder is needed to refuse: None would fail on first use.
    with pytest.raises(UdfError, match="xtr_build_lens: dev_split is empty"):
        xtr.build_lens(tmp_path, None, empty, queries, 10, {})
    assert not (tmp_path / xtr.LENS_DIR).exists()


def test_a_connection_older_than_its_query_set_is_told_to_reconnect(synthetic_catalog: Path, tmp_path: Path) -> None:
    connection = bootstrap.connect(synthetic_catalog)
    try:
        load_query_set(connection, tmp_path / "query_set", [{"query_id": "a", "text": "fn_1 value"}])
        with pytest.raises(errors.CatalogError, match="not on this connection yet.*reconnect"):
            sqlfiles.run_script(connection, layout.SQL_DIR / "build_xtr.sql")
    finally:
        connection.close()

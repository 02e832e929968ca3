"""The one-query fast path of faiss_topk / faiss_search returns what the batched path returns.

A one-row faiss_topk statement and every faiss_search call (its native UDF takes one query
per call) take ``faiss_search._one_query_hits``; a faiss_topk batch takes the batched body.
On a Flat index both must give the same ids and scores, for k = 1, 10, 1000
and k above the store size, through faiss_topk and through the faiss_search macro, and bad
input must be refused with the same words either way.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.test_faiss_sql import faiss_connection, perturbed_queries, queries_table, true_scores
from udfs import faiss_search
from udfs.faiss_build import build_index, read_store

#: Batches of at least 20 queries, so a Flat search goes through FAISS's BLAS path, not the
#: per-query one a single query takes: the scores must still agree, to the bit.
BATCH = 24


@pytest.fixture
def flat(synthetic_catalog: Path) -> tuple[duckdb.DuckDBPyConnection, np.ndarray, np.ndarray]:
    build_index(synthetic_catalog, "flat")
    store = read_store(synthetic_catalog)
    connection = faiss_connection(synthetic_catalog)
    yield connection, store.ids, store.vectors
    connection.close()


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the one-query path, so each test knows which path it exercised."""
    calls: list[int] = []
    original = faiss_search._one_query_hits

    def counted(loaded, vector, k):
        calls.append(k)
        return original(loaded, vector, k)

    monkeypatch.setattr(faiss_search, "_one_query_hits", counted)
    return calls


def hit_columns(hits: list[dict]) -> tuple[list[int], list[int], np.ndarray]:
    return (
        [hit["rank"] for hit in hits],
        [hit["chunk_id"] for hit in hits],
        np.array([hit["score"] for hit in hits], dtype=np.float32),
    )


@pytest.mark.parametrize("k", [1, 10, 1000, 5000])
def test_one_query_equals_the_batched_path(flat, fast_calls, k: int) -> None:
    connection, ids, vectors = flat
    queries = perturbed_queries(vectors, BATCH, seed=31)
    connection.register("queries", queries_table(queries))
    batched = [hits for (hits,) in connection.execute(
        f"SELECT faiss_topk(q, {k}) FROM queries ORDER BY qid").fetchall()]
    assert fast_calls == []  # the batch did not take the one-query path
    for row in (0, 7, BATCH - 1):
        query = [queries[row].tolist()]
        (single,) = connection.execute(f"SELECT faiss_topk(?::FLOAT[], {k})", query).fetchone()
        macro = connection.execute(
            f"SELECT rank, chunk_id, score FROM faiss_search(?::FLOAT[384], k := {k})", query).fetchall()
        expected_ranks, expected_ids, expected_scores = hit_columns(batched[row])
        assert len(expected_ids) == min(k, len(ids))
        for ranks, chunk_ids, scores in (hit_columns(single),
                                         ([r for r, _, _ in macro], [c for _, c, _ in macro],
                                          np.array([s for _, _, s in macro], dtype=np.float32))):
            assert ranks == expected_ranks
            assert chunk_ids == expected_ids
            np.testing.assert_array_equal(scores, expected_scores)
        # And both are the exact top k (numpy brute force over the stored vectors).
        truth = true_scores("ip", queries[row], vectors)
        assert np.allclose(np.sort(truth)[::-1][: len(expected_ids)], expected_scores, atol=1e-5)
    assert len(fast_calls) == 2 * 3


@pytest.mark.parametrize("threads", [1, 2])
def test_lateral_faiss_search_equals_the_batched_path(flat, fast_calls, threads: int) -> None:
    """A LATERAL batch runs faiss_search's native UDF once per query (DuckDB's workers side by
    side when threads > 1): every query's hits equal the batched faiss_topk row, to the bit."""
    connection, _, vectors = flat
    queries = perturbed_queries(vectors, BATCH, seed=47)
    connection.register("queries", queries_table(queries))
    connection.execute(f"SET threads = {threads}")
    batched = [hits for (hits,) in connection.execute("SELECT faiss_topk(q, 10) FROM queries ORDER BY qid").fetchall()]
    rows = connection.execute(
        "SELECT t.qid, r.rank, r.chunk_id, r.score FROM queries AS t, LATERAL faiss_search(t.q, k := 10) AS r "
        "ORDER BY t.qid, r.rank").fetchall()
    assert len(fast_calls) == BATCH
    for qid, hits in enumerate(batched):
        mine = [(rank, chunk_id, score) for q, rank, chunk_id, score in rows if q == qid]
        ranks, chunk_ids, scores = hit_columns(hits)
        assert [r for r, _, _ in mine] == ranks
        assert [c for _, c, _ in mine] == chunk_ids
        np.testing.assert_array_equal(np.array([x for _, _, x in mine], dtype=np.float32), scores)


def test_one_query_through_faiss_search_with_k_factor_equals_exact_rerank(flat, fast_calls) -> None:
    connection, _, vectors = flat
    query = [perturbed_queries(vectors, 1, seed=5)[0].tolist()]
    through_macro = connection.execute(
        "SELECT rank, chunk_id, score FROM faiss_search(?::FLOAT[], k := 10, k_factor := 4)", query).fetchall()
    (by_hand,) = connection.execute(
        "SELECT exact_rerank($1::FLOAT[], [h.chunk_id FOR h IN faiss_topk($1::FLOAT[], 40)], 10, NULL)",
        query).fetchone()
    assert through_macro == [(h["rank"], h["chunk_id"], h["score"]) for h in by_hand]
    assert fast_calls


def test_null_query_gives_no_hits_on_either_path(flat, fast_calls) -> None:
    connection, _, vectors = flat
    assert connection.execute("SELECT faiss_topk(NULL::FLOAT[], 3)").fetchone() == (None,)
    assert connection.execute("SELECT * FROM faiss_search(NULL::FLOAT[], k := 3)").fetchall() == []
    two = connection.execute(
        "SELECT faiss_topk(q, 3) FROM (VALUES (1, NULL::FLOAT[]), (2, ?::FLOAT[])) AS t(i, q) ORDER BY i",
        [vectors[0].tolist()]).fetchall()
    assert two[0] == (None,) and len(two[1][0]) == 3
    assert fast_calls == []


#: (faiss_topk's q argument, k, the refusal): each refused alike alone and first in a batch.
BAD_TOPK = [
    ("range(12)::FLOAT[]", "5", "faiss_topk: q has dimension 12, the index expects 384"),
    ("[]::FLOAT[]", "3", "faiss_topk: q in row 1 of this batch is empty"),
    ("list_transform(range(384), i -> 'nan'::FLOAT)", "3",
     "faiss_topk: q in row 1 of this batch contains NaN, infinity or NULL elements"),
    ("list_transform(range(384), i -> CASE WHEN i = 3 THEN NULL ELSE 1.0 END)::FLOAT[]", "3",
     "faiss_topk: q in row 1 of this batch contains NaN, infinity or NULL elements"),
    ("list_transform(range(384), i -> 0.0)::FLOAT[]", "3", "faiss_topk: q in row 1 of this batch is the zero vector"),
    ("range(384)::FLOAT[]", "0", "faiss_topk: k must be at least 1, got 0"),
]


@pytest.mark.parametrize(("argument", "k", "message"), BAD_TOPK, ids=[m for _, _, m in BAD_TOPK])
def test_bad_one_query_is_refused_as_in_a_batch(flat, fast_calls, argument: str, k: str, message: str) -> None:
    connection, _, vectors = flat
    with pytest.raises(duckdb.Error, match=message):
        connection.execute(f"SELECT faiss_topk({argument}, {k})").fetchall()
    calls = len(fast_calls)  # DuckDB may call a UDF with constant arguments more than once
    assert calls
    with pytest.raises(duckdb.Error, match=message):
        connection.execute(
            f"SELECT faiss_topk(q, {k}) FROM (VALUES (1, {argument}), (2, ?::FLOAT[])) AS t(i, q)",
            [vectors[0].tolist()],
        ).fetchall()
    assert len(fast_calls) == calls


BAD_SEARCH = [
    ("range(12)::FLOAT[]", "k := 5", "faiss_topk: q has dimension 12, the index expects 384"),
    ("[]::FLOAT[]", "k := 3", "faiss_search: q is empty"),
    ("list_transform(range(384), i -> 0.0)::FLOAT[]", "k := 3", "faiss_topk: q in row 1 of this batch is the zero"),
    ("list_transform(range(384), i -> CASE WHEN i = 3 THEN NULL ELSE 1.0 END)::FLOAT[]", "k := 3",
     "faiss_topk: q in row 1 of this batch contains NaN, infinity or NULL elements"),
    ("list_transform(range(384), i -> 'inf'::FLOAT)", "k := 3",
     "faiss_topk: q in row 1 of this batch contains NaN, infinity or NULL elements"),
    ("range(384)::FLOAT[]", "k := 0", "faiss_search: k must be at least 1, got 0"),
    ("range(384)::FLOAT[]", "k := NULL", "faiss_search: k must be at least 1, got NULL"),
    ("range(384)::FLOAT[]", "k := 3, k_factor := 0.5", "faiss_search: k_factor must be at least 1, got 0.5"),
    ("range(384)::FLOAT[]", "k := 3, k_factor := NULL", "faiss_search: k_factor must be at least 1, got NULL"),
    ("range(384)::FLOAT[]", "k := 3000000000", "faiss_search: k must be at most 2147483647, got 3000000000"),
]


@pytest.mark.parametrize(("argument", "arguments", "message"), BAD_SEARCH, ids=[m for _, _, m in BAD_SEARCH])
def test_bad_one_query_through_faiss_search(flat, argument: str, arguments: str, message: str) -> None:
    connection, _, vectors = flat
    with pytest.raises(duckdb.Error, match=message):
        connection.execute(f"SELECT * FROM faiss_search({argument}, {arguments})").fetchall()
    # LATERAL over two rows, the bad one first: the same words.
    with pytest.raises(duckdb.Error, match=message):
        connection.execute(
            f"SELECT r.* FROM (VALUES (1, {argument}), (2, ?::FLOAT[])) AS t(i, q), "
            f"LATERAL faiss_search(t.q, {arguments}) AS r",
            [vectors[0].tolist()],
        ).fetchall()

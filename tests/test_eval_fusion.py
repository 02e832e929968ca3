"""channel_hybrid: weighted reciprocal-rank fusion, checked against arithmetic by hand."""

from __future__ import annotations

import math

import duckdb
import pytest

import bootstrap
from codeintel import demo
from tests.eval_support import hand_store, import_store, load_query_set
from udfs import faiss_build

# Six chunks in 4 dimensions.  Against the query vector (1, 0, 0, 0) the inner products are
# 1, .8, .6, .3, 0, -.5, so FAISS ranks A B C D E F.  Every document has six terms (three from
# the path hand/mod.py), so BM25 for 'zeta' ranks by its count: E (3), C (2), F (1).
CHUNKS = [
    {"id": 1, "content": "alpha beta gamma\n", "embedding": [1.0, 0.0, 0.0, 0.0]},
    {"id": 2, "content": "beta gamma delta\n", "embedding": [0.8, 0.6, 0.0, 0.0]},
    {"id": 3, "content": "zeta zeta alpha\n", "embedding": [0.6, 0.0, 0.8, 0.0]},
    {"id": 4, "content": "gamma delta alpha\n", "embedding": [0.3, 0.0, 0.0, math.sqrt(1 - 0.09)]},
    {"id": 5, "content": "zeta zeta zeta\n", "embedding": [0.0, 1.0, 0.0, 0.0]},
    {"id": 6, "content": "zeta alpha beta\n", "embedding": [-0.5, 0.0, math.sqrt(0.75), 0.0]},
]
A, B, C, D, E, F = 1, 2, 3, 4, 5, 6


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("fusion")
    catalog = import_store(hand_store([{**chunk, "uri": "hand/mod.py"} for chunk in CHUNKS]), root / "catalog")
    faiss_build.build_index(catalog, "flat")
    connection = bootstrap.connect(catalog)
    demo.build_bm25_index(connection)
    load_query_set(connection, root / "queries", [
        {"query_id": "zeta", "text": "zeta", "embedding": [1.0, 0.0, 0.0, 0.0]},
        {"query_id": "no-terms", "text": "omega", "embedding": [1.0, 0.0, 0.0, 0.0]},
    ])
    yield connection
    connection.close()


def ranked(connection: duckdb.DuckDBPyConnection, sql: str, query_id: str = "zeta") -> list[tuple[int, float]]:
    rows = connection.execute(f"SELECT rank, chunk_id, score FROM ({sql}) WHERE query_id = ? ORDER BY rank",
                              [query_id]).fetchall()
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    return [(chunk_id, score) for _, chunk_id, score in rows]


def assert_fused(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [chunk_id for chunk_id, _ in actual] == [chunk_id for chunk_id, _ in expected]
    assert [score for _, score in actual] == pytest.approx([score for _, score in expected], rel=1e-12)


def test_the_channels_rank_as_designed(connection) -> None:
    assert [c for c, _ in ranked(connection, "SELECT * FROM channel_faiss(k := 6)")] == [A, B, C, D, E, F]
    assert [c for c, _ in ranked(connection, "SELECT * FROM channel_bm25(k := 6)")] == [E, C, F]


def test_equal_weights_sum_reciprocal_ranks(connection) -> None:
    expected = sorted([(A, 1 / 61), (B, 1 / 62), (C, 1 / 63 + 1 / 62), (D, 1 / 64), (E, 1 / 65 + 1 / 61),
                       (F, 1 / 66 + 1 / 63)], key=lambda hit: -hit[1])
    assert [c for c, _ in expected] == [C, E, F, A, B, D]
    assert_fused(ranked(connection, "SELECT * FROM channel_hybrid(k := 6)"), expected)


def test_weights_and_rrf_k_change_the_order(connection) -> None:
    # rrf_k 0, FAISS weight 2, BM25 weight 0.7: each channel's rank r contributes weight / r.
    expected = [(A, 2 / 1), (E, 2 / 5 + 0.7 / 1), (C, 2 / 3 + 0.7 / 2), (B, 2 / 2), (F, 2 / 6 + 0.7 / 3), (D, 2 / 4)]
    actual = ranked(connection,
                    "SELECT * FROM channel_hybrid(k := 6, rrf_k := 0, faiss_weight := 2, bm25_weight := 0.7)")
    assert_fused(actual, expected)


def test_depth_limits_the_candidates_and_ties_go_to_the_smaller_id(connection) -> None:
    # Top 4 of each channel: E loses its FAISS rank 5, F its rank 6; A and E tie at 1/61.
    actual = ranked(connection, "SELECT * FROM channel_hybrid(k := 4, depth := 4)")
    assert_fused(actual, [(C, 1 / 63 + 1 / 62), (A, 1 / 61), (E, 1 / 61), (B, 1 / 62)])
    # Top 2: FAISS A B, BM25 E C.
    actual = ranked(connection, "SELECT * FROM channel_hybrid(k := 2, depth := 2)")
    assert_fused(actual, [(A, 1 / 61), (E, 1 / 61)])


def test_a_zero_weight_leaves_the_other_channel_alone(connection) -> None:
    assert_fused(ranked(connection, "SELECT * FROM channel_hybrid(k := 6, bm25_weight := 0)"),
                 [(chunk, 1 / (60 + rank)) for rank, chunk in enumerate([A, B, C, D, E, F], start=1)])
    assert_fused(ranked(connection, "SELECT * FROM channel_hybrid(k := 6, faiss_weight := 0, rrf_k := 1)"),
                 [(E, 1 / 2), (C, 1 / 3), (F, 1 / 4)])


def test_a_query_bm25_cannot_match_is_fused_from_faiss_alone(connection) -> None:
    assert [c for c, _ in ranked(connection, "SELECT * FROM channel_hybrid(k := 3)", "no-terms")] == [A, B, C]

"""FAISS as SQL: faiss_topk, exact_rerank, the macros, views, build script and metrics."""

from __future__ import annotations

import importlib.abc
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bootstrap
from codeintel import sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from udfs import embedding, faiss_build, faiss_current, faiss_search, faiss_versions, families, metrics
from udfs.context import CatalogContext
from udfs.faiss_build import build_index, read_store
from udfs.registry import UdfError
from udfs.settings import SettingError, Settings

PROJECT_DIR = Path(__file__).resolve().parents[1]
#: The macros over the FAISS and metrics UDFs (each macro file also brings the macros it calls).
FAISS_MACROS = ("faiss_search", "faiss_index_info", "faiss_metrics", "faiss_build")
TOLERANCE = 1e-5


def faiss_connection(catalog: Path, **overrides: object) -> duckdb.DuckDBPyConnection:
    """A plain connection with the embedding, metrics and FAISS (build and search) UDFs and the FAISS macros."""
    context = CatalogContext(
        catalog_dir=catalog,
        # The synthetic store is 384 wide, as MiniLM's vectors (tests/conftest.py).
        settings={"embed_model": "minilm", **overrides},
    )
    connection = duckdb.connect()
    for spec in (*embedding.REGISTRY, *metrics.REGISTRY, *faiss_build.REGISTRY, *faiss_search.REGISTRY):
        spec.register(connection, context)
    sqlfiles.apply_macros(connection, FAISS_MACROS)
    return connection


@pytest.fixture
def connection(synthetic_catalog: Path) -> duckdb.DuckDBPyConnection:
    connection = faiss_connection(synthetic_catalog)
    yield connection
    connection.close()


@pytest.fixture
def store(synthetic_catalog: Path) -> faiss_build.StoreSnapshot:
    return read_store(synthetic_catalog)


def perturbed_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Unit vectors near stored ones (not equal to them), like real questions near real code."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.choice(len(vectors), count, replace=False)]
    queries = picked + 0.05 * rng.standard_normal(picked.shape).astype(np.float32)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def true_scores(metric: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    query, vectors = query.astype(np.float64), vectors.astype(np.float64)
    if metric == "l2":
        return -((vectors - query) ** 2).sum(axis=1)
    if metric == "cos":
        query = query / np.linalg.norm(query)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ query


def assert_exact_top_k(hits: list[dict], ids: np.ndarray, scores: np.ndarray, k: int) -> None:
    """``hits`` is a correct top-k of (ids, scores), whatever order equal scores came in."""
    expected = np.sort(scores)[::-1][:k]
    assert [hit["rank"] for hit in hits] == list(range(1, len(expected) + 1))
    returned = np.array([hit["chunk_id"] for hit in hits], dtype=np.int64)
    assert len(set(returned.tolist())) == len(returned)
    reported = np.array([hit["score"] for hit in hits])
    assert np.allclose(reported, expected, atol=TOLERANCE)
    truth = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert np.allclose(reported, [truth[chunk_id] for chunk_id in returned.tolist()], atol=TOLERANCE)


def queries_table(queries: np.ndarray, ks: list[int] | None = None) -> pa.Table:
    """Queries as FLOAT[d] arrays (DuckDB casts them to FLOAT[] for the UDFs), one id each."""
    dimension = queries.shape[1]
    columns = {
        "qid": pa.array(range(len(queries)), pa.int32()),
        "q": pa.FixedSizeListArray.from_arrays(pa.array(queries.ravel(), pa.float32()), dimension),
    }
    if ks is not None:
        columns["k"] = pa.array(ks, pa.int32())
    return pa.table(columns)


def topk_ids(connection: duckdb.DuckDBPyConnection, queries: np.ndarray, sql: str) -> list[list[int]]:
    connection.register("queries", queries_table(queries))
    rows = connection.execute(f"SELECT qid, [h.chunk_id FOR h IN ({sql})] FROM queries ORDER BY qid").fetchall()
    return [ids for _, ids in rows]


def recall_at(found: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e.tolist())) / len(e) for f, e in zip(found, exact, strict=True)]))


def exact_top_ids(store: faiss_build.StoreSnapshot, queries: np.ndarray, k: int) -> np.ndarray:
    return store.ids[np.argsort(-(queries @ store.vectors.T), axis=1)[:, :k]]


def metric_value(name: str, stat: str, **labels: str) -> float:
    for sample in metrics.metric_samples():
        sample_labels = {key: value for key, value in sample["labels"].items() if key != "le"}
        if sample["metric"] == name and sample["stat"] == stat and sample_labels == labels:
            return sample["value"]
    return 0.0


# --------------------------------------------------------------------------- faiss_topk


def test_flat_topk_equals_brute_force(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    queries = np.vstack([perturbed_queries(store.vectors, 40, seed=1), store.vectors[:5]])
    ks = [(i % 12) + 1 for i in range(len(queries))]  # k differs per row within one chunk
    connection.register("queries", queries_table(queries, ks))
    rows = connection.execute("SELECT qid, faiss_topk(q, k) FROM queries ORDER BY qid").fetchall()
    for (qid, hits), query, k in zip(rows, queries, ks, strict=True):
        assert qid is not None and len(hits) == k
        assert_exact_top_k(hits, store.ids, true_scores("ip", query, store.vectors), k)


@pytest.mark.parametrize("metric", ["cos", "l2"])
def test_flat_topk_scores_follow_the_metric(synthetic_catalog: Path, connection, store, metric: str) -> None:
    build_index(synthetic_catalog, "flat", metric=metric)
    # Non-unit queries, so 'cos' and 'ip' would differ.
    queries = perturbed_queries(store.vectors, 10, seed=2) * 3.0
    connection.register("queries", queries_table(queries))
    rows = connection.execute("SELECT faiss_topk(q, 7) FROM queries ORDER BY qid").fetchall()
    for (hits,), query in zip(rows, queries, strict=True):
        assert_exact_top_k(hits, store.ids, true_scores(metric, query, store.vectors), 7)


def test_one_index_search_per_chunk_of_queries(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    before = metric_value("faiss_ann_search_duration_seconds", "count", family="flat")
    connection.register("queries", queries_table(perturbed_queries(store.vectors, 100, seed=3)))
    hits = connection.execute("SELECT qid, unnest(faiss_topk(q, 5), recursive := true) FROM queries").fetchall()
    assert len(hits) == 500
    assert metric_value("faiss_ann_search_duration_seconds", "count", family="flat") == before + 1


def test_null_query_or_k_gives_null(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    assert connection.execute("SELECT faiss_topk(NULL::FLOAT[], 3), faiss_topk(?::FLOAT[], NULL)",
                              [store.vectors[0].tolist()]).fetchone() == (None, None)
    rows = connection.execute(
        "SELECT len(faiss_topk(q, 3)) FROM (VALUES (?::FLOAT[]), (NULL), (?::FLOAT[])) AS t(q)",
        [store.vectors[0].tolist(), store.vectors[1].tolist()],
    ).fetchall()
    assert rows == [(3,), (None,), (3,)]


def test_rerank_handles_null_lists_and_ids(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    first, second, third = (int(chunk_id) for chunk_id in store.ids[:3])
    rows = connection.execute(
        """SELECT [h.chunk_id FOR h IN exact_rerank(?::FLOAT[], candidates, 5, 'ip')]
           FROM (VALUES (1, [?, ?]), (2, NULL), (3, [NULL, ?]), (4, [])) AS t(row_number, candidates)
           ORDER BY row_number""",
        [store.vectors[0].tolist(), first, second, third],
    ).fetchall()
    assert rows == [([first, second],), (None,), ([third],), ([],)]


# Settings under which the ANN index alone finds fewer than k of the 2000 vectors: one probed
# IVF list (FAISS pads with -1), an HNSW graph searched with a small efSearch.
SHORT_ANSWER_FAMILIES = [
    ("flat", {}),
    ("ivf_flat", {"nprobe": 1}),
    ("ivf_sq", {"nprobe": 1}),
    ("ivf_pq", {"nprobe": 1}),
    ("ivf_pq_refine", {"nprobe": 1, "refine_k_factor": 2}),
    ("hnsw", {"ef_search": 16}),
]


@pytest.mark.parametrize(("family", "params"), SHORT_ANSWER_FAMILIES, ids=[f for f, _ in SHORT_ANSWER_FAMILIES])
def test_k_above_ntotal_returns_every_vector_ranked_exactly(
    synthetic_catalog: Path, connection, store, family: str, params: dict
) -> None:
    """k of the store size or more gives every vector, ranked as brute force ranks them (the
    numpy oracle), whatever the family; rows with a small k in the same chunk keep k hits."""
    build_index(synthetic_catalog, family, **params)
    queries = perturbed_queries(store.vectors, 6, seed=11)
    ks = [5000, 10, 2000, 3, 10**9, 1]
    before = metric_value("faiss_topk_exact_fallback_queries", "total", family=family)
    connection.register("queries", queries_table(queries, ks))
    rows = connection.execute("SELECT faiss_topk(q, k) FROM queries ORDER BY qid").fetchall()
    for (hits,), query, k in zip(rows, queries, ks, strict=True):
        assert len(hits) == min(k, 2000)
        assert [hit["rank"] for hit in hits] == list(range(1, len(hits) + 1))
        assert len({hit["chunk_id"] for hit in hits}) == len(hits)
        assert {hit["chunk_id"] for hit in hits} <= set(store.ids.tolist())
        if k >= 2000:
            assert_exact_top_k(hits, store.ids, true_scores("ip", query, store.vectors), 2000)
    if family != "flat":
        assert metric_value("faiss_topk_exact_fallback_queries", "total", family=family) >= before + 3


def test_k_above_ntotal_through_the_macro_with_k_factor(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "hnsw", ef_search=16)
    query = [store.vectors[0].tolist()]
    for sql in ("SELECT count(*), count(DISTINCT chunk_id) FROM faiss_search(?::FLOAT[], k := 1000000000)",
                "SELECT count(*), count(DISTINCT chunk_id) FROM faiss_search(?::FLOAT[], k := 5000, k_factor := 4)",
                "SELECT count(*), count(DISTINCT chunk_id) FROM faiss_search(?::FLOAT[], k := 1e9)"):
        assert connection.execute(sql, query).fetchone() == (2000, 2000)


@pytest.mark.parametrize("metric", ["cos", "l2"])
def test_exact_fallback_follows_the_metric(synthetic_catalog: Path, connection, store, metric: str) -> None:
    build_index(synthetic_catalog, "ivf_flat", nprobe=1, metric=metric)
    queries = perturbed_queries(store.vectors, 3, seed=12) * 3.0  # non-unit: 'cos' differs from 'ip'
    connection.register("queries", queries_table(queries))
    rows = connection.execute("SELECT faiss_topk(q, 2500) FROM queries ORDER BY qid").fetchall()
    for (hits,), query in zip(rows, queries, strict=True):
        assert_exact_top_k(hits, store.ids, true_scores(metric, query, store.vectors), 2000)


def test_zero_query_is_refused_for_ip_and_cos_and_answered_for_l2(synthetic_catalog: Path, connection, store) -> None:
    zero = [[0.0] * 384]
    for metric in ("ip", "cos"):
        build_index(synthetic_catalog, "flat", metric=metric)
        with pytest.raises(duckdb.Error, match="faiss_topk: q in row 1 of this batch is the zero vector"):
            connection.execute("SELECT faiss_topk(?::FLOAT[], 3)", zero).fetchall()
        # faiss_search refuses it through the faiss_topk it calls (no extra metric lookup per statement).
        with pytest.raises(duckdb.Error, match="faiss_topk: q in row 1 of this batch is the zero vector"):
            connection.execute("SELECT * FROM faiss_search(?::FLOAT[], k := 3)", zero).fetchall()
        with pytest.raises(duckdb.Error, match="exact_rerank: q in row 1 of this batch is the zero vector"):
            connection.execute(f"SELECT exact_rerank(?::FLOAT[], [1, 2], 3, '{metric}')", zero).fetchall()
    # The row number counts the batch's rows, NULL ones included.
    with pytest.raises(duckdb.Error, match="q in row 3 of this batch is the zero vector"):
        connection.execute(
            "SELECT faiss_topk(q, 3) FROM (VALUES (1, ?::FLOAT[]), (2, NULL), (3, ?::FLOAT[])) AS t(i, q)",
            [store.vectors[0].tolist(), zero[0]],
        ).fetchall()
    # Under 'l2' a zero query asks for the vectors nearest the origin: a real question.
    build_index(synthetic_catalog, "flat", metric="l2")
    (hits,) = connection.execute("SELECT faiss_topk(?::FLOAT[], 5)", zero).fetchone()
    assert_exact_top_k(hits, store.ids, true_scores("l2", np.zeros(384, np.float32), store.vectors), 5)
    (hits,) = connection.execute("SELECT exact_rerank(?::FLOAT[], ?, 5, 'l2')",
                                 [zero[0], store.ids[:3].tolist()]).fetchone()
    assert len(hits) == 3


BAD_INPUTS = [
    ("SELECT faiss_topk(range(12)::FLOAT[], 5)", [], "faiss_topk: q has dimension 12, the index expects 384"),
    ("SELECT faiss_topk(?::FLOAT[], 0)", ["query"], "faiss_topk: k must be at least 1, got 0"),
    ("SELECT faiss_topk(?::FLOAT[], -3)", ["query"], "faiss_topk: k must be at least 1, got -3"),
    ("SELECT faiss_topk(?::FLOAT[], 3)", ["nan"], "faiss_topk: q in row 1 of this batch contains NaN"),
    ("SELECT faiss_topk(?::FLOAT[], 3)", ["inf"], "contains NaN, infinity or NULL elements"),
    ("SELECT faiss_topk(?::FLOAT[], 3)", ["null element"], "contains NaN, infinity or NULL elements"),
    ("SELECT faiss_topk([]::FLOAT[], 3)", [], "faiss_topk: q in row 1 of this batch is empty"),
    ("SELECT * FROM faiss_search([]::FLOAT[], k := 3)", [], "faiss_search: q is empty"),
    ("SELECT exact_rerank([]::FLOAT[], [1], 3, 'ip')", [], "exact_rerank: q in row 1 of this batch is empty"),
    # Checked by the macro before DuckDB's INTEGER cast or product could overflow.
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 1000000000, k_factor := 4)", ["query"],
     "faiss_search: k * k_factor must be at most 2147483647 candidates, got 1000000000 * 4"),
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 1e9, k_factor := 2.5)", ["query"],
     "faiss_search: k * k_factor must be at most 2147483647 candidates"),
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 3000000000)", ["query"],
     "faiss_search: k must be at most 2147483647, got 3000000000"),
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 1e12, k_factor := 2)", ["query"],
     "faiss_search: k must be at most 2147483647"),
    ("SELECT exact_rerank(?::FLOAT[], [1, 2], 3, 'dot')", ["query"],
     "exact_rerank: metric must be one of 'ip', 'cos', 'l2', got 'dot'"),
    ("SELECT exact_rerank(range(7)::FLOAT[], [1, 2], 3, 'ip')", [],
     "exact_rerank: q has dimension 7, the index expects 384"),
    ("SELECT exact_rerank(?::FLOAT[], [1, 2], 0, 'ip')", ["query"], "exact_rerank: k must be at least 1"),
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 0)", ["query"], "faiss_search: k must be at least 1, got 0"),
    ("SELECT * FROM faiss_search(?::FLOAT[], k := 5, k_factor := 0.5)", ["query"],
     "faiss_search: k_factor must be at least 1, got 0.5"),
    ("SELECT faiss_set_params('bogus=1')", [],
     "faiss_set_params: cannot set 'bogus' on this flat index (Flat); settable here: none"),
    ("SELECT faiss_set_params('nprobe')", [],
     "faiss_set_params: expected 'name=value[,name=value]' such as 'nprobe=32', got 'nprobe'"),
    ("SELECT * FROM faiss_build(family := 'kd_tree')", [], "faiss_build: family must be 'auto' or one of"),
    ("SELECT * FROM faiss_build(nlist := 0)", [], "faiss_build: nlist must be at least 1, got 0"),
]


@pytest.mark.parametrize(("sql", "parameters", "message"), BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_is_refused_with_a_clear_message(
    synthetic_catalog: Path, connection, store, sql: str, parameters: list[str], message: str
) -> None:
    build_index(synthetic_catalog, "flat")
    query = store.vectors[0].tolist()
    values = {
        "query": query,
        "nan": [float("nan"), *query[1:]],
        "inf": [*query[:-1], float("inf")],
        "null element": [None, *query[1:]],
    }
    with pytest.raises(duckdb.Error) as raised:
        connection.execute(sql, [values[name] for name in parameters]).fetchall()
    assert message in str(raised.value)


def test_no_published_index_says_how_to_build_one(synthetic_catalog: Path, connection) -> None:
    with pytest.raises(duckdb.Error) as raised:
        connection.execute("SELECT faiss_topk(range(384)::FLOAT[], 3)").fetchall()
    assert f"python bootstrap.py build --catalog {synthetic_catalog}" in str(raised.value)
    assert "SELECT * FROM faiss_build()" in str(raised.value)


def test_truncated_index_file_is_a_clear_error_and_current_stays(synthetic_catalog: Path, connection) -> None:
    manifest = build_index(synthetic_catalog, "flat")
    index_file = synthetic_catalog / "index" / "versions" / manifest["version"] / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:1000])
    with pytest.raises(duckdb.Error) as raised:
        connection.execute("SELECT faiss_topk(range(384)::FLOAT[], 3)").fetchall()
    assert f"index file {index_file} is corrupt or truncated" in str(raised.value)
    assert os.readlink(synthetic_catalog / "index" / "CURRENT") == f"versions/{manifest['version']}"


# --------------------------------------------------------------------------- exact_rerank


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_exact_rerank_equals_brute_force_over_the_candidates(synthetic_catalog: Path, connection, data) -> None:
    if faiss_versions.current_version(synthetic_catalog) is None:
        build_index(synthetic_catalog, "flat")
    loaded = faiss_current.load_current(CatalogContext(catalog_dir=synthetic_catalog))
    known_ids = set(loaded.ids.tolist())
    known = st.sampled_from(sorted(known_ids))
    unknown = st.integers(1, 2**62).filter(lambda chunk_id: chunk_id not in known_ids)
    row = st.fixed_dictionaries({
        "query_row": st.integers(0, loaded.ntotal - 1),
        "candidates": st.lists(st.one_of(known, known, known, unknown), max_size=40),  # some repeats, 1/4 unknown
        "k": st.integers(1, 25),
        "metric": st.sampled_from(["ip", "cos", "l2"]),
        "scale": st.sampled_from([1.0, 2.5]),  # non-unit queries tell 'ip' from 'cos'
    })
    rows = data.draw(st.lists(row, min_size=1, max_size=5))
    queries = np.stack([np.asarray(loaded.vectors[r["query_row"]]) * r["scale"] + 0.01 for r in rows])
    table = queries_table(queries)
    table = table.append_column("candidates", pa.array([r["candidates"] for r in rows], pa.list_(pa.int64())))
    table = table.append_column("k", pa.array([r["k"] for r in rows], pa.int32()))
    table = table.append_column("metric", pa.array([r["metric"] for r in rows]))
    connection.register("rerank_input", table)
    results = connection.execute(
        "SELECT exact_rerank(q, candidates, k, metric) FROM rerank_input ORDER BY qid"
    ).fetchall()
    for (hits,), query, spec in zip(results, queries, rows, strict=True):
        candidate_ids = np.array(sorted(set(spec["candidates"]) & known_ids), dtype=np.int64)
        vectors = np.asarray(loaded.vectors[loaded.rows_of(candidate_ids)[0]]).reshape(-1, queries.shape[1])
        assert_exact_top_k(hits, candidate_ids, true_scores(spec["metric"], query, vectors), spec["k"])


def test_rerank_without_a_metric_scores_by_the_loaded_index_metric(synthetic_catalog: Path, connection, store) -> None:
    """faiss_search passes NULL: the metric comes from the loaded index, not from a faiss_index_info() call."""
    build_index(synthetic_catalog, "flat", metric="l2")
    query, candidates = (store.vectors[0] * 2.5).tolist(), [int(chunk_id) for chunk_id in store.ids[:20]]
    by_metric = {
        metric: connection.execute(f"SELECT exact_rerank(?::FLOAT[], ?, 5, {metric})", [query, candidates]).fetchone()
        for metric in ("NULL", "'l2'", "'ip'")
    }
    assert by_metric["NULL"] == by_metric["'l2'"] != by_metric["'ip'"]


def test_rerank_counts_unknown_ids_and_reports_refine_metrics(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    unknown_before = metric_value("faiss_rerank_unknown_ids", "total")
    refine_before = metric_value("faiss_refine_duration_seconds", "count")
    ratio_before = metric_value("faiss_refine_kept_ratio", "count")
    candidates = [int(store.ids[0]), 7, int(store.ids[1]), int(store.ids[0]), 11]
    (hits,) = connection.execute(
        "SELECT exact_rerank(?::FLOAT[], ?, 5, 'ip')", [store.vectors[0].tolist(), candidates]
    ).fetchone()
    assert [hit["chunk_id"] for hit in hits] == [int(store.ids[0]), int(store.ids[1])]
    assert metric_value("faiss_rerank_unknown_ids", "total") == unknown_before + 2
    assert metric_value("faiss_refine_duration_seconds", "count") == refine_before + 1
    assert metric_value("faiss_refine_kept_ratio", "count") == ratio_before + 1


# --------------------------------------------------------------------------- approximate families


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("ivf_flat", {"nprobe": 32}),
        ("ivf_sq", {"nprobe": 32}),
        ("ivf_sq", {"nprobe": 32, "sq_type": "8"}),
        ("hnsw", {"ef_search": 128}),
        ("ivf_pq_refine", {"nprobe": 32, "refine_k_factor": 8}),
    ],
)
def test_approximate_family_recall(synthetic_catalog: Path, connection, store, family: str, params: dict) -> None:
    build_index(synthetic_catalog, family, **params)
    queries = perturbed_queries(store.vectors, 100, seed=4)
    found = topk_ids(connection, queries, "faiss_topk(q, 10)")
    assert recall_at(found, exact_top_ids(store, queries, 10)) >= 0.9


def test_rerank_with_k_factor_improves_ivf_pq_recall(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "ivf_pq", nprobe=32)
    queries = perturbed_queries(store.vectors, 100, seed=5)
    exact = exact_top_ids(store, queries, 10)
    plain = recall_at(topk_ids(connection, queries, "faiss_topk(q, 10)"), exact)
    reranked = recall_at(
        topk_ids(connection, queries,
                 "exact_rerank(q, [c.chunk_id FOR c IN faiss_topk(q, 40)], 10, 'ip')"),
        exact,
    )
    assert reranked > plain + 0.2 and reranked >= 0.7
    # The macro with k_factor 4 is the same pipeline for one query.
    one = queries[0].tolist()
    macro = connection.execute(
        "SELECT chunk_id FROM faiss_search(?::FLOAT[], k := 10, k_factor := 4)", [one]
    ).fetchall()
    batch = topk_ids(connection, queries[:1], "exact_rerank(q, [c.chunk_id FOR c IN faiss_topk(q, 40)], 10, 'ip')")
    assert [chunk_id for (chunk_id,) in macro] == batch[0]


# --------------------------------------------------------------------------- macros and control UDFs


def test_faiss_search_with_embed(synthetic_catalog: Path, connection) -> None:
    build_index(synthetic_catalog, "flat")
    rows = connection.execute(
        "SELECT rank, chunk_id, score FROM faiss_search(embed('parse a config file'), k := 10)").fetchall()
    assert [rank for rank, _, _ in rows] == list(range(1, 11))
    scores = [score for _, _, score in rows]
    assert scores == sorted(scores, reverse=True)
    (direct,) = connection.execute("SELECT faiss_topk(embed('parse a config file'), 10)").fetchone()
    assert [(h["rank"], h["chunk_id"], h["score"]) for h in direct] == rows


def test_lateral_faiss_search_over_a_batch_matches_faiss_topk(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "flat")
    connection.register("queries", queries_table(perturbed_queries(store.vectors, 50, seed=7)))
    lateral = connection.execute(
        "SELECT qid, r.rank, r.chunk_id FROM queries, LATERAL faiss_search(q, k := 3) AS r ORDER BY qid, r.rank"
    ).fetchall()
    select_list = connection.execute(
        "SELECT qid, h.rank, h.chunk_id FROM (SELECT qid, unnest(faiss_topk(q, 3)) AS h FROM queries) "
        "ORDER BY qid, h.rank"
    ).fetchall()
    assert lateral == select_list and len(lateral) == 150


def test_set_params_applies_to_the_loaded_index(synthetic_catalog: Path, connection, store) -> None:
    build_index(synthetic_catalog, "ivf_flat", nprobe=1)
    queries = perturbed_queries(store.vectors, 30, seed=6)
    exact = exact_top_ids(store, queries, 10)
    narrow = recall_at(topk_ids(connection, queries, "faiss_topk(q, 10)"), exact)
    assert connection.execute("SELECT faiss_set_params('nprobe=51')").fetchone() == ("nprobe=51",)
    assert connection.execute("SELECT parameters FROM faiss_index_info()").fetchone() == ("nprobe=51",)
    assert recall_at(topk_ids(connection, queries, "faiss_topk(q, 10)"), exact) == 1.0 > narrow


def test_index_info_row(synthetic_catalog: Path, connection) -> None:
    manifest = build_index(synthetic_catalog, "hnsw", ef_search=40)
    rows = connection.execute("SELECT * FROM faiss_index_info()").fetchall()
    names = [column[0] for column in connection.description]
    assert names == ["version", "family", "factory", "ntotal", "dimension", "metric", "device", "parameters",
                     "store_fingerprint", "built_at"]
    (row,) = rows
    assert row[:9] == (manifest["version"], "hnsw", "HNSW32,Flat", 2000, 384, "ip", "cpu", "efSearch=40",
                       manifest["store"]["fingerprint"])
    assert row[9].isoformat().startswith(manifest["built_at"][:19])


def test_build_script_takes_its_parameters_from_variables(synthetic_catalog: Path, connection) -> None:
    script = PROJECT_DIR / "sql" / "build_index.sql"
    result = sqlfiles.run_script(connection, script, {"family": "ivf_flat", "nlist": 16, "publish": False})
    manifest = dict(result.fetchall())
    assert (manifest["family"], manifest["factory"], manifest["ntotal"]) == ("ivf_flat", "IVF16,Flat", "2000")
    assert json.loads(manifest["build_parameters"])["nlist"] == 16
    assert faiss_versions.current_version(synthetic_catalog) is None
    assert len(faiss_versions.list_versions(synthetic_catalog)["versions"]) == 1

    connection.execute("RESET VARIABLE publish")
    manifest = dict(sqlfiles.run_script(connection, script, {"family": "flat"}).fetchall())
    assert faiss_versions.current_version(synthetic_catalog) == manifest["version"]
    assert manifest["family_reason"] == "requested explicitly (family='flat')"


def test_faiss_build_reads_faiss_settings_and_arguments_override_them(synthetic_catalog: Path) -> None:
    connection = faiss_connection(synthetic_catalog, faiss_nlist=8, faiss_metric="cos")
    built = dict(connection.execute("SELECT * FROM faiss_build(family := 'ivf_flat')").fetchall())
    assert (built["factory"], built["metric"]) == ("IVF8,Flat", "cos")
    built = dict(connection.execute("SELECT * FROM faiss_build(family := 'ivf_flat', nlist := 4)").fetchall())
    assert (built["factory"], built["metric"]) == ("IVF4,Flat", "cos")
    connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metrics_exporter_binds_loopback_from_settings(synthetic_catalog: Path, connection) -> None:
    assert (Settings().metrics_host, Settings().metrics_port) == ("127.0.0.1", 9464)
    port = free_port()
    # Only the port is set: the host is the default, loopback.
    exporter = metrics.serve(CatalogContext(catalog_dir=synthetic_catalog, settings={"metrics_port": port}))
    try:
        # The bound address, read from the listening socket itself.
        assert exporter.server.socket.getsockname()[:2] == ("127.0.0.1", port)
        assert exporter.url == f"http://127.0.0.1:{port}/metrics"
        assert metrics.serve(CatalogContext(catalog_dir=synthetic_catalog, settings={"metrics_port": port})) is exporter
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        with urllib.request.urlopen(exporter.url, timeout=10) as response:
            assert "faiss_ann_search_duration_seconds" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin", timeout=10)
        assert raised.value.code == 404
    finally:
        exporter.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    rows = connection.execute("SELECT DISTINCT metric FROM faiss_metrics() ORDER BY metric").fetchall()
    assert ("faiss_refine_kept_ratio",) in rows


@pytest.mark.parametrize("port", [22, 80, 0, 1023, 65536, -1, True, "9464", None])
def test_metrics_port_below_1024_or_invalid_is_refused(synthetic_catalog: Path, port: object) -> None:
    # Settings refuses the value when the context is made (udfs/settings.py holds the range).
    with pytest.raises((SettingError, UdfError), match=r"setting metrics_port must be"):
        metrics.serve(CatalogContext(catalog_dir=synthetic_catalog, settings={"metrics_port": port}))


def test_metrics_host_must_be_a_host(synthetic_catalog: Path) -> None:
    for host in ("", 7):
        with pytest.raises((SettingError, UdfError), match="setting metrics_host"):
            metrics.serve(CatalogContext(catalog_dir=synthetic_catalog,
                                         settings={"metrics_host": host, "metrics_port": 9999}))


def test_no_sql_function_opens_a_listener(synthetic_catalog: Path) -> None:
    """Serving is a process decision (settings, a command), never a SQL caller's: no UDF of
    any family serves, and the removed metrics_serve is unknown to a prepared connection."""
    specs = families.all_udf_specs()
    assert not [spec.name for spec in specs if "serve" in spec.name or spec.function is metrics.serve]
    assert {"metrics_host", "metrics_port"} <= set(Settings.names())
    connection = bootstrap.connect(synthetic_catalog)
    try:
        names = {name for (name,) in connection.execute("SELECT function_name FROM duckdb_functions()").fetchall()}
        assert "faiss_metrics" in names and "metrics_serve" not in names
        with pytest.raises(duckdb.CatalogException):
            connection.execute("SELECT metrics_serve(9464)").fetchall()
    finally:
        connection.close()


# --------------------------------------------------------------------------- views


def test_views_show_indexed_unindexed_and_orphan_chunks(
    synthetic_catalog: Path, connection, synthetic_table: pa.Table, tmp_path: Path
) -> None:
    build_index(synthetic_catalog, "flat")
    apply_catalog_objects(connection, synthetic_catalog)
    assert connection.execute("SELECT count(*), count(DISTINCT chunk_id) FROM v_faiss_idmap").fetchone() == (
        2000, 2000,
    )
    assert connection.execute("SELECT count(*), bool_and(indexed) FROM v_faiss_join").fetchone() == (2000, True)
    assert connection.execute("SELECT count(*) FROM v_faiss_orphan_ids").fetchone() == (0,)

    # A new store version drops 100 chunks and adds 30; the index still holds the old ones.
    dropped = synthetic_table.slice(0, 100).column("id").to_pylist()
    added = synthetic_table.slice(100, 30).set_column(
        0, "id", pa.array([10**15 + i for i in range(30)], pa.int64())
    )
    changed = pa.concat_tables([synthetic_table.slice(100), added])
    pq.write_table(changed, tmp_path / "changed.parquet")
    bootstrap.import_chunks(tmp_path / "changed.parquet", synthetic_catalog)
    orphans = connection.execute("SELECT chunk_id FROM v_faiss_orphan_ids ORDER BY chunk_id").fetchall()
    assert [chunk_id for (chunk_id,) in orphans] == sorted(dropped)
    unindexed = connection.execute("SELECT id, faiss_row FROM v_faiss_join WHERE NOT indexed ORDER BY id")
    assert unindexed.fetchall() == [(10**15 + i, None) for i in range(30)]


def test_statements_calling_core_owning_udfs_run_with_one_duckdb_thread(
    synthetic_catalog: Path, connection, tmp_path: Path
) -> None:
    """FAISS's OpenMP team owns the cores while a statement calls faiss_topk, directly or
    through a macro (also one the script itself defines); other statements keep the setting,
    faiss_search's too: its native UDF searches one query at a time on one OpenMP thread."""
    build_index(synthetic_catalog, "flat")
    connection.execute("SET threads = 3")
    owners = sqlfiles.core_owning_names(connection)
    assert {"faiss_topk", "exact_rerank", "embed"} <= owners
    assert not {"faiss_index_info", "faiss_search", "faiss_search_hits"} & owners
    script = tmp_path / "threads.sql"
    script.write_text(
        "CREATE TEMP TABLE q AS SELECT [0.1, 0.2] || list_transform(range(382), i -> 0.0::FLOAT) AS v;\n"
        "CREATE TEMP TABLE plain AS SELECT current_setting('threads') AS threads;\n"
        "CREATE TEMP TABLE direct AS SELECT current_setting('threads') AS threads, "
        "len(faiss_topk(q.v, 3)) AS hits FROM q;\n"
        "CREATE TEMP MACRO nearest(v) AS TABLE SELECT unnest(faiss_topk(v, 2));\n"
        "CREATE TEMP TABLE via_macro AS SELECT current_setting('threads') AS threads, count(*) AS hits "
        "FROM q, LATERAL nearest(q.v);\n"
        "CREATE TEMP TABLE one_query AS SELECT current_setting('threads') AS threads, count(*) AS hits "
        "FROM q, LATERAL faiss_search(q.v, k := 2);\n"
        "SELECT p.threads AS plain, d.threads AS direct, d.hits AS direct_hits, m.threads AS via_macro, "
        "m.hits AS macro_hits, o.threads AS one_query, o.hits AS one_query_hits "
        "FROM plain AS p, direct AS d, via_macro AS m, one_query AS o;\n"
    )
    assert sqlfiles.run_script(connection, script).fetchone() == (3, 1, 3, 1, 2, 3, 2)
    assert connection.execute("SELECT current_setting('threads')").fetchone() == (3,)


def test_core_owners_are_read_once_per_connection_and_follow_definitions(
    synthetic_catalog: Path, connection, tmp_path: Path
) -> None:
    """core_owning_names reads every definition once per connection (duckdb_functions(), 12-14 ms);
    a macro defined by run_script counts at once, one defined another way after forgetting."""
    build_index(synthetic_catalog, "flat")
    first = sqlfiles.core_owning_names(connection)
    assert sqlfiles.core_owning_names(connection) is first
    connection.execute("CREATE TEMP MACRO mine(v) AS TABLE SELECT unnest(faiss_topk(v, 2))")
    assert "mine" not in sqlfiles.core_owning_names(connection)
    sqlfiles.forget_core_owning_names(connection)
    assert "mine" in sqlfiles.core_owning_names(connection)
    script = tmp_path / "define.sql"
    script.write_text("CREATE TEMP MACRO theirs(v) AS TABLE SELECT * FROM mine(v);\nSELECT 1;\n")
    sqlfiles.run_script(connection, script)
    assert {"mine", "theirs"} <= sqlfiles.core_owning_names(connection)
    # The oracle: every definition read afresh.
    sqlfiles.forget_core_owning_names(connection)
    fresh = sqlfiles.core_owning_names(connection)
    assert {"mine", "theirs", "faiss_topk"} <= fresh and "faiss_search" not in fresh


def test_a_udf_call_searches_for_no_missing_module(synthetic_catalog: Path, connection) -> None:
    """DuckDB looks pandas up on every Python UDF call; installed (a dependency for that reason),
    the lookup is a dict hit, not a failed search of sys.path."""
    build_index(synthetic_catalog, "flat")
    searched: list[str] = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            searched.append(name)

    sys.meta_path.insert(0, Spy())
    try:
        connection.execute("SELECT * FROM faiss_search(range(384)::FLOAT[], k := 3, k_factor := 2)").fetchall()
    finally:
        sys.meta_path.pop(0)
    assert searched == []


def test_a_prepared_search_answers_from_the_index_published_at_execute(synthetic_catalog: Path, connection,
                                                                       store) -> None:
    """A query passed as a parameter is searched at every EXECUTE, on the index published then, and
    faiss_index_info (side_effects) answers at every EXECUTE.  The search UDFs fold on constant
    arguments (udfs/faiss_search.py), so a PREPARE of a constant query keeps its first answer."""
    exact = build_index(synthetic_catalog, "flat")
    approximate = build_index(synthetic_catalog, "ivf_pq", nprobe=4)
    query = perturbed_queries(store.vectors, 1, seed=3)[0].tolist()
    connection.execute("SET VARIABLE q = ?::FLOAT[384]", [query])
    statements = {
        "search": "SELECT chunk_id, score, uri FROM faiss_search($1::FLOAT[384], k := 5)",
        "topk": "SELECT [h.score FOR h IN faiss_topk($1::FLOAT[384], 5)]",
        "rerank": "SELECT [h.score FOR h IN exact_rerank($1::FLOAT[384], [1, 2, 3]::BIGINT[], 2, NULL)]",
    }
    for name, sql in statements.items():
        connection.execute(f"PREPARE prepared_{name} AS {sql}")
    connection.execute("PREPARE prepared_info AS SELECT version FROM faiss_index_info()")
    execute = {name: f"EXECUTE prepared_{name}(getvariable('q'))" for name in statements}
    at_prepare = {name: connection.execute(sql).fetchall() for name, sql in execute.items()}
    assert connection.execute("EXECUTE prepared_info").fetchall() == [(approximate["version"],)]

    faiss_versions.publish(synthetic_catalog, exact["version"])
    for name, sql in statements.items():
        assert connection.execute(execute[name]).fetchall() == connection.execute(sql, [query]).fetchall(), name
    assert connection.execute("EXECUTE prepared_info").fetchall() == [(exact["version"],)]
    # Flat's exact scores differ from IVF-PQ's approximate ones: the search really ran again.
    assert connection.execute(execute["search"]).fetchall() != at_prepare["search"]

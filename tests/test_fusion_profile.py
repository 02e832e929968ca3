"""The hybrid channel's fusion profile: sql/tune_fusion.sql, fusion_save / fusion_profile, and
how sql/write_pool.sql fuses with it.  Every figure the script reports is recomputed here in
Python from the channels' own rows."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest

import bootstrap
from codeintel import demo, errors, layout, sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from tests.conftest import SYNTHETIC_SEED, copy_catalog, index_and_load_queries
from tests.eval_support import load_query_set, perturbed, write_pool
from udfs import faiss_build, faiss_versions

QUERIES = 40
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
RRF_KS = (10.0, 30.0, 60.0)


def query_set(table) -> tuple[list[dict], list[dict], dict[str, set[int]]]:
    """Queries BM25 answers (even: the function's name) or FAISS does (every third: a close
    embedding), both, or neither; judged by chunk id or by the chunk's uri and lines.

    Returns the queries, the qrels and, per judged query, the chunks of grade > 0.
    """
    ids = table.column("id").to_pylist()
    embeddings = table.column("embedding").to_pylist()
    uris = table.column("uri").to_pylist()
    lines = list(zip(table.column("start_line").to_pylist(), table.column("end_line").to_pylist(), strict=True))
    rng = np.random.default_rng(SYNTHETIC_SEED)
    queries, qrels, relevant = [], [], {}
    for i in range(QUERIES):
        text = f"fn_{i} value" if i % 2 == 0 else "value"
        queries.append({"query_id": f"q{i}", "text": text,
                        "embedding": perturbed(embeddings[i], rng, 0.05 if i % 3 == 0 else 2.0)})
        if i % 4 == 1:  # a line range: resolved to the one chunk it covers
            qrels.append({"query_id": f"q{i}", "uri": uris[i], "start_line": lines[i][0], "end_line": lines[i][1],
                          "grade": 2})
        else:
            qrels.append({"query_id": f"q{i}", "chunk_id": ids[i], "grade": 2})
        relevant[f"q{i}"] = {ids[i]}
        if i % 5 == 0:
            qrels.append({"query_id": f"q{i}", "chunk_id": ids[i + 1], "grade": 1})
            relevant[f"q{i}"].add(ids[i + 1])
    # Neither counts: a query without judgments and one judged not relevant.
    for query_id, grade in (("unjudged", None), ("irrelevant", 0)):
        queries.append({"query_id": query_id, "text": "value", "embedding": embeddings[50]})
        if grade is not None:
            qrels.append({"query_id": query_id, "chunk_id": ids[50], "grade": grade})
    return queries, qrels, relevant


@pytest.fixture(scope="module")
def fusion_template(synthetic_catalog_template: Path, synthetic_table,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[int]]]:
    """The synthetic catalog with a flat index, the BM25 index and the judged query set; no profile."""
    root = tmp_path_factory.mktemp("fusion-profile")
    catalog = copy_catalog(synthetic_catalog_template, root / "catalog")
    faiss_build.build_index(catalog, "flat")
    queries, qrels, relevant = query_set(synthetic_table)
    index_and_load_queries(catalog, root / "query_set", queries, qrels)
    return catalog, relevant


@pytest.fixture
def catalog(fusion_template, tmp_path: Path) -> Path:
    return copy_catalog(fusion_template[0], tmp_path / "catalog")


@pytest.fixture
def connection(catalog: Path) -> duckdb.DuckDBPyConnection:
    connection = bootstrap.connect(catalog)
    yield connection
    connection.close()


def tune(connection: duckdb.DuckDBPyConnection, **parameters) -> dict:
    relation = sqlfiles.run_script(connection, layout.SQL_DIR / "tune_fusion.sql", parameters)
    return dict(zip(relation.columns, relation.fetchone(), strict=True))


@pytest.fixture(scope="module")
def tuned(fusion_template, tmp_path_factory: pytest.TempPathFactory):
    """One tuning run, read by the tests that only look: (catalog, connection, row, fusion.json, relevant)."""
    template, relevant = fusion_template
    catalog = copy_catalog(template, tmp_path_factory.mktemp("tuned") / "catalog")
    connection = bootstrap.connect(catalog)
    row = tune(connection)
    profile = json.loads(Path(row["profile"]).read_text())
    yield catalog, connection, row, profile, relevant
    connection.close()


# --------------------------------------------------------------------------- oracle


def ranked_lists(connection: duckdb.DuckDBPyConnection, sql: str, parameters: list | None = None) -> dict[str, list]:
    lists: dict[str, list[int]] = defaultdict(list)
    for query_id, chunk_id in connection.execute(f"SELECT query_id, chunk_id FROM ({sql}) ORDER BY query_id, rank",
                                                 parameters or []).fetchall():
        lists[query_id].append(chunk_id)
    return lists


def mrr_at_10(lists: dict[str, list[int]], relevant: dict[str, set[int]]) -> float:
    """Mean over judged queries of 1 / rank of the first relevant chunk in the top 10, else 0."""
    total = 0.0
    for query_id, chunks in relevant.items():
        total += next((1 / rank for rank, chunk in enumerate(lists.get(query_id, [])[:10], start=1)
                       if chunk in chunks), 0.0)
    return total / len(relevant)


def fuse(faiss_lists: dict, bm25_lists: dict, faiss_weight: float, bm25_weight: float, rrf_k: float,
         k: int = 10) -> dict[str, list[int]]:
    """Weighted RRF as channel_hybrid defines it: a weight-0 channel left out, ties to the smaller id."""
    fused = {}
    for query_id in set(faiss_lists) | set(bm25_lists):
        scores: dict[int, float] = defaultdict(float)
        for weight, lists in ((faiss_weight, faiss_lists), (bm25_weight, bm25_lists)):
            if weight > 0:
                for rank, chunk in enumerate(lists.get(query_id, []), start=1):
                    scores[chunk] += weight / (rrf_k + rank)
        fused[query_id] = sorted(scores, key=lambda chunk: (-scores[chunk], chunk))[:k]
    return fused


def preferred(point: dict) -> tuple:
    """The script's tie order after MRR: weight ratio nearest 1, rrf_k nearest 60, larger weight nearest 1."""
    faiss_weight, bm25_weight = point["faiss_weight"], point["bm25_weight"]
    ratio = math.inf if 0 in (faiss_weight, bm25_weight) else abs(math.log(faiss_weight / bm25_weight))
    return (ratio, abs(point["rrf_k"] - 60), abs(math.log(max(faiss_weight, bm25_weight))),
            -faiss_weight, -bm25_weight)


# --------------------------------------------------------------------------- tune_fusion.sql


def test_the_pick_scores_as_channel_hybrid_with_its_parameters(tuned) -> None:
    _, connection, row, profile, relevant = tuned
    hybrid = ranked_lists(
        connection, "SELECT * FROM channel_hybrid(k := 10, rrf_k := ?, faiss_weight := ?, bm25_weight := ?, "
        "depth := ?)", [row["rrf_k"], row["faiss_weight"], row["bm25_weight"], row["depth"]])
    assert row["mrr_at_10"] == pytest.approx(mrr_at_10(hybrid, relevant), abs=1e-12)
    assert row["queries"] == QUERIES == profile["queries"]
    assert (profile["faiss_weight"], profile["bm25_weight"], profile["rrf_k"], profile["depth"]) == (
        row["faiss_weight"], row["bm25_weight"], row["rrf_k"], row["depth"])
    assert profile["picked"]["mrr_at_10"] == row["mrr_at_10"]


def test_the_pick_is_never_below_either_channel_alone(tuned) -> None:
    _, connection, row, profile, relevant = tuned
    faiss_alone = mrr_at_10(ranked_lists(connection, "SELECT * FROM channel_faiss(k := 10)"), relevant)
    bm25_alone = mrr_at_10(ranked_lists(connection, "SELECT * FROM channel_bm25(k := 10)"), relevant)
    assert row["faiss_mrr_at_10"] == pytest.approx(faiss_alone, abs=1e-12)
    assert row["bm25_mrr_at_10"] == pytest.approx(bm25_alone, abs=1e-12)
    assert profile["faiss_alone"]["mrr_at_10"] == row["faiss_mrr_at_10"]
    assert row["mrr_at_10"] >= max(faiss_alone, bm25_alone)
    # This query set is built so that fusing beats both channels: the grid matters here.
    assert row["mrr_at_10"] > max(faiss_alone, bm25_alone) + 0.005


def test_every_grid_point_and_the_pick_agree_with_fusion_in_python(tuned) -> None:
    _, connection, _, profile, relevant = tuned
    faiss_lists = ranked_lists(connection, "SELECT * FROM channel_faiss(k := 100)")
    bm25_lists = ranked_lists(connection, "SELECT * FROM channel_bm25(k := 100)")
    grid = profile["grid"]
    assert sorted((p["faiss_weight"], p["bm25_weight"], p["rrf_k"]) for p in grid) == sorted(
        (f, b, r) for f in WEIGHTS for b in WEIGHTS for r in RRF_KS if f + b > 0)
    for point in grid:
        fused = fuse(faiss_lists, bm25_lists, point["faiss_weight"], point["bm25_weight"], point["rrf_k"])
        assert point["mrr_at_10"] == pytest.approx(mrr_at_10(fused, relevant), abs=1e-12), point
    best = max(point["mrr_at_10"] for point in grid)
    expected = min((point for point in grid if point["mrr_at_10"] > best - 1e-12), key=preferred)
    assert profile["picked"] == expected


def test_the_profile_records_what_it_was_measured_on(tuned) -> None:
    catalog, connection, row, profile, _ = tuned
    version = faiss_versions.current_version(catalog)
    assert Path(row["profile"]) == catalog / "index" / "versions" / version / "fusion.json"
    store_version, fingerprint, faiss_version, _ = connection.execute(
        "SELECT unnest(eval_catalog_versions())").fetchone()
    assert profile["measured_on"]["index_version"] == faiss_version == version
    assert profile["measured_on"]["store_version"] == store_version
    assert profile["measured_on"]["store_fingerprint"] == fingerprint
    assert (profile["k"], profile["depth"], profile["metric"], profile["format"]) == (10, 100, "mrr_at_10", 1)
    assert profile["created_at"].endswith("+00:00")
    # Written through a temp file that os.replace renamed: nothing else is left beside it.
    assert [p.name for p in Path(row["profile"]).parent.iterdir() if p.name.startswith(".")] == []


def test_a_rebuilt_index_starts_without_a_profile(tuned) -> None:
    catalog, connection, _, _, _ = tuned
    assert connection.execute("SELECT fusion_profile().source").fetchone() == ("fusion.json",)
    previous = faiss_versions.current_version(catalog)
    faiss_build.build_index(catalog, "flat")
    try:
        assert connection.execute("SELECT fusion_profile().source").fetchone() == ("default",)
    finally:
        faiss_versions.publish(catalog, previous)


def test_tune_fusion_names_what_is_missing(synthetic_catalog: Path, synthetic_table, tmp_path: Path) -> None:
    queries, qrels, _ = query_set(synthetic_table)
    connection = bootstrap.connect(synthetic_catalog)
    try:
        with pytest.raises(errors.CatalogError, match="tune_fusion.sql: no queries table; load a query set"):
            tune(connection)
        connection.execute("CREATE TABLE queries AS SELECT 'q' AS query_id, 'x' AS text, embedding FROM chunks LIMIT 1")
        with pytest.raises(errors.CatalogError, match=r"tune_fusion.sql: no qrels table \(relevance judgments\)"):
            tune(connection)
        load_query_set(connection, tmp_path / "judged", queries, qrels)
        with pytest.raises(errors.CatalogError, match="tune_fusion.sql: the hybrid channel needs the BM25 index; "
                                                         "build it with `python bootstrap.py bm25"):
            tune(connection)
        demo.build_bm25_index(connection)
        with pytest.raises(errors.CatalogError, match="tune_fusion.sql: no FAISS index is published; build one"):
            tune(connection)
        faiss_build.build_index(synthetic_catalog, "flat")
        load_query_set(connection, tmp_path / "unjudged", queries)
        with pytest.raises(errors.CatalogError, match="tune_fusion.sql: no query of the queries table has a "
                                                         "judgment of grade > 0"):
            tune(connection)
        assert not list((synthetic_catalog / "index" / "versions").glob("*/fusion.json"))
    finally:
        connection.close()


@pytest.mark.parametrize(("parameters", "message"), [
    ({"k": 0}, "tune_fusion.sql: k must be an integer of at least 1, got 0; pass --param k=10"),
    ({"k": 2.5}, "tune_fusion.sql: k must be an integer of at least 1, got 2.5"),
    ({"depth": "many"}, "tune_fusion.sql: depth must be an integer of at least 1, got many"),
    ({"k": 20, "depth": 10}, "tune_fusion.sql: depth (candidates fused per channel) must be at least k = 20, got 10"),
], ids=["k-zero", "k-fraction", "depth-text", "depth-below-k"])
def test_bad_parameters_are_refused(connection, parameters: dict, message: str) -> None:
    with pytest.raises(errors.CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tune(connection, **parameters)


# --------------------------------------------------------------------------- fusion_profile and write_pool.sql


def run_parameters(connection: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    return json.loads(connection.execute("SELECT parameters FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])


def test_hybrid_runs_fuse_with_the_profile_and_explicit_parameters_win(catalog: Path, connection) -> None:
    assert not (catalog / "index" / "CURRENT" / "fusion.json").exists()
    tuned_row = tune(connection)
    assert connection.execute("SELECT unnest(fusion_profile())").fetchone() == (
        tuned_row["faiss_weight"], tuned_row["bm25_weight"], tuned_row["rrf_k"], 100, "fusion.json")

    write_pool(connection, channel="hybrid", run_id="profiled")
    recorded = run_parameters(connection, "profiled")
    assert (recorded["faiss_weight"], recorded["bm25_weight"], recorded["rrf_k"], recorded["depth"],
            recorded["weights_source"]) == (tuned_row["faiss_weight"], tuned_row["bm25_weight"], tuned_row["rrf_k"],
                                            100, "fusion.json")
    # The pool is channel_hybrid's ranking at the profile's parameters.
    pool = connection.execute("SELECT query_id, rank, chunk_id FROM read_parquet(?) ORDER BY ALL",
                              [str(catalog / "pools" / "profiled.parquet")]).fetchall()
    assert pool == connection.execute(
        "SELECT query_id, rank, chunk_id FROM channel_hybrid(k := 10, rrf_k := ?, faiss_weight := ?, "
        "bm25_weight := ?, depth := 100) ORDER BY ALL",
        [tuned_row["rrf_k"], tuned_row["faiss_weight"], tuned_row["bm25_weight"]]).fetchall()
    # And the evaluation views score that pool as the script scored the pick.
    apply_catalog_objects(connection, catalog)
    picked = json.loads(Path(tuned_row["profile"]).read_text())["picked"]
    assert connection.execute(
        "SELECT judged_queries, mrr_at_10, ndcg_at_10, recall_at_10 FROM v_eval_per_channel WHERE run_id = 'profiled'"
    ).fetchone() == pytest.approx((QUERIES, picked["mrr_at_10"], picked["ndcg_at_10"], picked["recall_at_10"]),
                                  abs=1e-12)

    # One weight passed replaces the pair (the other is 1.0); rrf_k and depth still come from the profile.
    write_pool(connection, channel="hybrid", bm25_weight=3, run_id="one-weight")
    recorded = run_parameters(connection, "one-weight")
    assert (recorded["faiss_weight"], recorded["bm25_weight"], recorded["rrf_k"], recorded["weights_source"]) == (
        1.0, 3.0, tuned_row["rrf_k"], "explicit")
    write_pool(connection, channel="hybrid", faiss_weight=2, bm25_weight=0.5, rrf_k=5, depth=50, run_id="all")
    recorded = run_parameters(connection, "all")
    assert (recorded["faiss_weight"], recorded["bm25_weight"], recorded["rrf_k"], recorded["depth"],
            recorded["weights_source"]) == (2.0, 0.5, 5.0, 50, "explicit")
    # Other channels neither read nor record it.
    write_pool(connection, channel="bm25", run_id="lexical")
    assert "weights_source" not in run_parameters(connection, "lexical")


def test_without_a_profile_hybrid_runs_use_the_defaults(connection) -> None:
    assert connection.execute("SELECT unnest(fusion_profile())").fetchone() == (1.0, 1.0, 60.0, 100, "default")
    write_pool(connection, channel="hybrid", run_id="plain")
    recorded = run_parameters(connection, "plain")
    assert (recorded["faiss_weight"], recorded["bm25_weight"], recorded["rrf_k"], recorded["depth"],
            recorded["weights_source"]) == (1.0, 1.0, 60.0, 100, "default")


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object, not list"),
    ('{"faiss_weight": 1, "bm25_weight": -1, "rrf_k": 60, "depth": 100}',
     "needs bm25_weight, a finite number of at least 0, got -1"),
    ('{"faiss_weight": 0, "bm25_weight": 0, "rrf_k": 60, "depth": 100}', "has faiss_weight and bm25_weight both 0"),
    ('{"faiss_weight": 1, "bm25_weight": 1, "rrf_k": 60, "depth": 0}', "needs depth, an integer of at least 1"),
    ('{"faiss_weight": 1, "bm25_weight": 1, "rrf_k": 60, "depth": 100, "measured_on": {"index_version": "other"}}',
     "was measured on index version other, not on"),
], ids=["not-json", "a-list", "negative-weight", "both-weights-zero", "depth-zero", "another-version"])
def test_a_bad_profile_is_refused_with_the_fix(catalog: Path, connection, content: str, problem: str) -> None:
    path = catalog / "index" / "versions" / faiss_versions.current_version(catalog) / "fusion.json"
    path.write_text(content)
    fix = "re-run sql/tune_fusion.sql (python bootstrap.py sql sql/tune_fusion.sql --catalog"
    with pytest.raises(duckdb.Error) as raised:
        connection.execute("SELECT fusion_profile()").fetchall()
    assert f"fusion_profile: {path} {problem}" in str(raised.value)
    assert fix in str(raised.value) and "or delete the file to fuse with the defaults" in str(raised.value)
    with pytest.raises(errors.CatalogError, match="fusion_profile: .*fusion.json"):
        write_pool(connection, channel="hybrid")
    write_pool(connection, channel="faiss")  # only hybrid runs read the profile


def test_a_hand_written_profile_without_provenance_is_used(catalog: Path, connection) -> None:
    (catalog / "index" / "CURRENT" / "fusion.json").write_text(
        '{"faiss_weight": 0.5, "bm25_weight": 2, "rrf_k": 30, "depth": 40}')
    assert connection.execute("SELECT unnest(fusion_profile())").fetchone() == (0.5, 2.0, 30.0, 40, "fusion.json")


def test_fusion_save_files_a_profile_only_under_the_index_it_was_measured_on(catalog: Path, connection) -> None:
    version = faiss_versions.current_version(catalog)
    profile = {"faiss_weight": 1, "bm25_weight": 2, "rrf_k": 60, "depth": 100}
    save = "SELECT fusion_save(?::JSON)"
    with pytest.raises(duckdb.Error, match="fusion_save: profile lacks measured_on.index_version"):
        connection.execute(save, [json.dumps(profile)]).fetchall()
    with pytest.raises(duckdb.Error, match=f"fusion_save: profile was measured on index version old, but "
                                           f"index/CURRENT now points at {version}"):
        connection.execute(save, [json.dumps({**profile, "measured_on": {"index_version": "old"}})]).fetchall()
    with pytest.raises(duckdb.Error, match="fusion_save: profile needs rrf_k"):
        connection.execute(save, [json.dumps({**profile, "rrf_k": None})]).fetchall()
    assert not (catalog / "index" / "CURRENT" / "fusion.json").exists()
    path = connection.execute(save, [json.dumps({**profile, "measured_on": {"index_version": version}})]).fetchone()[0]
    assert path == str(catalog / "index" / "versions" / version / "fusion.json")
    assert connection.execute("SELECT unnest(fusion_profile())").fetchone() == (1.0, 2.0, 60.0, 100, "fusion.json")

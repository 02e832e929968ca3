"""Autotune: the sweep, the pick, the persisted profile and how loading applies or refuses it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bootstrap
from udfs import faiss_build, faiss_current, faiss_loaded, faiss_sweep, progress
from udfs.context import CatalogContext
from udfs.faiss_build import build_index
from udfs.registry import UdfError
from udfs.settings import SettingError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Few queries keep every sweep here well under a second on the 2000-vector fixture.
QUERIES = 200


def context_for(catalog: Path, **settings: object) -> CatalogContext:
    return CatalogContext(catalog_dir=catalog, settings=settings)


def load(catalog: Path, **settings: object) -> faiss_loaded.LoadedIndex:
    """A fresh load (no cached index), as a new connection would do it."""
    return faiss_current.load_current(context_for(catalog, **settings))


def profile_of(loaded: faiss_loaded.LoadedIndex) -> dict:
    return json.loads((loaded.directory / "tuning.json").read_text())


def exact_recall(loaded: faiss_loaded.LoadedIndex, queries: np.ndarray, k: int) -> float:
    """recall@k of the index as it is set now, against brute force in numpy (metric 'ip')."""
    truth_rows = np.argsort(-(queries @ np.asarray(loaded.vectors).T), axis=1)[:, :k]
    _, found = loaded.search(queries, k)
    hits = [len(set(loaded.ids[truth]) & set(row)) for truth, row in zip(truth_rows, found, strict=True)]
    return sum(hits) / (len(queries) * k)


@pytest.mark.parametrize("family", ["ivf_flat", "ivf_sq"])
def test_picked_point_is_the_fastest_reaching_the_target_on_the_tuning_queries(
    synthetic_catalog: Path, family: str
) -> None:
    build_index(synthetic_catalog, family)
    loaded = load(synthetic_catalog)
    queries = faiss_sweep.held_out_queries(loaded.vectors, QUERIES, seed=7)
    result = faiss_sweep.tune(loaded, k=10, target_recall=0.9, queries=queries)
    assert result.target_met and result.picked.picked and result.picked.recall_at_k >= 0.9
    # The index keeps the pick, and its recall there, measured independently, is the reported one.
    assert loaded.parameters() == result.picked.parameters
    assert exact_recall(loaded, queries, 10) == pytest.approx(result.picked.recall_at_k)
    reaching = [point for point in result.grid if point.meets_target]
    assert result.picked.batch_mean_ms == min(point.batch_mean_ms for point in reaching)
    assert result.picked.recall_low <= result.picked.recall_at_k <= result.picked.recall_high
    assert "the fastest of" in result.note


def test_profile_records_the_whole_grid_and_round_trips_through_a_fresh_load(synthetic_catalog: Path) -> None:
    manifest = build_index(synthetic_catalog, "ivf_pq_refine", nprobe=4)
    connection = bootstrap.connect(synthetic_catalog)
    try:
        rows = connection.execute(
            "SELECT parameters, picked, build_default FROM faiss_autotune(target_recall := 0.8, query_count := 200)"
        ).fetchall()
        applied = connection.execute("SELECT parameters FROM faiss_index_info()").fetchone()[0]
    finally:
        connection.close()
    fresh = load(synthetic_catalog)
    profile = profile_of(fresh)
    assert fresh.parameters() == profile["parameters"] == applied
    assert [row[0] for row in rows if row[1]] == [profile["parameters"]]
    # Every combination of FAISS's ranges is recorded (no Pareto pruning), the build default among them.
    ranges = profile["parameter_space"]
    assert set(ranges) == {"nprobe", "refine_k_factor"}
    assert len(rows) == len(profile["grid"]) == len(ranges["nprobe"]) * len(ranges["refine_k_factor"])
    assert [row[0] for row in rows if row[2]] == ["nprobe=4,refine_k_factor=4"]
    assert profile["index"] == {
        "version": manifest["version"], "factory": manifest["factory"], "dimension": 384, "ntotal": 2000,
        "family": "ivf_pq_refine", "metric": "ip", "device": "cpu",
    }
    assert (profile["k"], profile["target_recall"], profile["queries"]["count"]) == (10, 0.8, 200)
    assert profile["oracle"]["queries"] == 200 and "knn_ground_truth" in profile["oracle"]["method"]
    assert set(profile["libraries"]) == {"faiss", "numpy", "duckdb", "matplotlib"}
    assert len(profile["queries"]["fingerprint"]) == 16
    assert not list(fresh.directory.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("field", "foreign_value"),
    [("dimension", 768), ("factory", "IVF51,PQ48x5np"), ("ntotal", 1999), ("version", "20200101T000000000000Z-abcdef")],
)
def test_profile_of_another_index_is_refused_naming_both(synthetic_catalog: Path, field: str, foreign_value) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    loaded = load(synthetic_catalog)
    faiss_sweep.tune(loaded, query_count=QUERIES)
    path = loaded.directory / "tuning.json"
    profile = json.loads(path.read_text())
    own_value = profile["index"][field]
    profile["index"][field] = foreign_value
    path.write_text(json.dumps(profile))
    with pytest.raises(UdfError) as raised:
        load(synthetic_catalog)
    message = str(raised.value)
    assert f"{field} differ" in message and str(foreign_value) in message and str(own_value) in message
    assert "python bootstrap.py autotune --catalog" in message


def test_profile_copied_from_an_older_version_is_refused(synthetic_catalog: Path) -> None:
    first = build_index(synthetic_catalog, "ivf_flat")
    faiss_sweep.tune(load(synthetic_catalog), query_count=QUERIES)
    second = build_index(synthetic_catalog, "ivf_flat", nlist=32)
    versions = synthetic_catalog / "index" / "versions"
    shutil.copy(versions / first["version"] / "tuning.json", versions / second["version"] / "tuning.json")
    with pytest.raises(UdfError, match=f"measured on index version {first['version']} \\(IVF51,Flat") as raised:
        load(synthetic_catalog)
    assert f"not on this index version {second['version']} (IVF32,Flat" in str(raised.value)


def test_recall_does_not_fall_as_nprobe_grows_on_ivf_flat(synthetic_catalog: Path) -> None:
    # IVF-Flat with a Flat quantizer probes a superset of lists as nprobe grows and scores
    # candidates exactly, so on the same queries recall@k can only rise or stay.
    build_index(synthetic_catalog, "ivf_flat")
    result = faiss_sweep.tune(load(synthetic_catalog), k=10, target_recall=0.99, query_count=QUERIES)
    by_nprobe = sorted(result.grid, key=lambda point: float(point.parameters.removeprefix("nprobe=")))
    recalls = [point.recall_at_k for point in by_nprobe]
    assert len(recalls) == 6 and recalls == sorted(recalls)
    assert recalls[0] < recalls[-1]


def test_unreachable_target_falls_back_to_the_best_recall_and_says_so(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_pq")  # PQ48x5 codes: approximate distances cap recall below 1
    loaded = load(synthetic_catalog)
    result = faiss_sweep.tune(loaded, k=10, target_recall=1.0, query_count=QUERIES)
    best = max(point.recall_at_k for point in result.grid)
    assert not result.target_met and best < 1.0
    assert result.picked.recall_at_k == best and not any(point.meets_target for point in result.grid)
    assert result.note.startswith("target recall@10 >= 1 NOT reached by any of the")
    profile = profile_of(loaded)
    assert profile["target_met"] is False and profile["note"] == result.note
    assert load(synthetic_catalog).parameters() == result.picked.parameters


def test_hnsw_sweeps_ef_search(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "hnsw", hnsw_m=8, ef_construction=40)
    result = faiss_sweep.tune(load(synthetic_catalog), target_recall=0.9, query_count=QUERIES)
    assert [point.parameters for point in result.grid] == [f"efSearch={2**i}" for i in range(2, 10)]
    assert [point.parameters for point in result.grid if point.build_default] == ["efSearch=64"]


def test_flat_has_nothing_to_tune(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "flat")
    loaded = load(synthetic_catalog)
    result = faiss_sweep.tune(loaded, query_count=QUERIES)
    assert len(result.grid) == 1
    point = result.grid[0]
    assert (point.parameters, point.recall_at_k, point.recall_low, point.picked) == ("", 1.0, 1.0, True)
    assert result.note.startswith("Flat search is exact: nothing to tune")
    assert profile_of(loaded)["parameters"] == ""
    assert load(synthetic_catalog).parameters() == ""


def test_autotune_on_start_tunes_a_version_without_profile_once(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    untuned = load(synthetic_catalog)
    assert profile_of(untuned) == {} and untuned.parameters() == "nprobe=16"
    started = load(synthetic_catalog, autotune_on_start=True, autotune_target_recall=0.9)
    profile = profile_of(started)
    assert profile["target_recall"] == 0.9 and started.parameters() == profile["parameters"]
    tuned_at = (started.directory / "tuning.json").stat().st_mtime_ns
    again = load(synthetic_catalog, autotune_on_start=True)
    assert again.parameters() == profile["parameters"]
    assert (started.directory / "tuning.json").stat().st_mtime_ns == tuned_at


def test_autotune_on_start_must_be_a_boolean(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    with pytest.raises(SettingError, match="setting autotune_on_start must be true or false, got 'yes'"):
        load(synthetic_catalog, autotune_on_start="yes")


def test_plot_is_a_png_beside_the_profile(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    result = faiss_sweep.tune(load(synthetic_catalog), query_count=QUERIES)
    assert result.plot_path == result.profile_path.with_name("tuning.png")
    assert result.plot_path.read_bytes()[:8] == PNG_SIGNATURE
    assert result.profile["plot"] == "tuning.png"


def test_query_fingerprint_ignores_row_order_and_supplied_queries_are_sampled(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    loaded = load(synthetic_catalog)
    queries = faiss_sweep.held_out_queries(loaded.vectors, 300, seed=3)
    assert faiss_sweep.query_fingerprint(queries) == faiss_sweep.query_fingerprint(queries[::-1])
    assert faiss_sweep.query_fingerprint(queries) != faiss_sweep.query_fingerprint(queries[1:])
    forward = faiss_sweep.tune(loaded, queries=queries, query_count=QUERIES, seed=5).profile["queries"]
    backward = faiss_sweep.tune(loaded, queries=queries[::-1], query_count=QUERIES, seed=5).profile["queries"]
    assert forward == backward and (forward["count"], forward["offered"]) == (QUERIES, 300)
    # Held-out queries are near their source vectors, not equal to them.
    similarity = np.sum(queries * np.asarray(loaded.vectors)[np.sort(
        np.random.default_rng(3).choice(2000, 300, replace=False))], axis=1)
    assert 0.8 < similarity.mean() < 0.95


def test_supplied_queries_of_another_dimension_are_refused(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    with pytest.raises(UdfError, match="autotune: queries must be query vectors of dimension 384"):
        faiss_sweep.tune(load(synthetic_catalog), queries=np.ones((5, 8), dtype=np.float32))


def test_cli_autotune_with_a_parquet_query_file(
    synthetic_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    build_index(synthetic_catalog, "ivf_flat")
    loaded = load(synthetic_catalog)
    queries = faiss_sweep.held_out_queries(loaded.vectors, 150, seed=11)
    path = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(queries.ravel()), 384)}), path)
    assert bootstrap.main(["autotune", "--catalog", str(synthetic_catalog), "--k", "5", "--target-recall", "0.9",
                           "--queries", str(path)]) == 0
    assert "picked nprobe=" in capsys.readouterr().out
    profile = profile_of(load(synthetic_catalog))
    assert profile["k"] == 5 and profile["queries"]["source"] == f"query_table({str(path)!r})"
    assert profile["queries"]["fingerprint"] == faiss_sweep.query_fingerprint(queries)


def test_build_and_autotune_log_progress_when_not_on_a_terminal(
    synthetic_catalog: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(faiss_build, "ADD_BATCH_ROWS", 500)  # the 2000-vector fixture is added in 4 batches
    with caplog.at_level(logging.INFO, logger="codeintel"):
        build_index(synthetic_catalog, "ivf_flat")
        faiss_sweep.tune(load(synthetic_catalog), query_count=QUERIES)
    lines = [record.getMessage() for record in caplog.records if record.name == "codeintel.progress"]
    assert any(line.startswith("faiss_build: reading the store: done (") for line in lines), lines
    assert any(line.startswith("faiss_build: training ivf_flat: started (") for line in lines), lines
    assert "faiss_build: adding to ivf_flat: started (2000 vectors)" in lines, lines
    assert any(line.startswith("faiss_build: adding to ivf_flat: 1000/2000 vectors (") for line in lines), lines
    assert any(line.startswith("faiss_build: adding to ivf_flat: done, 2000/2000 vectors") for line in lines), lines
    assert any(line.startswith("faiss_build: writing version ") and ": done (" in line for line in lines), lines
    assert any(line.startswith("autotune: exact neighbours of 200 queries over 2000 vectors: done (")
               for line in lines), lines
    points = next(line for line in lines if line.startswith("autotune: single-query timing: started ("))
    total = int(points.split("(")[1].split()[0])
    assert total > 1
    assert any(line.startswith(f"autotune: single-query timing: 1/{total} points (") for line in lines), lines
    assert any(line.startswith(f"autotune: single-query timing: done, {total}/{total} points") for line in lines)
    assert any(line.startswith("autotune: batched sweep of ") for line in lines), lines


def test_a_stage_on_a_terminal_draws_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.stage("faiss_build: adding to flat", total=4, unit="vectors", bar=True) as step:
        step.advance(4)
    assert "faiss_build: adding to flat" in capsys.readouterr().err

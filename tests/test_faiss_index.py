"""FAISS index lifecycle: family choice, build layout, atomic publish, rollback, gc, load."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from udfs import faiss_current, faiss_loaded, faiss_tuning, faiss_versions
from udfs.context import CatalogContext
from udfs.faiss_build import BuildOptions, build_index, choose_family, plan_index
from udfs.registry import UdfError
from udfs.settings import Settings
from udfs.versioned_dir import VersionedDir

GIB = 2**30


def context_for(catalog: Path, **settings: object) -> CatalogContext:
    return CatalogContext(catalog_dir=catalog, settings=settings)


def current_target(catalog: Path) -> str:
    return os.readlink(catalog / "index" / "CURRENT")


def version_names(catalog: Path) -> list[str]:
    return sorted(path.name for path in (catalog / "index" / "versions").iterdir())


@pytest.mark.parametrize(
    ("ntotal", "budget", "use_gpu", "family"),
    [
        (3_000, 64 * GIB, False, "flat"),
        (200_000, 64 * GIB, False, "hnsw"),
        (200_000, 64 * GIB, True, "ivf_flat"),
        (5_000_000, 64 * GIB, False, "ivf_pq_refine"),
        (5_000_000, 4 * GIB, False, "ivf_pq"),
    ],
)
def test_auto_chooses_family_by_size_and_memory(ntotal: int, budget: int, use_gpu: bool, family: str) -> None:
    options = BuildOptions(memory_budget_bytes=budget, use_gpu=use_gpu)
    chosen, reason, measurement = choose_family(ntotal, 384, options)
    assert chosen == family and measurement is None  # without the store's vectors, sizes decide
    assert reason.startswith("auto: ") and str(ntotal) in reason


def test_plan_derives_factory_strings_from_options() -> None:
    options = BuildOptions(nlist=64, pq_m=16, pq_nbits=8, opq=True, nprobe=8, refine_k_factor=3)
    plan = plan_index("ivf_pq_refine", 1_000_000, 384, options)
    assert plan.factory == "OPQ16,IVF64,PQ16x8np,RFlat"
    assert plan.search_parameters == "nprobe=8,refine_k_factor=3"
    assert plan_index("hnsw", 10, 8, BuildOptions(hnsw_m=16)).factory == "HNSW16,Flat"
    # Defaults follow the store: nlist ~ 4 sqrt(n) capped so every list gets 39 training points.
    small = plan_index("ivf_flat", 2000, 384, BuildOptions())
    assert small.factory == f"IVF{2000 // 39},Flat"
    assert plan_index("ivf_pq", 2000, 384, BuildOptions()).factory == "IVF51,PQ48x5np"
    assert plan_index("ivf_sq", 2000, 384, BuildOptions()).factory == "IVF51,SQfp16"
    assert plan_index("ivf_sq", 2000, 384, BuildOptions(sq_type="8")).factory == "IVF51,SQ8"
    # From 1024 lists a query finds its lists through an HNSW graph over the centroids, except on GPU.
    assert plan_index("ivf_sq", 200_000, 384, BuildOptions()).factory == "IVF1789_HNSW32,SQfp16"
    assert plan_index("ivf_sq", 200_000, 384, BuildOptions(use_gpu=True)).factory == "IVF1789,SQfp16"
    assert plan_index("ivf_flat", 200_000, 384, BuildOptions(nlist=1023)).factory == "IVF1023,Flat"
    assert plan_index("ivf_pq", 1_000_000, 384, BuildOptions(opq=True)).factory == "OPQ48,IVF4000_HNSW32,PQ48x8np"


def test_flat_coarse_quantizer_keeps_the_lists_for_the_gpu_cloner() -> None:
    """An HNSW-quantized IVF made GPU-cloneable: a flat quantizer over the same centroids, the
    same lists, so probing every list is exact search (numpy brute force)."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, 16), dtype=np.float32)
    queries = rng.standard_normal((12, 16), dtype=np.float32)
    index = faiss.IndexIDMap2(faiss.index_factory(16, "IVF40_HNSW32,Flat", faiss.METRIC_INNER_PRODUCT))
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(3000, dtype=np.int64) * 5)
    swapped = faiss_loaded.flat_coarse_quantizer(index)
    ivf = faiss.extract_index_ivf(swapped)
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat) and ivf.quantizer.ntotal == 40
    ivf.nprobe = 40
    _, labels = swapped.search(queries, 10)
    np.testing.assert_array_equal(labels, np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10] * 5)
    plain = faiss.IndexFlatIP(16)
    assert faiss_loaded.flat_coarse_quantizer(plain) is plain


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("ivf_pq", {"pq_m": 7}, "pq_m=7 must divide the dimension 384"),
        ("ivf_flat", {"nlist": 5000}, "nlist=5000 needs at least that many training vectors"),
        ("ivf_pq", {"opq": True}, "opq needs at least 9984 training vectors"),
        ("ivf_flat", {"nprobe": 0}, "nprobe must be at least 1, got 0"),
        ("flat", {"metric": "dot"}, "metric must be one of 'ip', 'cos', 'l2', got 'dot'"),
        ("flat", {"nlsit": 3}, "unknown option(s) nlsit; known options: nlist, pq_m"),
        ("kd_tree", {}, "family must be 'auto' or one of"),
        ("ivf_flat", {"nlist": "many"}, "option nlist must be an integer, got 'many'"),
        ("ivf_pq", {"opq": "maybe"}, "option opq must be a boolean, got 'maybe'"),
        ("ivf_sq", {"sq_type": "4bit"}, "sq_type must be one of 'fp16', '8', got '4bit'"),
        ("ivf_sq", {"kmeans_iterations": 0}, "kmeans_iterations must be at least 1, got 0"),
    ],
)
def test_bad_build_options_are_refused(family: str, params: dict, message: str) -> None:
    with pytest.raises(UdfError) as raised:
        plan_index(family, 2000, 384, BuildOptions.from_settings(Settings(), params))
    assert message in str(raised.value)


def test_build_writes_a_complete_version_and_publishes_it(synthetic_catalog: Path) -> None:
    manifest = build_index(synthetic_catalog, "ivf_flat", nprobe=4)
    version_dir = synthetic_catalog / "index" / "versions" / manifest["version"]
    assert current_target(synthetic_catalog) == f"versions/{manifest['version']}"
    assert sorted(p.name for p in version_dir.iterdir()) == sorted(
        ["index.faiss", "faiss_idmap.parquet", "vectors.npy", "tuning.json", "manifest.json"]
    )
    assert json.loads((version_dir / "tuning.json").read_text()) == {}
    on_disk = json.loads((version_dir / "manifest.json").read_text())
    assert on_disk == manifest
    store = json.loads((synthetic_catalog / "store" / "CURRENT" / "store.json").read_text())
    assert manifest["store"]["fingerprint"] == store["fingerprint"]
    assert manifest["store"]["version"] == (synthetic_catalog / "store" / "CURRENT").resolve().name
    assert (manifest["family"], manifest["metric"], manifest["dimension"], manifest["ntotal"]) == (
        "ivf_flat", "ip", 384, 2000
    )
    assert manifest["search_parameters"] == "nprobe=4"
    assert set(manifest["libraries"]) == {"faiss", "numpy", "duckdb"}
    assert manifest["family_reason"] == "requested explicitly (family='ivf_flat')"


@pytest.mark.parametrize("iterations", [1, 2])
def test_kmeans_iterations_train_the_coarse_quantizer(synthetic_catalog: Path, iterations: int) -> None:
    """The built quantizer's centroids are FAISS k-means run for that many iterations, seeded by
    the seed option, on the build's seeded sample (the oracle: faiss.Kmeans, one thread, like the build's)."""
    manifest = build_index(synthetic_catalog, "ivf_flat", nlist=16, train_sample=1500, kmeans_iterations=iterations,
                           seed=iterations + 10, build_threads=1, incremental=False)
    assert manifest["build_parameters"]["kmeans_iterations"] == iterations
    index = faiss.read_index(str(synthetic_catalog / "index" / "versions" / manifest["version"] / "index.faiss"))
    centroids = faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 16)
    store = pq.read_table(synthetic_catalog / "store" / "CURRENT" / "chunks.parquet", columns=["id", "embedding"])
    vectors = np.stack(store.column("embedding").to_numpy(zero_copy_only=False))[
        np.argsort(store.column("id").to_numpy(), kind="stable")].astype(np.float32)
    sample = vectors[np.sort(np.random.default_rng(manifest["build_parameters"]["seed"]).choice(
        len(vectors), 1500, replace=False))]
    faiss.omp_set_num_threads(1)
    # IndexIVF's own clustering: spherical for inner product.
    oracle = faiss.Kmeans(384, 16, niter=iterations, spherical=True, seed=iterations + 10)
    oracle.train(sample)
    np.testing.assert_allclose(centroids, oracle.centroids, atol=1e-5)


def test_auto_build_records_why_it_chose_the_family(synthetic_catalog: Path) -> None:
    manifest = build_index(synthetic_catalog)
    assert manifest["family"] == "flat" and manifest["factory"] == "Flat"
    assert manifest["family_reason"].startswith("auto: 2000 vectors < 50000: exact Flat search")


def test_auto_measures_the_candidates_and_records_the_figures(
    synthetic_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the Flat size, auto builds each candidate on samples and picks by projected QPS, build
    and code size."""
    from udfs import faiss_auto, faiss_build

    # Small enough that the 2000-vector store is measured, on small samples: the test stays quick.
    monkeypatch.setattr(faiss_build, "FLAT_MAX_VECTORS", 1000)
    monkeypatch.setattr(faiss_auto, "SAMPLE_VECTORS", 1200)
    monkeypatch.setattr(faiss_auto, "QUERY_VECTORS", 100)
    manifest = build_index(synthetic_catalog)
    measurement = manifest["auto_measurement"]
    assert measurement["chosen"] == manifest["family"]
    assert {entry["family"] for entry in measurement["candidates"]} == set(faiss_build.AUTO_CANDIDATES)
    assert measurement["samples"] == [300, 1200] and measurement["queries"] == 100
    for entry in measurement["candidates"]:
        assert entry["projected_qps"] > 0 and entry["projected_build_s"] >= 0
        assert [point["sample"] for point in entry["samples"]] == [300, 1200]
        assert all(0 <= point["recall"] <= 1 for point in entry["samples"])
    # Build first: among the families meeting the target, those built on the larger sample within
    # BUILD_TIE of the cheapest; of those, projected QPS within QPS_TIE of the best, then the fewest
    # code bytes per scanned vector, then the highest projected QPS.
    meeting = [entry for entry in measurement["candidates"] if entry["meets_target"]] or measurement["candidates"]
    cheapest = min(entry["samples"][-1]["build_s"] for entry in meeting)
    limit = faiss_auto.BUILD_TIE * max(cheapest, faiss_auto.BUILD_FLOOR_S)
    cheap = [entry for entry in meeting if entry["samples"][-1]["build_s"] <= limit]
    best = max(entry["projected_qps"] for entry in cheap)
    close = [entry for entry in cheap if entry["projected_qps"] >= (1 - faiss_auto.QPS_TIE) * best]
    chosen = next(entry for entry in meeting if entry["family"] == measurement["chosen"])
    assert chosen in close
    fewest = min(entry["samples"][-1]["code_bytes"] for entry in close)
    assert chosen["samples"][-1]["code_bytes"] == fewest
    assert chosen["projected_qps"] == max(entry["projected_qps"] for entry in close
                                          if entry["samples"][-1]["code_bytes"] == fewest)
    # Code bytes by hand: float32 storage for IVF-Flat and HNSW's, float16 for IVF-SQ (SQfp16).
    by_family = {entry["family"]: entry["samples"][-1]["code_bytes"] for entry in measurement["candidates"]}
    assert by_family == {"ivf_flat": 4 * 384, "ivf_sq": 2 * 384, "hnsw": 4 * 384}
    assert manifest["family_reason"].startswith("auto: measured on samples of 300 and 1200 vectors")
    # An explicit family measures nothing.
    assert build_index(synthetic_catalog, "flat")["auto_measurement"] is None


def _figures(family: str, build_s: float, qps: float, code_bytes: int, meets: bool = True) -> dict[str, object]:
    return {"family": family, "meets_target": meets, "projected_qps": qps,
            "samples": [{"build_s": build_s / 4, "code_bytes": code_bytes},
                        {"build_s": build_s, "code_bytes": code_bytes}]}


@pytest.mark.parametrize(
    ("figures", "chosen"),
    [
        # The busy 1M run: HNSW projected over twice IVF-SQ's QPS, its sample build 17x longer.
        ([_figures("ivf_flat", 0.15, 6_000, 1536), _figures("ivf_sq", 0.17, 7_500, 768),
          _figures("hnsw", 2.6, 16_000, 1536)], "ivf_sq"),
        # IVF-Flat projects 40% above IVF-SQ (a tie) and builds as cheaply: fewer code bytes win.
        ([_figures("ivf_flat", 0.15, 10_500, 1536), _figures("ivf_sq", 0.17, 7_500, 768)], "ivf_sq"),
        # Beyond the tie the faster cheap build wins.
        ([_figures("ivf_flat", 0.15, 16_000, 1536), _figures("ivf_sq", 0.17, 7_500, 768)], "ivf_flat"),
        # A build over BUILD_TIE of the cheapest is out, however fast ...
        ([_figures("ivf_flat", 0.6, 6_000, 1536), _figures("ivf_sq", 1.3, 60_000, 768)], "ivf_flat"),
        # ... but sample builds under BUILD_FLOOR_S are all cheap (the busy 1M run: IVF-SQ 0.38 s).
        ([_figures("ivf_flat", 0.13, 7_500, 1536), _figures("ivf_sq", 0.38, 8_200, 768),
          _figures("hnsw", 2.65, 8_900, 1536)], "ivf_sq"),
        # Only HNSW reaches the recall target: it is built, whatever it costs.
        ([_figures("ivf_flat", 0.15, 6_000, 1536, meets=False), _figures("ivf_sq", 0.17, 7_500, 768, meets=False),
          _figures("hnsw", 2.6, 3_000, 1536)], "hnsw"),
        # None does: all compete.
        ([_figures("ivf_flat", 0.15, 6_000, 1536, meets=False), _figures("hnsw", 2.6, 3_000, 1536, meets=False)],
         "ivf_flat"),
    ],
)
def test_auto_choice_puts_the_build_first(figures: list[dict[str, object]], chosen: str) -> None:
    from udfs import faiss_auto

    assert faiss_auto.choose(figures)["family"] == chosen


def test_auto_projection_keeps_each_family_within_its_scaling() -> None:
    from udfs.faiss_auto import _power_law

    # A sample whose QPS rose with size (nlist matching the data's clusters) still loses QPS as sqrt(n).
    assert _power_law(1 / 100.0, 1 / 200.0, 1000, 4000, 16000, (0.5, 1.0)) == pytest.approx(1 / 100.0)
    # A family slowing faster than linearly is held to linear.
    assert _power_law(1.0, 100.0, 1000, 4000, 16000, (0.5, 1.0)) == pytest.approx(400.0)


def test_ids_round_trip_through_idmap2_and_sidecars(synthetic_catalog: Path, synthetic_table) -> None:
    build_index(synthetic_catalog, "flat")
    loaded = faiss_current.load_current(context_for(synthetic_catalog))
    store_ids = synthetic_table.column("id").to_numpy()
    store_vectors = np.stack(synthetic_table.column("embedding").to_numpy(zero_copy_only=False))
    idmap = pq.read_table(loaded.directory / "faiss_idmap.parquet").to_pydict()
    assert idmap["faiss_row"] == list(range(2000))
    assert np.array_equal(idmap["external_id"], np.sort(store_ids))
    assert np.array_equal(loaded.ids, np.sort(store_ids))
    # IndexIDMap2 reconstructs by chunk id; vectors.npy row i belongs to faiss row i.
    for row in (0, 17, 1999):
        chunk_id = store_ids[row]
        assert np.array_equal(loaded.index.reconstruct(int(chunk_id)), store_vectors[row])
        rows, found = loaded.rows_of(np.array([chunk_id]))
        assert found[0] and np.array_equal(loaded.vectors[rows[0]], store_vectors[row])
    rows, found = loaded.rows_of(np.array([0, 2**62 + 5]))
    assert not found.any()


def test_failed_index_write_leaves_current_and_no_partial_version(
    synthetic_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_index(synthetic_catalog, "flat")

    def disk_full(index: faiss.Index, path: str) -> None:
        Path(path).write_bytes(b"half an index")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_index(synthetic_catalog, "ivf_flat")
    assert current_target(synthetic_catalog) == f"versions/{first['version']}"
    assert version_names(synthetic_catalog) == [first["version"]]


def test_failure_between_rename_and_flip_leaves_current(
    synthetic_catalog: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = build_index(synthetic_catalog, "flat")

    def crash(versions: VersionedDir, version: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(VersionedDir, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(synthetic_catalog, "ivf_flat")
    assert current_target(synthetic_catalog) == f"versions/{first['version']}"
    built = [v for v in version_names(synthetic_catalog) if v != first["version"]]
    assert len(built) == 1 and "is complete but was not published" in caplog.text
    monkeypatch.undo()
    # The complete version can be published afterwards.
    assert faiss_versions.publish(synthetic_catalog, built[0]) == {"current": built[0], "previous": first["version"]}


def test_rollback_and_gc(synthetic_catalog: Path) -> None:
    versions = [build_index(synthetic_catalog, "flat")["version"] for _ in range(3)]
    assert faiss_versions.list_versions(synthetic_catalog)["current"] == versions[2]
    assert faiss_versions.rollback(synthetic_catalog) == {"current": versions[1], "previous": versions[2]}
    assert faiss_versions.rollback(synthetic_catalog)["current"] == versions[0]
    with pytest.raises(UdfError, match="no index version older than"):
        faiss_versions.rollback(synthetic_catalog)
    assert faiss_versions.rollback(synthetic_catalog, to=versions[1])["current"] == versions[1]
    with pytest.raises(UdfError, match="is not a complete index version in .*; available: "):
        faiss_versions.publish(synthetic_catalog, "19990101T000000000000Z-000000")

    # keep=1 keeps the newest version and CURRENT, which is older.
    collected = faiss_versions.gc(synthetic_catalog, keep=1)
    assert collected["removed"] == [versions[0]]
    assert version_names(synthetic_catalog) == [versions[1], versions[2]]
    assert current_target(synthetic_catalog) == f"versions/{versions[1]}"
    listing = faiss_versions.list_versions(synthetic_catalog)["versions"]
    assert [(row["version"], row["current"]) for row in listing] == [(versions[1], True), (versions[2], False)]
    with pytest.raises(UdfError, match="keep must be at least 1"):
        faiss_versions.gc(synthetic_catalog, keep=0)


def test_reader_keeps_working_while_versions_are_published_and_collected(synthetic_catalog: Path) -> None:
    build_index(synthetic_catalog, "flat")
    context = context_for(synthetic_catalog)
    reader = faiss_current.load_current(context)
    query = np.asarray(reader.vectors[:3])
    before_scores, before_ids = reader.search(query, 5)

    newer = build_index(synthetic_catalog, "hnsw")
    faiss_versions.gc(synthetic_catalog, keep=1)
    assert not reader.directory.exists()
    after_scores, after_ids = reader.search(query, 5)
    assert np.array_equal(before_ids, after_ids) and np.allclose(before_scores, after_scores)
    assert np.array_equal(reader.vectors[reader.rows_of(before_ids[:, 0])[0]], query)
    # The connection's next call notices CURRENT moved and loads the new version.
    assert faiss_current.load_current(context).version == newer["version"]


def test_load_is_cached_until_current_changes(synthetic_catalog: Path) -> None:
    first = build_index(synthetic_catalog, "flat")
    context = context_for(synthetic_catalog)
    loaded = faiss_current.load_current(context)
    assert faiss_current.load_current(context) is loaded
    second = build_index(synthetic_catalog, "flat")
    assert faiss_current.load_current(context).version == second["version"]
    faiss_versions.rollback(synthetic_catalog)
    assert faiss_current.load_current(context).version == first["version"]


def test_no_published_index_says_how_to_build_one(synthetic_catalog: Path) -> None:
    with pytest.raises(UdfError) as raised:
        faiss_current.load_current(context_for(synthetic_catalog))
    message = str(raised.value)
    assert f"python bootstrap.py build --catalog {synthetic_catalog}" in message
    assert "SELECT * FROM faiss_build()" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_index_file_names_the_file_and_keeps_current(synthetic_catalog: Path, damage: str) -> None:
    manifest = build_index(synthetic_catalog, "ivf_flat")
    index_file = synthetic_catalog / "index" / "versions" / manifest["version"] / "index.faiss"
    data = index_file.read_bytes()
    index_file.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an index" * 100)
    with pytest.raises(UdfError) as raised:
        faiss_current.load_current(context_for(synthetic_catalog))
    message = str(raised.value)
    assert str(index_file) in message and "corrupt or truncated" in message
    assert "python bootstrap.py rollback" in message
    assert current_target(synthetic_catalog) == f"versions/{manifest['version']}"


def test_changed_store_warns_with_both_fingerprints(
    synthetic_catalog: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = build_index(synthetic_catalog, "flat")
    store_json = synthetic_catalog / "store" / "CURRENT" / "store.json"
    store = json.loads(store_json.read_text())
    store_json.write_text(json.dumps({**store, "fingerprint": "0123456789abcdef"}))
    with caplog.at_level(logging.WARNING, logger="codeintel.faiss"):
        faiss_current.load_current(context_for(synthetic_catalog))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert manifest["store"]["fingerprint"] in warnings[0] and "0123456789abcdef" in warnings[0]


def test_tuning_json_parameters_are_applied_at_load(synthetic_catalog: Path) -> None:
    manifest = build_index(synthetic_catalog, "ivf_pq_refine", nprobe=4)
    tuning = synthetic_catalog / "index" / "versions" / manifest["version"] / "tuning.json"
    context = context_for(synthetic_catalog)
    assert faiss_current.load_current(context).parameters() == "nprobe=4,refine_k_factor=4"
    tuning.write_text(json.dumps({"parameters": "nprobe=9,refine_k_factor=2"}))
    context.resources.clear()
    assert faiss_current.load_current(context).parameters() == "nprobe=9,refine_k_factor=2"


def test_files_of_older_builds_naming_k_factor_rf_are_read_in_todays_names(synthetic_catalog: Path) -> None:
    """Catalogs built before the rename hold FAISS's k_factor_rf in manifest.json and tuning.json."""
    manifest = build_index(synthetic_catalog, "ivf_pq_refine", nprobe=4)
    directory = synthetic_catalog / "index" / "versions" / manifest["version"]
    old_manifest = {**manifest, "search_parameters": "nprobe=4,k_factor_rf=4"}
    (directory / "manifest.json").write_text(json.dumps(old_manifest))
    (directory / "tuning.json").write_text(json.dumps({
        "parameters": "nprobe=9,k_factor_rf=2", "parameter_space": {"nprobe": [1, 9], "k_factor_rf": [1, 2]},
        "grid": [{"parameters": "nprobe=9,k_factor_rf=2"}],
    }))
    loaded = faiss_current.load_current(context_for(synthetic_catalog))
    assert loaded.manifest["search_parameters"] == "nprobe=4,refine_k_factor=4"
    assert loaded.parameters() == "nprobe=9,refine_k_factor=2"
    profile = faiss_tuning.read_profile(directory / "tuning.json")
    assert set(profile["parameter_space"]) == {"nprobe", "refine_k_factor"}
    assert profile["grid"][0]["parameters"] == "nprobe=9,refine_k_factor=2"
    # A person typing FAISS's name is told the one name in use.
    with pytest.raises(UdfError, match="'k_factor_rf' is FAISS's name for refine_k_factor; write refine_k_factor=8"):
        loaded.set_parameters("k_factor_rf=8", "faiss_set_params")


def test_build_options_default_to_the_settings_and_are_checked_like_them() -> None:
    assert BuildOptions() == BuildOptions.from_settings(Settings())
    assert BuildOptions.from_settings(Settings.resolve({"faiss_nprobe": 7}), {"nlist": "32"}) == BuildOptions(
        nprobe=7, nlist=32
    )
    with pytest.raises(UdfError, match="^faiss_build: refine_k_factor must be at least 1, got 0.5$"):
        BuildOptions.from_settings(Settings(), {"refine_k_factor": 0.5})


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="this machine has a GPU")
def test_use_gpu_without_gpu_stays_on_cpu_with_one_warning(
    synthetic_catalog: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_index(synthetic_catalog, "flat")
    with caplog.at_level(logging.WARNING, logger="codeintel.faiss"):
        loaded = faiss_current.load_current(context_for(synthetic_catalog, faiss_use_gpu=True))
        loaded.search(np.asarray(loaded.vectors[:2]), 3)
    assert loaded.device == "cpu" and loaded.max_k is None
    assert [r.getMessage() for r in caplog.records] == ["faiss: use_gpu is on but faiss sees no GPU; searching on CPU"]


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU")
@pytest.mark.parametrize("mode", ["replicate", "shard"])
def test_gpu_clone_matches_cpu_and_enforces_limits(
    synthetic_catalog: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    build_index(synthetic_catalog, "ivf_flat", nprobe=16)
    cpu = faiss_current.load_current(context_for(synthetic_catalog))
    gpu = faiss_current.load_current(context_for(synthetic_catalog, faiss_use_gpu=True, faiss_gpu_mode=mode))
    assert gpu.device.startswith(f"gpu:{mode}:") and gpu.max_k == faiss_loaded.GPU_MAX_K
    assert gpu.parameters() == "nprobe=16"
    queries = np.asarray(cpu.vectors[:20])
    cpu_scores, cpu_ids = cpu.search(queries, 10)
    gpu_scores, gpu_ids = gpu.search(queries, 10)
    assert np.mean(cpu_ids == gpu_ids) > 0.95 and np.allclose(cpu_scores, gpu_scores, atol=1e-4)
    with pytest.raises(UdfError, match="exceeds the GPU limit of 2048"):
        gpu.set_parameters("nprobe=4096", "faiss_set_params")
    build_index(synthetic_catalog, "hnsw")
    with caplog.at_level(logging.WARNING, logger="codeintel.faiss"):
        hnsw = faiss_current.load_current(context_for(synthetic_catalog, faiss_use_gpu=True))
    assert hnsw.device == "cpu" and "cannot run on GPU" in caplog.text

"""Incremental ingest and index updates (issue 9): re-embed and re-index only what changed.

Oracles: a fresh ingest of the same repository into a new catalog (byte-identical chunks and
embeddings), and, for index updates, a clone of the parent index emptied and filled with the
store's vectors (same trained quantizers, so the same search results), numpy brute force for
the exact families, and the store's own ids for the id map and ``vectors.npy``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import layout, store
from tests.conftest import synthetic_chunks
from tests.test_ingest import SAMPLE_FILES, make_repo
from tests.test_lifecycle_safety import children, kill_hard, start_child  # noqa: F401  (fixture)
from udfs import faiss_build, faiss_versions, store_schema
from udfs import versioned_dir as staging_dirs
from udfs.registry import UdfError

#: An hour ago: older than any listing by far more than the 2 s mtime-resolution margin.
SETTLED = time.time() - 3600

MORE_FILES = {
    f"lib/mod_{i}.py": "".join(
        f"def handler_{i}_{j}(request):\n    '''Handle request {j}.'''\n    return request.value * {j}\n\n\n"
        for j in range(12)
    )
    for i in range(6)
}


def settle(repo: Path) -> None:
    """Give every file an mtime well before the next listing, as files long unchanged have."""
    for path in repo.rglob("*"):
        if path.is_file():
            os.utime(path, (SETTLED, SETTLED))


def chunk_table(catalog: Path) -> pa.Table:
    """The store's chunks as the chunks view has them (every part but the deleted ids), in file order."""
    table = store_schema.read_live_chunks(catalog / "store" / "CURRENT", store_schema.column_names())
    return table.sort_by([("uri", "ascending"), ("start_byte", "ascending")])


def assert_same_store(catalog: Path, oracle: Path) -> None:
    """Every column equal; embeddings within float32 rounding: the embedder pools a batch at a time,
    and the last bits of a sum depend on what else is in the batch (3e-8 seen), so a fresh ingest
    is not bit-identical to itself under another batching.  Reused vectors are: see embeddings_by_id."""
    mine, theirs = chunk_table(catalog), chunk_table(oracle)
    assert mine.schema.equals(theirs.schema)
    assert mine.drop_columns(["embedding"]).equals(theirs.drop_columns(["embedding"]))
    np.testing.assert_allclose(mine["embedding"].combine_chunks().values.to_numpy(),
                               theirs["embedding"].combine_chunks().values.to_numpy(), rtol=0, atol=1e-6)


def embeddings_by_id(table: pa.Table) -> dict[int, bytes]:
    vectors = table["embedding"].combine_chunks().values.to_numpy()
    width = len(vectors) // max(1, len(table))
    return {i: vectors[row * width:(row + 1) * width].tobytes() for row, i in enumerate(table["id"].to_pylist())}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    made = make_repo(tmp_path / "repo", {**SAMPLE_FILES, **MORE_FILES})
    settle(made)
    return made


# --------------------------------------------------------------------------- ingest


def test_reingest_reuses_embeddings_bit_identically_and_embeds_only_new_ids(repo: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    before = embeddings_by_id(chunk_table(catalog))
    # One function body changes, one file is added, one deleted.
    changed = MORE_FILES["lib/mod_0.py"].replace("request.value * 3\n", "request.value * 3 + 1\n")
    (repo / "lib/mod_0.py").write_text(changed)
    (repo / "lib/new.py").write_text("def brand_new():\n    return 42\n")
    (repo / "lib/mod_5.py").unlink()
    second = bootstrap.ingest(repo, catalog)
    assert not second.unchanged and second.store != first.store

    fresh = bootstrap.ingest(repo, tmp_path / "fresh")  # the oracle: everything chunked and embedded anew
    assert_same_store(catalog, tmp_path / "fresh")
    assert second.manifest["fingerprint"] == fresh.manifest["fingerprint"]
    after = embeddings_by_id(chunk_table(catalog))
    kept = set(before) & set(after)
    assert kept and all(after[i] == before[i] for i in kept), "reused embeddings are the stored bytes"
    new_ids = set(after) - set(before)
    # Only the changed chunk of mod_0.py and brand_new() are new; the rest of mod_0.py is reused by id.
    assert second.reuse["chunks_embedded"] == len(new_ids) == 2
    assert second.reuse["embeddings_reused"] == sum(1 for u in chunk_table(catalog)["uri"].to_pylist()
                                                   if u == "lib/mod_0.py") - 1
    unchanged_files = {"app/config.py", "app/util/strings.py", "web/main.ts", "README.md",
                       *(f"lib/mod_{i}.py" for i in range(1, 5))}
    assert second.reuse["files_unread"] >= len(unchanged_files)
    assert second.reuse["chunks_from_unchanged_files"] == sum(
        1 for u in chunk_table(catalog)["uri"].to_pylist() if u in unchanged_files)
    assert not (set(chunk_table(catalog)["uri"].to_pylist()) & {"lib/mod_5.py"})


def test_a_file_unchanged_by_size_and_mtime_is_not_read(repo: Path, tmp_path: Path) -> None:
    """Git's rule: same size and mtime means unchanged; bytes swapped behind an old mtime stay unseen."""
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    original = chunk_table(catalog)
    path = repo / "lib/mod_1.py"
    path.write_text(path.read_text().replace("handler_1_0", "handler_X_0"))  # same size
    os.utime(path, (SETTLED, SETTLED))
    result = bootstrap.ingest(repo, catalog)
    assert result.unchanged, "the swapped file was not read, so nothing changed"
    assert chunk_table(catalog).equals(original)
    # Touching it (a new mtime) makes the next ingest read, hash and re-chunk it.
    os.utime(path, None)
    touched = bootstrap.ingest(repo, catalog)
    assert not touched.unchanged and touched.reuse["chunks_embedded"] == 1
    assert "handler_X_0" in "".join(chunk_table(catalog)["content"].to_pylist())


def test_a_file_listed_within_the_mtime_resolution_is_hashed(tmp_path: Path) -> None:
    """A file written just before the listing may change again within its mtime's second: it is hashed."""
    repo = make_repo(tmp_path / "repo", MORE_FILES)  # mtimes: now, so the first listing is racy
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    path = repo / "lib/mod_2.py"
    stamp = path.stat().st_mtime
    path.write_text(path.read_text().replace("handler_2_0", "handler_Y_0"))  # same size, mtime put back
    os.utime(path, (stamp, stamp))
    result = bootstrap.ingest(repo, catalog)
    assert not result.unchanged
    assert "handler_Y_0" in "".join(chunk_table(catalog)["content"].to_pylist())
    assert result.reuse["files_reused"] == len(MORE_FILES) - 1  # the others: same hash, not re-chunked
    assert result.reuse["files_unread"] == 0


def test_another_chunk_budget_rechunks_every_file_but_reuses_embeddings(repo: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    result = bootstrap.ingest(repo, catalog, max_chunk_chars=300)
    bootstrap.ingest(repo, tmp_path / "fresh", max_chunk_chars=300)
    assert result.reuse["files_reused"] == 0
    assert_same_store(catalog, tmp_path / "fresh")
    assert store.read_store_manifest(result.store)["chunker"].startswith("cast(max_chunk_chars=300,")


def test_another_embedder_reuses_nothing(repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    chunker = first.manifest["chunker"]
    same = store.StoreEmbedder(first.manifest["embedder"], first.manifest["embedder_sha256"], 256)
    assert store.reusable_store(first.store, same, chunker) == (first.store, True)
    other = store.StoreEmbedder(first.manifest["embedder"], "0" * 64, 256)  # same label, other model bytes
    with caplog.at_level("INFO", logger="codeintel"):
        assert store.reusable_store(first.store, other, chunker) == (None, False)
    assert "embeds every chunk again" in caplog.text
    imported = store.StoreEmbedder("imported:x.parquet", None, 256)
    assert store.reusable_store(first.store, imported, chunker) == (None, False)


# --------------------------------------------------------------------------- store parts


def store_ids_through_view(catalog: Path) -> list[int]:
    """The chunk ids a stock DuckDB client reads from the persisted chunks view."""
    with duckdb.connect(str(catalog / "catalog.duckdb"), read_only=True) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM chunks ORDER BY id").fetchall()]


def test_a_small_change_writes_one_new_part_and_shares_the_rest(repo: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    old_ids = set(chunk_table(catalog)["id"].to_pylist())
    (repo / "lib/mod_0.py").write_text(MORE_FILES["lib/mod_0.py"].replace("value * 3\n", "value * 3 + 1\n"))
    second = bootstrap.ingest(repo, catalog)
    assert second.write.startswith("incremental write")

    parts = store_schema.chunk_parts(second.store)
    assert [part.name for part in parts] == ["chunks-0001.parquet", "chunks.parquet"]
    # The parent's part is the same file (a hard link), not a copy; only the new chunk was written.
    assert parts[1].stat().st_ino == (first.store / "chunks.parquet").stat().st_ino
    added = pq.read_table(parts[0])
    new_ids = set(chunk_table(catalog)["id"].to_pylist())
    assert set(added["id"].to_pylist()) == new_ids - old_ids and added.num_rows == 1
    assert set(store_schema.deleted_ids(second.store).to_pylist()) == old_ids - new_ids
    assert second.manifest["chunk_count"] == len(new_ids)

    fresh = bootstrap.ingest(repo, tmp_path / "fresh")  # oracle: one part, written from scratch
    assert [part.name for part in store_schema.chunk_parts(fresh.store)] == ["chunks.parquet"]
    assert_same_store(catalog, tmp_path / "fresh")
    assert second.manifest["fingerprint"] == fresh.manifest["fingerprint"]
    assert store_ids_through_view(catalog) == store_ids_through_view(tmp_path / "fresh") == sorted(new_ids)


def test_parts_and_hidden_rows_are_compacted_into_one_part(repo: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    monkeypatch.setattr(store, "STORE_MAX_PARTS", 2)
    edits = [("value * 3\n", "value * 3 + 1\n"), ("value * 4\n", "value * 4 + 1\n")]
    text = MORE_FILES["lib/mod_0.py"]
    writes = []
    for old, new in edits:
        text = text.replace(old, new)
        (repo / "lib/mod_0.py").write_text(text)
        writes.append(bootstrap.ingest(repo, catalog).write)
    assert writes[0].startswith("incremental write") and writes[1].startswith("full write (compaction): 2 parts")
    compacted = layout.current_store(catalog)
    assert [part.name for part in store_schema.chunk_parts(compacted)] == ["chunks.parquet"]
    assert len(store_schema.deleted_ids(compacted)) == 0
    bootstrap.ingest(repo, tmp_path / "fresh")
    assert_same_store(catalog, tmp_path / "fresh")

    # Deleting files hides their rows: past 5% of the rows read, the write compacts too.
    monkeypatch.setattr(store, "STORE_MAX_PARTS", 16)
    monkeypatch.setattr(store, "STORE_MIN_DELETED_TO_COMPACT", 0)  # this store is tiny
    total = len(chunk_table(catalog))
    doomed = [uri for uri in MORE_FILES if uri != "lib/mod_0.py"][:3]
    for uri in doomed:
        (repo / uri).unlink()
    result = bootstrap.ingest(repo, catalog)
    assert result.write.startswith("full write (compaction)") and "hidden rows" in result.write
    assert result.reuse["chunks_deleted"] > store.STORE_MAX_DELETED_FRACTION * total
    assert not set(chunk_table(catalog)["uri"].to_pylist()) & set(doomed)
    assert store_ids_through_view(catalog) == sorted(chunk_table(catalog)["id"].to_pylist())


def test_a_known_chunk_whose_lines_moved_is_written_again(tmp_path: Path) -> None:
    """An edit can keep a later chunk's bytes (so its id) but move its lines: its stored row cannot stand."""
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(12))
    repo = make_repo(tmp_path / "repo", {"m.py": "a = 1\nb = 2\n\n\n" + body})
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog, max_chunk_chars=30)
    (repo / "m.py").write_text("a = 1;b = 2\n\n\n" + body)  # same length, one line fewer
    result = bootstrap.ingest(repo, catalog, max_chunk_chars=30)
    assert result.reuse["chunks_moved"] == 11 and result.reuse["chunks_embedded"] == 1
    assert result.write.startswith("full write: 11 unchanged chunks moved lines")
    bootstrap.ingest(repo, tmp_path / "fresh", max_chunk_chars=30)
    assert_same_store(catalog, tmp_path / "fresh")


def test_a_store_written_before_parts_is_upgraded_by_the_next_writing_session(repo: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    (first.store / store_schema.DELETED_IDS_FILE).unlink()  # as an older version of this code left it
    with bootstrap.open_catalog(catalog):
        pass
    assert (first.store / store_schema.DELETED_IDS_FILE).is_file()
    assert store_ids_through_view(catalog) == sorted(chunk_table(catalog)["id"].to_pylist())
    (repo / "lib/mod_0.py").write_text(MORE_FILES["lib/mod_0.py"].replace("value * 3\n", "value * 3 + 1\n"))
    assert bootstrap.ingest(repo, catalog).write.startswith("incremental write")


# --------------------------------------------------------------------------- index updates

CHANGED_ROWS = 60


def changed_store(catalog: Path, source: pa.Table, folder: Path, *, removed: int = CHANGED_ROWS,
                  added: int = CHANGED_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Publish ``source`` less its first ``removed`` rows plus ``added`` new chunks; return (removed, added) ids."""
    extra = synthetic_chunks(n=added, dim=source.schema.field("embedding").type.list_size, seed=99)
    extra = extra.set_column(0, "id", pa.array(np.arange(1, added + 1, dtype=np.int64) * 7919, pa.int64()))
    table = pa.concat_tables([source.slice(removed), extra])
    path = folder / f"changed-{removed}-{added}.parquet"
    pq.write_table(table, path)
    bootstrap.import_chunks(path, catalog)
    return source["id"].to_numpy()[:removed], extra["id"].to_numpy()


def refilled_parent(catalog: Path, parent: str, snapshot: faiss_build.StoreSnapshot, metric: str) -> faiss.Index:
    """The oracle: the parent's trained index emptied and filled with the store's vectors in id order."""
    index = faiss.read_index(str(faiss_versions.index_versions(catalog).path(parent) / faiss_versions.INDEX_FILE))
    index.reset()
    vectors = snapshot.vectors.copy()
    if metric == "cos":
        faiss.normalize_L2(vectors)
    index.add_with_ids(vectors, snapshot.ids)
    return index


def audit_version(catalog: Path, snapshot: faiss_build.StoreSnapshot) -> faiss.Index:
    """The files of index/CURRENT agree with the store: id map, vectors, index ids; no orphan ids."""
    directory = catalog / "index" / "CURRENT"
    idmap = pq.read_table(directory / faiss_versions.IDMAP_FILE)
    assert np.array_equal(idmap["faiss_row"].to_numpy(), np.arange(len(snapshot.ids)))
    assert np.array_equal(idmap["external_id"].to_numpy(), snapshot.ids)
    assert np.load(directory / faiss_versions.VECTORS_FILE).tobytes() == snapshot.vectors.tobytes()
    index = faiss.read_index(str(directory / faiss_versions.INDEX_FILE))
    assert np.array_equal(faiss.vector_to_array(index.id_map), snapshot.ids)
    connection = bootstrap.connect(catalog, read_only=True)
    try:
        assert connection.execute("SELECT count(*) FROM v_faiss_orphan_ids").fetchone()[0] == 0
    finally:
        connection.close()
    return index


@pytest.mark.parametrize(("family", "options"), [
    ("ivf_flat", {"nlist": 16}),
    ("ivf_sq", {"nlist": 16, "metric": "cos"}),
    ("ivf_pq", {"nlist": 16, "pq_m": 16, "pq_nbits": 6}),
    ("ivf_pq_refine", {"nlist": 16, "pq_m": 16, "pq_nbits": 6}),
])
def test_update_equals_the_parent_refilled_and_drops_deleted_ids(
        synthetic_catalog: Path, synthetic_table: pa.Table, tmp_path: Path, family: str, options: dict) -> None:
    parent = bootstrap.build_index(synthetic_catalog, family, options)
    assert parent["incremental"] == "false" and json.loads(parent["drift"])["fraction"] == 0
    removed, added = changed_store(synthetic_catalog, synthetic_table, tmp_path)
    manifest = faiss_build.build_index(synthetic_catalog, family, **options)
    assert manifest["incremental"] is True and manifest["parent"] == parent["version"]
    assert manifest["factory"] == parent["factory"]
    assert manifest["drift"]["added"] == manifest["drift"]["removed"] == CHANGED_ROWS
    assert manifest["drift"]["since_full_build"]["version"] == parent["version"]
    assert manifest["drift"]["fraction"] == pytest.approx(2 * CHANGED_ROWS / 2000)
    assert faiss_versions.current_version(synthetic_catalog) == manifest["version"]

    snapshot = faiss_build.read_store(synthetic_catalog)
    updated = audit_version(synthetic_catalog, snapshot)
    queries = snapshot.vectors[::40].copy()
    if options.get("metric") == "cos":
        faiss.normalize_L2(queries)
    oracle = refilled_parent(synthetic_catalog, parent["version"], snapshot, manifest["metric"])
    for index in (updated, oracle):
        faiss.extract_index_ivf(index).nprobe = 16  # every list: results independent of list order
    distances, labels = updated.search(queries, 10)
    expected_distances, expected_labels = oracle.search(queries, 10)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5, atol=1e-5)
    assert [set(row) for row in labels] == [set(row) for row in expected_labels]
    if family == "ivf_flat":  # exact with every list probed: numpy brute force over the store is the oracle
        scores = queries @ snapshot.vectors.T
        exact = -np.sort(-scores, axis=1)[:, :10]  # scores, not ids: near-ties may order either way
        np.testing.assert_allclose(distances, exact, rtol=0, atol=1e-5)
        rows = np.searchsorted(snapshot.ids, labels)
        np.testing.assert_allclose(np.take_along_axis(scores, rows, axis=1), distances, rtol=0, atol=1e-5)
    # Deleted chunks' ids leave the index; added ones are found (each is its own nearest neighbour).
    assert not np.isin(removed, faiss.vector_to_array(updated.id_map)).any()
    assert not np.isin(removed, updated.search(snapshot.vectors, 10)[1]).any()
    found = updated.search(snapshot.vectors[np.isin(snapshot.ids, added)], 1)[1][:, 0]
    assert np.mean(found == np.sort(added)) >= (1.0 if family in ("ivf_flat", "ivf_sq") else 0.5)


def test_drift_over_the_threshold_rebuilds_and_says_why(synthetic_catalog: Path, synthetic_table: pa.Table,
                                                        tmp_path: Path) -> None:
    first = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    second = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, max_drift=0.1)
    assert second["incremental"] is True  # 0.06 of the first build's vectors
    # 180 more removed: (60 + 240) / 2000 = 0.15 since the first build.
    changed_store(synthetic_catalog, synthetic_table, tmp_path, removed=4 * CHANGED_ROWS)
    third = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, max_drift=0.1)
    assert third["incremental"] is False and third["parent"] == second["version"]
    assert third["incremental_reason"].startswith("full build: drift 0.1500 > max_drift 0.1")
    assert f"since the full build {first['version']}" in third["incremental_reason"]
    assert third["drift"]["since_full_build"] == {"version": third["version"], "ntotal": third["ntotal"],
                                                  "added": 0, "removed": 0}
    audit_version(synthetic_catalog, faiss_build.read_store(synthetic_catalog))


def test_an_update_keeps_the_training_of_the_quantizers_it_keeps(synthetic_catalog: Path,
                                                                  synthetic_table: pa.Table, tmp_path: Path) -> None:
    """kmeans_iterations says how the quantizers were trained: an update keeps them, so it keeps the
    parent's value (and a parent built before the option, which records none, stays updatable)."""
    first = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, kmeans_iterations=2)
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    second = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, kmeans_iterations=7)
    assert second["incremental"] is True and second["parent"] == first["version"]
    assert second["build_parameters"]["kmeans_iterations"] == 2
    manifest_path = synthetic_catalog / "index" / "versions" / second["version"] / "manifest.json"
    older = json.loads(manifest_path.read_text())
    del older["build_parameters"]["kmeans_iterations"]
    manifest_path.write_text(json.dumps(older))
    changed_store(synthetic_catalog, synthetic_table, tmp_path, removed=2 * CHANGED_ROWS)
    third = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)
    assert third["incremental"] is True and "kmeans_iterations" not in third["build_parameters"]
    full = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, incremental=False)
    assert full["build_parameters"]["kmeans_iterations"] == 5  # the setting's default


def test_families_and_changes_that_cannot_update_rebuild(synthetic_catalog: Path, synthetic_table: pa.Table,
                                                         tmp_path: Path) -> None:
    faiss_build.build_index(synthetic_catalog, "hnsw", hnsw_m=8, ef_construction=20)
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    hnsw = faiss_build.build_index(synthetic_catalog, "hnsw", hnsw_m=8, ef_construction=20)
    assert hnsw["incremental"] is False and "hnsw cannot remove ids" in hnsw["incremental_reason"]
    ivf = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)
    assert "family changes from hnsw" in ivf["incremental_reason"]
    other_nlist = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=8)
    assert other_nlist["incremental"] is False and "nlist 16 -> 8" in other_nlist["incremental_reason"]
    off = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=8, incremental=False)
    assert off["incremental_reason"] == "full build: option incremental is false"

    # Same ids, other vectors (the store embedded again by another model): nothing of the parent holds.
    table = synthetic_table.set_column(
        synthetic_table.schema.get_field_index("embedding"), "embedding",
        pa.FixedSizeListArray.from_arrays(pa.array(-synthetic_table["embedding"].combine_chunks().values.to_numpy()),
                                          384))
    pq.write_table(table, tmp_path / "negated.parquet")
    bootstrap.import_chunks(tmp_path / "negated.parquet", synthetic_catalog)
    moved = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=8)
    assert moved["incremental"] is False and "kept their id but have other vectors" in moved["incremental_reason"]
    flat = faiss_build.build_index(synthetic_catalog, "flat")
    again = faiss_build.build_index(synthetic_catalog, "flat")
    assert again["incremental"] is False and again["parent"] == flat["version"]
    assert "flat trains nothing" in again["incremental_reason"]


def test_cli_build_incremental_flags(synthetic_catalog: Path) -> None:
    def build(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "bootstrap.py", "build", "--family", "ivf_flat", "--option",
                               "nlist=16", *flags,
                               "--catalog", str(synthetic_catalog)], capture_output=True, text=True,
                              cwd=layout.PROJECT_DIR)
    full = build("--no-incremental")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["incremental"] == "false"
    updated = build("--incremental")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["incremental"] == "true"
    assert json.loads(updated.stdout)["parent"] == json.loads(full.stdout)["version"]
    clash = build("--incremental", "--option", "incremental=false")
    assert clash.returncode == 2 and "contradicts --option incremental=false" in clash.stderr


def test_an_update_over_an_ingested_store_reads_only_the_new_part(repo: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Our ingest's ids hash their content, and the same embedder and chunker embed it alike: an update
    reads the added rows' part, not the store, and its vectors.npy is the parent's plus those rows."""
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    parent = faiss_build.build_index(catalog, "ivf_flat", nlist=4)
    (repo / "lib/mod_0.py").write_text(MORE_FILES["lib/mod_0.py"].replace("value * 3\n", "value * 3 + 1\n"))
    ingested = bootstrap.ingest(repo, catalog)
    assert ingested.write.startswith("incremental write")
    read = []
    original = store_schema.read_vectors
    def spy(parts: list[Path], *args: object, **kwargs: object) -> object:
        read.extend(Path(part).name for part in parts)
        return original(parts, *args, **kwargs)

    monkeypatch.setattr(store_schema, "read_vectors", spy)
    manifest = faiss_build.build_index(catalog, "ivf_flat", nlist=4)
    assert manifest["incremental"] is True and manifest["parent"] == parent["version"]
    assert manifest["drift"]["added"] == manifest["drift"]["removed"] == 1
    assert read == ["chunks-0001.parquet"]  # the embeddings of the new part, and no other
    monkeypatch.undo()
    store_rows = chunk_table(catalog).sort_by("id")  # the oracle: every live row, read whole
    expected = np.stack(store_rows["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    snapshot = faiss_build.read_store(catalog)
    assert np.array_equal(snapshot.ids, store_rows["id"].to_numpy())
    assert snapshot.vectors.tobytes() == expected.tobytes()
    audit_version(catalog, snapshot)


def test_a_killed_update_leaves_current_on_the_old_version(
        synthetic_catalog: Path, synthetic_table: pa.Table, tmp_path: Path,
        children: list[subprocess.Popen[str]]) -> None:  # noqa: F811
    old = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)["version"]
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    child, line = start_child(f"""
        import json, time
        from udfs import faiss_build
        def hang(staging, index, store, vectors, manifest):  # the update reached the point where it writes its files
            (staging / "index.faiss").write_bytes(b"x" * 4096)
            print(json.dumps([str(staging), manifest["incremental"]]), flush=True)
            time.sleep(600)
        faiss_build._write_version_files = hang
        faiss_build.build_index({str(synthetic_catalog)!r}, "ivf_flat", nlist=16)
    """)
    children.append(child)
    staging, incremental = json.loads(line)
    assert incremental is True, "the child was updating, not rebuilding"
    assert json.loads((Path(staging) / staging_dirs.OWNER_FILE).read_text())["pid"] == child.pid
    kill_hard(child)
    assert faiss_versions.current_version(synthetic_catalog) == old
    assert [v for v in faiss_versions.index_versions(synthetic_catalog).complete_versions()] == [old]
    # The next build removes the dead staging directory and updates the same parent.
    retried = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)
    assert not Path(staging).exists()
    assert retried["incremental"] is True and retried["parent"] == old
    audit_version(synthetic_catalog, faiss_build.read_store(synthetic_catalog))


def test_a_new_train_sample_retrains(synthetic_catalog: Path, synthetic_table: pa.Table, tmp_path: Path) -> None:
    first = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, train_sample=1000)
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    same = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, train_sample=1000)
    assert same["incremental"] is True and same["build_parameters"]["train_size"] == 1000
    other = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16, train_sample=1500)
    assert other["incremental"] is False and "train_size 1000 -> 1500" in other["incremental_reason"]
    assert other["build_parameters"]["train_size"] == 1500 and first["version"] != other["parent"]


def test_auto_updates_the_family_it_chose_without_measuring_again(
        synthetic_catalog: Path, synthetic_table: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=16)
    manifest_path = faiss_versions.index_versions(synthetic_catalog).path(parent["version"]) / "manifest.json"
    # As if auto had measured and chosen ivf_flat (the synthetic store is small enough for Flat).
    manifest_path.write_text(json.dumps({**parent, "family_reason": "auto: measured, ivf_flat fastest"}))
    changed_store(synthetic_catalog, synthetic_table, tmp_path)
    monkeypatch.setattr(faiss_build, "choose_family", lambda *args, **kwargs: pytest.fail("auto measured again"))
    updated = faiss_build.build_index(synthetic_catalog, "auto", nlist=16)
    assert updated["incremental"] is True and updated["family"] == "ivf_flat"
    assert updated["family_reason"].startswith("auto: kept ivf_flat")
    monkeypatch.undo()
    # Updates off: auto decides afresh (Flat at this size), a full build.
    rebuilt = faiss_build.build_index(synthetic_catalog, "auto", incremental=False)
    assert rebuilt["family"] == "flat" and rebuilt["incremental"] is False


def test_sql_build_index_takes_incremental_and_max_drift(synthetic_catalog: Path) -> None:
    from codeintel import sqlfiles

    with bootstrap.open_catalog(synthetic_catalog) as session:
        first = dict(sqlfiles.run_script(session.connection, layout.SQL_DIR / "build_index.sql",
                                         {"family": "ivf_flat", "nlist": 16}).fetchall())
        second = dict(sqlfiles.run_script(session.connection, layout.SQL_DIR / "build_index.sql",
                                          {"family": "ivf_flat", "nlist": 16, "max_drift": 0.5}).fetchall())
        third = dict(session.connection.execute(
            "SELECT * FROM faiss_build(family := 'ivf_flat', nlist := 16, incremental := false)").fetchall())
    assert first["incremental"] == "false" and second["incremental"] == "true"
    assert json.loads(second["drift"])["max_drift"] == 0.5 and second["parent"] == first["version"]
    assert third["incremental_reason"] == "full build: option incremental is false"


def test_a_store_with_a_nan_embedding_is_refused_and_current_stays(
        synthetic_catalog: Path, synthetic_table: pa.Table, tmp_path: Path) -> None:
    """The build's read of the store (DuckDB): a NaN is refused naming its chunk, and CURRENT stays."""
    old = faiss_build.build_index(synthetic_catalog, "flat")["version"]
    vectors = np.stack(synthetic_table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    vectors[5, 3] = np.nan
    bad = synthetic_table.set_column(synthetic_table.schema.get_field_index("embedding"), "embedding",
                                     pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]))
    pq.write_table(bad, tmp_path / "nan.parquet")
    bootstrap.import_chunks(tmp_path / "nan.parquet", synthetic_catalog)
    with pytest.raises(UdfError, match=rf"1 embeddings in .* contain NaN or infinity \(first chunk id "
                                       rf"{synthetic_table['id'][5].as_py()}\); re-embed the store"):
        faiss_build.build_index(synthetic_catalog, "flat")
    assert faiss_versions.current_version(synthetic_catalog) == old

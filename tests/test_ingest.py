"""Ingestion end to end: tiling, id stability, unit norms, bad input, atomic publish."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import errors, layout, sqlfiles, store
from udfs import store_schema

SAMPLE_FILES = {
    "app/__init__.py": "",
    "app/config.py": (
        '"""Configuration loading."""\n\nimport json\n\n\n'
        "def parse_config(path):\n    with open(path) as handle:\n        return json.load(handle)\n\n\n"
        "class Settings:\n    def __init__(self, values):\n        self.values = values\n\n"
        "    def get(self, key, default=None):\n        return self.values.get(key, default)\n"
    ),
    "app/util/strings.py": "def snake_case(name):\n    return name.lower().replace(' ', '_')  # naïve\n",
    "web/main.ts": "export function greet(name: string): string {\n  return `hello ${name}`;\n}\n",
    "README.md": "# Sample\n\nA tiny repository for ingestion tests.\n",
    "node_modules/dep/index.js": "module.exports = 1;\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "legacy/latin1.py": "# caf\xe9\nx = 1\n".encode("latin-1"),
    "data/blob.bin": b"\x00\x01\x02",
}


def make_repo(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def read_store(catalog: Path) -> dict[str, list]:
    table = store_schema.read_live_chunks(catalog / "store" / "CURRENT", store_schema.column_names())
    return table.sort_by([("uri", "ascending"), ("start_byte", "ascending")]).to_pydict()


def assert_tiles(repo: Path, store: dict[str, list]) -> None:
    """Chunks of every file, in order, reproduce the file's bytes exactly."""
    by_uri: dict[str, list[tuple[int, int, str]]] = {}
    for uri, start, end, content in zip(store["uri"], store["start_byte"], store["end_byte"], store["content"],
                                        strict=True):
        by_uri.setdefault(uri, []).append((start, end, content))
    for uri, pieces in by_uri.items():
        pieces.sort()
        data = (repo / uri).read_bytes()
        assert pieces[0][0] == 0 and pieces[-1][1] == len(data), uri
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False)), uri
        assert "".join(p[2] for p in pieces).encode() == data, uri


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("repo"), SAMPLE_FILES)


@pytest.fixture(scope="module")
def sample_ingest(sample_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    catalog = tmp_path_factory.mktemp("catalog")
    return catalog, bootstrap.ingest(sample_repo, catalog)


def test_ingest_tiles_every_file_with_unit_vectors(sample_repo: Path, sample_ingest) -> None:
    catalog, result = sample_ingest
    store = read_store(catalog)
    assert set(store["uri"]) == {"app/config.py", "app/util/strings.py", "web/main.ts", "README.md"}
    assert_tiles(sample_repo, store)
    table = store_schema.read_live_chunks(catalog / "store" / "CURRENT", store_schema.column_names())
    # The default embedder: the packaged static code model, 256 wide.
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[256]"
    vectors = table["embedding"].combine_chunks().values.to_numpy().reshape(len(table), 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.manifest["chunk_count"] == len(table)
    assert result.manifest["dimension"] == 256
    assert result.manifest["embedder"].startswith("static-code@")
    assert result.manifest["embedder_sha256"].startswith(result.manifest["embedder"].removeprefix("static-code@"))


def test_ingest_reports_skipped_files_by_reason(sample_ingest) -> None:
    _, result = sample_ingest
    report = dict(result.file_report)
    # No .gitignore in the sample: setting ingest_exclude's default keeps tool directories out, one row each.
    assert report["skipped: ingest_exclude (.git/)"] == 1
    assert report["skipped: ingest_exclude (node_modules/)"] == 1
    assert report["skipped: not UTF-8"] == 1
    assert report["skipped: no known language"] == 2  # logo.png, blob.bin
    assert report["skipped: empty"] == 1
    assert report["chunked"] == 4


def test_catalog_views_describe_the_sample(sample_ingest) -> None:
    catalog, _ = sample_ingest
    connection = bootstrap.connect(catalog, read_only=True)
    try:
        modules = connection.execute(
            "SELECT module, prefix, tags, file_count FROM modules ORDER BY prefix").fetchall()
        symbols = connection.execute(
            "SELECT list_sort(flatten(list(symbols))) FROM chunks WHERE uri = 'app/config.py'").fetchone()[0]
        statuses = dict(connection.execute("SELECT uri, status FROM files").fetchall())
    finally:
        connection.close()
    assert modules == [
        ("(root)", "", ["markdown"], 1),
        ("app", "app/", ["python", "python-package"], 1),
        ("app/util", "app/util/", ["python"], 1),
        ("web", "web/", ["typescript"], 1),
    ]
    assert {"parse_config", "Settings", "get"} <= set(symbols)
    assert statuses["legacy/latin1.py"] == "skipped: not UTF-8"
    assert "node_modules/dep/index.js" not in statuses
    assert statuses["node_modules/"] == "skipped: ingest_exclude (node_modules/)"


def test_reingest_of_unchanged_repo_is_idempotent(sample_repo: Path, sample_ingest) -> None:
    catalog, first = sample_ingest
    before = read_store(catalog)
    second = bootstrap.ingest(sample_repo, catalog)
    assert second.unchanged and second.store == first.store
    assert read_store(catalog) == before


def test_ids_are_stable_across_catalogs_and_change_with_the_code(sample_repo: Path, sample_ingest,
                                                                 tmp_path: Path) -> None:
    catalog, _ = sample_ingest
    first = read_store(catalog)
    fresh = bootstrap.ingest(sample_repo, tmp_path / "other")
    second = read_store(tmp_path / "other")
    assert second["id"] == first["id"] and second["content"] == first["content"]
    assert fresh.manifest["fingerprint"] != "" and not fresh.unchanged
    edited = make_repo(tmp_path / "edited", {**SAMPLE_FILES, "web/main.ts": "export const x = 1;\n"})
    bootstrap.ingest(edited, tmp_path / "other")
    third = read_store(tmp_path / "other")
    unchanged_ids = {i for i, u in zip(first["id"], first["uri"], strict=True) if u != "web/main.ts"}
    assert unchanged_ids <= set(third["id"])
    assert set(third["id"]) != set(first["id"])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no files under"),
        ({"image.png": b"\x89PNG", "notes.weird": "x"}, "nothing to ingest"),
        ({"a.py": b"caf\xe9 = 1\n", "b.py": b"\x00\x01"}, "every candidate file is binary or not UTF-8"),
    ],
    ids=["empty", "no-source-files", "only-undecodable"],
)
def test_bad_repositories_fail_cleanly_and_keep_the_store(tmp_path: Path, sample_ingest, files, message) -> None:
    catalog, first = sample_ingest
    repo = make_repo(tmp_path / "repo", files)
    (tmp_path / "repo").mkdir(exist_ok=True)
    with pytest.raises(errors.CatalogError, match=message):
        bootstrap.ingest(repo, catalog)
    assert layout.current_store(catalog) == first.store
    assert not list((catalog / "store" / "versions").glob(".tmp-*"))


def test_missing_and_non_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(errors.CatalogError, match="does not exist"):
        bootstrap.ingest(tmp_path / "absent", tmp_path / "catalog")
    (tmp_path / "file.py").write_text("x = 1\n")
    with pytest.raises(errors.CatalogError, match="is not a directory"):
        bootstrap.ingest(tmp_path / "file.py", tmp_path / "catalog")


def test_unreadable_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads everything, so permission bits cannot simulate this; the check is what matters.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(errors.CatalogError, match="is not readable"):
        bootstrap.ingest(tmp_path, tmp_path / "catalog")


def test_interrupted_ingest_publishes_nothing(sample_repo: Path, sample_ingest, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    catalog, first = sample_ingest
    edited = make_repo(tmp_path / "edited", {**SAMPLE_FILES, "app/new.py": "def added():\n    pass\n"})
    original = sqlfiles.run_script

    def fail_on_metadata(connection, script, parameters=None):
        if Path(script).name == "derive_store_metadata.sql":
            raise KeyboardInterrupt
        return original(connection, script, parameters)

    monkeypatch.setattr(store, "run_script", fail_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        bootstrap.ingest(edited, catalog)
    assert layout.current_store(catalog) == first.store
    assert not list((catalog / "store" / "versions").glob(".tmp-*"))


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "bootstrap.py", "ingest", str(tmp_path / "absent"), "--catalog", str(tmp_path / "c")],
        capture_output=True, text=True, cwd=Path(bootstrap.__file__).parent,
    )
    assert completed.returncode == 2
    assert "does not exist" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_imported_chunks_of_another_dimension_work_like_ingested_ones(tmp_path: Path) -> None:
    from tests.conftest import synthetic_chunks

    source = tmp_path / "mine.parquet"
    pq.write_table(synthetic_chunks(n=120, dim=24), source)
    result = bootstrap.import_chunks(source, tmp_path / "catalog")
    assert result.manifest["dimension"] == 24
    connection = bootstrap.connect(tmp_path / "catalog")
    try:
        assert connection.execute("SELECT count(*), typeof(any_value(embedding)) FROM chunks").fetchone() == (
            120, "FLOAT[24]")
        assert connection.execute("SELECT count(*) FROM modules").fetchone() == (4,)
    finally:
        connection.close()


def test_import_rejects_a_file_without_the_schema(tmp_path: Path) -> None:
    import pyarrow as pa

    source = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": [1], "uri": ["a.py"]}), source)
    with pytest.raises(errors.CatalogError, match="lacks column.*start_byte"):
        bootstrap.import_chunks(source, tmp_path / "catalog")
    assert layout.current_store(tmp_path / "catalog") is None


def test_import_rejects_duplicate_ids(tmp_path: Path) -> None:
    import pyarrow as pa

    from tests.conftest import synthetic_chunks

    table = synthetic_chunks(n=10, dim=8)
    ids = table["id"].to_pylist()
    ids[3] = ids[0]
    source = tmp_path / "dup.parquet"
    pq.write_table(table.set_column(0, "id", pa.array(ids, pa.int64())), source)
    with pytest.raises(errors.CatalogError, match=f"id {ids[0]} appears 2 times"):
        bootstrap.import_chunks(source, tmp_path / "catalog")
    assert layout.current_store(tmp_path / "catalog") is None


@pytest.mark.slow
def test_standard_library_packages_tile_and_keep_ids(tmp_path: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    include = ["json/**", "tomllib/**"]
    first = bootstrap.ingest(stdlib, tmp_path / "one", include=include)
    bootstrap.ingest(stdlib, tmp_path / "two", include=include)
    one, two = read_store(tmp_path / "one"), read_store(tmp_path / "two")
    assert_tiles(stdlib, one)
    assert one["id"] == two["id"]
    assert first.manifest["chunk_count"] == len(one["id"]) > 20


def test_files_parquet_records_the_state_the_next_ingest_compares(sample_repo: Path, sample_ingest) -> None:
    """size, mtime and an md5 of the bytes per read file, after the six columns views/files.sql reads."""
    import datetime
    import hashlib

    catalog, _ = sample_ingest
    files = pq.read_table(catalog / "store" / "CURRENT" / "files.parquet")
    assert files.column_names[:6] == ["uri", "language", "size_bytes", "status", "chunk_count", "line_count"]
    assert files.column_names[6:] == list(store.FILE_STATE_COLUMNS)
    rows = {row["uri"]: row for row in files.to_pylist()}
    for uri in ("app/config.py", "legacy/latin1.py", "assets/logo.png"):
        path = sample_repo / uri
        row = rows[uri]
        assert row["size_bytes"] == path.stat().st_size
        # A naive UTC timestamp, whole seconds (DuckDB's read_blob lists mtimes to the second).
        assert (row["mtime"] - datetime.datetime(1970, 1, 1)).total_seconds() == int(path.stat().st_mtime)
        if row["status"] in ("chunked", "skipped: not UTF-8"):  # read: hashed
            assert row["content_md5"] == hashlib.md5(path.read_bytes()).hexdigest()
        else:  # never read (no known language)
            assert row["content_md5"] is None
        assert row["listed_at"] >= row["mtime"]
    assert store.read_store_manifest(catalog / "store" / "CURRENT")["chunker"].startswith("cast(max_chunk_chars=1200,")

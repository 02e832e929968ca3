"""The command line refuses bad input before anything is built or created, in one line, with exit code 2.

Issue 13 items 3 and 8: unknown build options and settings, include globs leaving the
repository, path characters in run_id, a misspelled --catalog, glob characters in the
repository path, and Python stacks in CLI errors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import bootstrap
from codeintel import errors, layout, sqlfiles, store
from tests.eval_support import write_pool
from udfs import faiss_build, store_schema
from udfs.settings import SettingError, Settings


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bootstrap.py", *args], capture_output=True, text=True,
                          cwd=layout.PROJECT_DIR)


def assert_one_clean_error(completed: subprocess.CompletedProcess[str], expected: str) -> None:
    """rc 2 and a single ERROR line on stderr holding ``expected``: no Python stack, no UDF "At:" frames."""
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert " ERROR " in lines[0] and expected in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr and "At:" not in completed.stderr


def index_state(catalog: Path) -> tuple[str, list[str]]:
    """CURRENT's target and every entry of index/versions (staging directories included)."""
    versions = catalog / "index" / "versions"
    return os.readlink(catalog / "index" / "CURRENT"), sorted(p.name for p in versions.iterdir())


@pytest.fixture
def indexed_catalog(synthetic_catalog: Path) -> Path:
    faiss_build.build_index(synthetic_catalog, "flat")
    return synthetic_catalog


# --------------------------------------------------------------------------- item 3: options and settings


def test_build_refuses_a_misspelled_option_and_builds_nothing(indexed_catalog: Path) -> None:
    before = index_state(indexed_catalog)
    completed = run_cli("build", "--catalog", str(indexed_catalog), "--option", "nlists=4")
    valid = ", ".join(faiss_build.build_option_names())
    assert_one_clean_error(completed, f"build: unknown --option nlists; valid options: {valid}")
    assert "build_threads" in valid
    assert index_state(indexed_catalog) == before


def test_build_checks_option_values_before_building(indexed_catalog: Path) -> None:
    before = index_state(indexed_catalog)
    completed = run_cli("build", "--catalog", str(indexed_catalog), "--family", "ivf_flat", "--option", "nlist=abc")
    assert_one_clean_error(completed, "build --option: setting faiss_nlist must be an integer or null, got 'abc'")
    completed = run_cli("build", "--catalog", str(indexed_catalog), "--option", "publish=maybe")
    assert_one_clean_error(completed, "build: --option publish must be true or false, got 'maybe'")
    assert index_state(indexed_catalog) == before


def test_build_refuses_unknown_set_and_settings_json_keys(indexed_catalog: Path) -> None:
    before = index_state(indexed_catalog)
    completed = run_cli("build", "--catalog", str(indexed_catalog), "--set", "faiss_nlists=4")
    assert_one_clean_error(completed, "--set: unknown setting(s) faiss_nlists; fix the name(s) or remove them. "
                                      "Known settings: ")
    assert "faiss_nlist," in completed.stderr
    settings_file = indexed_catalog / "settings.json"
    settings_file.write_text(json.dumps({"embed_model": "minilm", "embed_modle": "static-code"}))
    completed = run_cli("build", "--catalog", str(indexed_catalog))
    assert_one_clean_error(completed, f"{settings_file}: unknown setting(s) embed_modle; fix the name(s) or "
                                      "remove them. Known settings: ")
    assert "embed_model," in completed.stderr
    assert index_state(indexed_catalog) == before


def test_settings_json_must_hold_an_object(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text("[1, 2]")
    with pytest.raises(SettingError, match="must hold a JSON object of settings"):
        Settings.from_file(tmp_path / "settings.json")


def test_every_build_knob_reaches_the_build(indexed_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each BuildOptions field given as an option arrives at build_index, build_threads included."""
    given = {"nlist": 8, "pq_m": 8, "pq_nbits": 4, "opq": True, "hnsw_m": 16, "ef_construction": 40,
             "metric": "l2", "train_sample": 300, "kmeans_iterations": 3, "nprobe": 2, "ef_search": 32,
             "refine_k_factor": 2.0,
             "sq_type": "8", "seed": 7, "memory_budget_bytes": 10**9, "use_gpu": True, "build_threads": 1,
             "incremental": False, "max_drift": 0.5}
    # A new build knob must be added here too: the test then proves it is settable.
    assert set(given) | {"publish"} == set(faiss_build.build_option_names())
    received: dict = {}

    def fake_build(catalog_dir, family, *, publish, settings, **params):
        # What the real build would build with: the connection's faiss_* settings, overridden by SQL arguments.
        options = faiss_build.BuildOptions.from_settings(settings, params)
        received.update(dataclasses.asdict(options), family=family, publish=publish)
        return {"version": "fake"}

    monkeypatch.setattr(faiss_build, "build_index", fake_build)
    manifest = bootstrap.build_index(indexed_catalog, "ivf_pq", {**given, "publish": False})
    assert manifest == {"version": "fake"}
    assert {name: received[name] for name in given} == given
    assert received["family"] == "ivf_pq" and received["publish"] is False


@pytest.fixture
def build_threads_used(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The OpenMP thread counts builds train and add with, in order (the real build still runs)."""
    used: list[int] = []
    real = faiss_build.train_and_add

    def spy(plan, store, threads):
        used.append(threads)
        return real(plan, store, threads)

    monkeypatch.setattr(faiss_build, "train_and_add", spy)
    return used


def test_build_threads_option_sets_the_build_threads(indexed_catalog: Path, build_threads_used: list[int]) -> None:
    before = index_state(indexed_catalog)
    manifest = bootstrap.build_index(indexed_catalog, "ivf_flat",
                                     {"build_threads": 3, "nlist": 8, "publish": False})
    assert build_threads_used == [3]
    assert manifest["factory"] == "IVF8,Flat"
    # publish=false built a version beside CURRENT and left CURRENT alone.
    assert os.readlink(indexed_catalog / "index" / "CURRENT") == before[0]


def test_build_script_passes_build_threads(indexed_catalog: Path, build_threads_used: list[int]) -> None:
    connection = bootstrap.connect(indexed_catalog)
    try:
        sqlfiles.run_script(connection, layout.SQL_DIR / "build_index.sql",
                             {"family": "ivf_flat", "nlist": 8, "build_threads": 2, "publish": False})
    finally:
        connection.close()
    assert build_threads_used == [2]


# --------------------------------------------------------------------------- item 8: rough edges


@pytest.mark.parametrize("pattern", ["../outside.py", "src/../../outside.py", "/etc/*.conf", ""])
def test_include_globs_stay_inside_the_repository(tmp_path: Path, pattern: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "inside.py").write_text("def inside():\n    return 1\n")
    (tmp_path / "outside.py").write_text("def outside():\n    return 2\n")
    catalog = tmp_path / "catalog"
    completed = run_cli("ingest", str(repo), "--catalog", str(catalog), "--include", pattern)
    assert_one_clean_error(completed, f"ingest: --include {pattern!r} is not a glob inside the repository; give a "
                                      "glob relative to REPO without '..' parts")
    assert not catalog.exists()


def test_repository_path_with_glob_characters_is_ingested(tmp_path: Path) -> None:
    repo = tmp_path / "re[po]*?x"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text('def double(x):\n    """Twice x."""\n    return 2 * x\n')
    # A sibling the unescaped glob 're[po]*?x' would also match.
    (tmp_path / "repzx" / "pkg").mkdir(parents=True)
    (tmp_path / "repzx" / "pkg" / "other.py").write_text("def other():\n    return 0\n")
    result = bootstrap.ingest(repo, tmp_path / "catalog", include=["pkg/**"])
    assert result.manifest["chunk_count"] == 1
    parts = result.store / store_schema.CHUNK_PARTS_GLOB
    uris = duckdb.sql(f"SELECT DISTINCT uri FROM read_parquet('{parts}')").fetchall()
    assert uris == [("pkg/mod.py",)]


def test_escape_glob_matches_the_path_itself(tmp_path: Path) -> None:
    directory = tmp_path / "a[b]*c?d{e}"
    directory.mkdir()
    (directory / "f.py").write_text("x = 1\n")
    (tmp_path / "abcd{e}").mkdir()
    (tmp_path / "abcd{e}" / "f.py").write_text("x = 1\n")
    pattern = store.escape_glob(str(directory)) + "/*.py"
    assert duckdb.execute("SELECT file FROM glob(?)", [pattern]).fetchall() == [(str(directory / "f.py"),)]


@pytest.mark.parametrize("run_id", ["a/b", "../escape", ".hidden", "x" * 101, "tab\there", ""])
def test_write_pool_refuses_run_ids_with_path_characters(eval_catalog: Path, run_id: str) -> None:
    connection = bootstrap.connect(eval_catalog)
    try:
        with pytest.raises(errors.CatalogError,
                           match=r"write_pool\.sql: run_id must be 1 to 100 letters, digits, '-', '_' or '\.', "
                                 r"starting with a letter or digit; got '"):
            write_pool(connection, channel="bm25", run_id=run_id)
    finally:
        connection.close()
    assert not (eval_catalog / "pools").exists() or not list((eval_catalog / "pools").rglob("*.parquet"))
    assert not (eval_catalog / "runs").exists() or not list((eval_catalog / "runs").rglob("*.parquet"))


def test_write_pool_accepts_a_run_id_of_allowed_characters(eval_catalog: Path) -> None:
    connection = bootstrap.connect(eval_catalog)
    try:
        summary = write_pool(connection, channel="bm25", run_id="Run_1.a-" + "x" * 92)
    finally:
        connection.close()
    assert summary["run_id"] == "Run_1.a-" + "x" * 92


def test_misspelled_catalog_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "catalgo"
    completed = run_cli("versions", "--catalog", str(missing))
    assert_one_clean_error(completed, f"versions: no catalog at {missing} (catalog.duckdb is missing); check the "
                                      f"--catalog path, or create one with `python bootstrap.py ingest REPO "
                                      f"--catalog {missing}`")
    assert not missing.exists()


@pytest.mark.parametrize("command", [
    ["build"], ["autotune"], ["versions"], ["publish", "v1"], ["rollback"], ["gc"], ["bm25"], ["xtr"],
    ["sql", "sql/report_modules.sql"], ["shell"],
])
def test_every_catalog_reading_command_needs_an_existing_catalog(
        tmp_path: Path, command: list[str], caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "absent"
    with caplog.at_level(logging.ERROR, logger="codeintel"):
        assert bootstrap.main([*command, "--catalog", str(missing)]) == 2
    assert f"{command[0]}: no catalog at {missing}" in caplog.text
    assert not missing.exists()


def test_udf_errors_reach_the_cli_as_one_line(indexed_catalog: Path) -> None:
    """An error raised inside a Python UDF carries its stack in DuckDB's message; the CLI drops it."""
    before = index_state(indexed_catalog)
    completed = run_cli("build", "--catalog", str(indexed_catalog), "--family", "ivf_flat",
                        "--option", "nlist=100000")
    assert_one_clean_error(completed, "build_index.sql, statement 1: faiss_build: nlist=100000 needs at least that "
                                      "many training vectors")
    assert index_state(indexed_catalog) == before
    # --debug, before or after the command, logs the stack after the same line.
    for args in (["--debug", "build"], ["build", "--debug"]):
        completed = run_cli(*args, "--catalog", str(indexed_catalog), "--family", "ivf_flat",
                            "--option", "nlist=100000")
        assert completed.returncode == 2
        assert "Traceback" in completed.stderr and "nlist=100000 needs" in completed.stderr


def test_unexpected_exceptions_are_one_line_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_args, **_kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(bootstrap, "import_chunks", broken)
    with caplog.at_level(logging.ERROR, logger="codeintel"):
        assert bootstrap.main(["import", "x.parquet", "--catalog", str(tmp_path / "c")]) == 2
    [record] = caplog.records
    assert record.getMessage() == "ValueError: boom second line (rerun with --debug for the traceback)"
    assert not record.exc_info


def test_describe_error_drops_the_udf_stack() -> None:
    error = duckdb.InvalidInputException(
        "Invalid Input Error: Python exception occurred while executing the UDF: UdfError: faiss_build: bad\n\n"
        "At:\n  /work/main/udfs/faiss_index.py(276): _coerce_option\n")
    assert errors.describe_error(error) == "faiss_build: bad"

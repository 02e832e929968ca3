"""Index and store lifecycle beside other processes (issue 13 items 2 and 4).

Item 4: a staging directory (``index/versions/.tmp-*``, ``store/versions/.tmp-*``) of a process
killed with SIGKILL is removed by the next build, ingest or gc, found by the pid and host its
owner file records; one whose owner still runs is left alone.

Item 2: ``publish``, ``rollback`` and ``gc`` beside a process holding catalog.duckdb open
exit 0 when they changed CURRENT and say so; a repeated ``rollback --to`` changes nothing.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import bootstrap
from udfs import faiss_index
from udfs import staging as staging_dirs

#: How long a child may take to import the project and reach its sleep.
CHILD_READY_SECONDS = 120


def start_child(code: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``code`` in a fresh Python in the project directory; return it and the first line it prints."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=bootstrap.PROJECT_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readable, _, _ = select.select([child.stdout], [], [], CHILD_READY_SECONDS)
    line = child.stdout.readline().strip() if readable else ""
    if not line:
        child.kill()
        raise AssertionError(f"child did not reach its sleep: {child.communicate()[1]}")
    return child, line


def kill_hard(child: subprocess.Popen[str]) -> None:
    """SIGKILL: the child runs no finally block and no atexit handler."""
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def build_killed_while_writing(catalog: Path, children: list[subprocess.Popen[str]]) -> Path:
    """A real ``build_index`` in a child, stopped inside its staging directory, then killed with SIGKILL."""
    child, line = start_child(f"""
        import time
        from udfs import faiss_index
        def hang(staging, *args):  # the build reached the point where it writes its files
            (staging / "index.faiss").write_bytes(b"x" * 4096)
            print(staging, flush=True)
            time.sleep(600)
        faiss_index._write_version_files = hang
        faiss_index.build_index({str(catalog)!r}, "flat")
    """)
    children.append(child)
    staging = Path(line)
    owner = json.loads((staging / staging_dirs.OWNER_FILE).read_text())
    assert owner["pid"] == child.pid and owner["host"] == socket.gethostname()
    kill_hard(child)
    assert staging.is_dir(), "SIGKILL ran no cleanup: the directory is left for the next build or gc"
    return staging


def ingest_killed_while_staging(catalog: Path, children: list[subprocess.Popen[str]]) -> Path:
    """The store's real staging path (bootstrap.staging_directory) in a child, which is then killed."""
    child, line = start_child(f"""
        import time
        from pathlib import Path
        import bootstrap
        with bootstrap.staging_directory(Path({str(catalog)!r}) / "store" / "versions") as staging:
            (staging / "chunks.parquet").write_bytes(b"x" * 4096)
            print(staging, flush=True)
            time.sleep(600)
    """)
    children.append(child)
    staging = Path(line)
    assert json.loads((staging / staging_dirs.OWNER_FILE).read_text())["pid"] == child.pid
    kill_hard(child)
    assert staging.is_dir()
    return staging


# --------------------------------------------------------------------------- item 4


def test_gc_removes_the_staging_directory_of_a_killed_build(synthetic_catalog: Path,
                                                            children: list[subprocess.Popen[str]]) -> None:
    kept = faiss_index.build_index(synthetic_catalog, "flat")["version"]
    staging = build_killed_while_writing(synthetic_catalog, children)
    collected = faiss_index.gc(synthetic_catalog, keep=1)
    assert staging.name in collected["removed"] and not staging.exists()
    assert collected["kept"] == [kept]


def test_next_build_removes_the_staging_directory_of_a_killed_build(synthetic_catalog: Path,
                                                                    children: list[subprocess.Popen[str]]) -> None:
    staging = build_killed_while_writing(synthetic_catalog, children)
    built = faiss_index.build_index(synthetic_catalog, "flat")
    assert not staging.exists()
    versions = sorted(p.name for p in (synthetic_catalog / "index" / "versions").iterdir())
    assert versions == [built["version"]]
    # A published version holds its data only: the owner file stayed behind in staging.
    assert not (synthetic_catalog / "index" / "versions" / built["version"] / staging_dirs.OWNER_FILE).exists()


def test_staging_of_a_live_process_survives_gc_and_build(synthetic_catalog: Path,
                                                         children: list[subprocess.Popen[str]]) -> None:
    versions = synthetic_catalog / "index" / "versions"
    mine = staging_dirs.create(versions)  # owned by this (live) test process
    child, line = start_child(f"""
        import time
        from pathlib import Path
        from udfs import staging
        print(staging.create(Path({str(versions)!r})), flush=True)
        time.sleep(600)
    """)
    children.append(child)
    theirs = Path(line)
    faiss_index.build_index(synthetic_catalog, "flat")
    faiss_index.build_index(synthetic_catalog, "flat")
    assert mine.name not in faiss_index.gc(synthetic_catalog, keep=1)["removed"]
    assert mine.is_dir() and theirs.is_dir()
    kill_hard(child)
    assert faiss_index.gc(synthetic_catalog, keep=1)["removed"] == [theirs.name]
    assert mine.is_dir()


def test_killed_ingest_staging_is_removed_by_gc_command_and_live_one_kept(
        synthetic_catalog: Path, children: list[subprocess.Popen[str]]) -> None:
    faiss_index.build_index(synthetic_catalog, "flat")
    dead = ingest_killed_while_staging(synthetic_catalog, children)
    live = staging_dirs.create(synthetic_catalog / "store" / "versions")
    completed = subprocess.run([sys.executable, "bootstrap.py", "gc", "--keep", "1", "--catalog",
                                str(synthetic_catalog)], capture_output=True, text=True, cwd=bootstrap.PROJECT_DIR)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["removed_store_staging"] == [dead.name]
    assert f"removed abandoned staging directory {dead}" in completed.stderr
    assert not dead.exists() and live.is_dir()


def test_next_import_removes_a_killed_ingest_staging_and_keeps_a_live_one(
        synthetic_catalog: Path, synthetic_catalog_template: Path, children: list[subprocess.Popen[str]]) -> None:
    dead = ingest_killed_while_staging(synthetic_catalog, children)
    live = staging_dirs.create(synthetic_catalog / "store" / "versions")
    result = bootstrap.import_chunks(synthetic_catalog_template.parent / "synthetic_chunks.parquet", synthetic_catalog)
    assert result.unchanged
    assert not dead.exists() and live.is_dir()
    # Publishing a new store collects old versions but never another writer's live staging directory.
    bootstrap.collect_old_store_versions(synthetic_catalog)
    assert live.is_dir()


def make_foreign(parent: Path, owner: dict | None, age_seconds: float) -> Path:
    """A staging directory as another host (or older code, ``owner=None``) left it, last written ``age_seconds`` ago."""
    directory = parent / f"{staging_dirs.PREFIX}{owner['host'] if owner else 'ownerless'}"
    directory.mkdir(parents=True)
    (directory / "index.faiss").write_bytes(b"x")
    if owner is not None:
        (directory / staging_dirs.OWNER_FILE).write_text(json.dumps(owner))
    stamp = time.time() - age_seconds
    for path in [*directory.iterdir(), directory]:
        os.utime(path, (stamp, stamp))
    return directory


def test_other_hosts_and_ownerless_directories_wait_for_the_safety_age(tmp_path: Path) -> None:
    day = staging_dirs.FOREIGN_STALE_SECONDS
    # pid 1 is alive here, and meaningless for another host: age alone decides there.
    fresh_foreign = make_foreign(tmp_path / "a", {"pid": 1, "host": "elsewhere-a"}, day / 2)
    old_foreign = make_foreign(tmp_path / "b", {"pid": 1, "host": "elsewhere-b"}, day * 2)
    fresh_ownerless = make_foreign(tmp_path / "c", None, 60)
    old_ownerless = make_foreign(tmp_path / "d", None, day * 2)
    for directory in (fresh_foreign, old_foreign, fresh_ownerless, old_ownerless):
        staging_dirs.remove_abandoned(directory.parent)
    assert fresh_foreign.is_dir() and fresh_ownerless.is_dir()
    assert not old_foreign.exists() and not old_ownerless.exists()


def test_this_host_decides_by_pid_not_age(tmp_path: Path) -> None:
    day = staging_dirs.FOREIGN_STALE_SECONDS
    host = socket.gethostname()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live_old = make_foreign(tmp_path / "a", {"pid": os.getpid(), "host": host}, day * 30)
    dead_new = make_foreign(tmp_path / "b", {"pid": dead_pid, "host": host}, 0)
    staging_dirs.remove_abandoned(live_old.parent)
    staging_dirs.remove_abandoned(dead_new.parent)
    assert live_old.is_dir(), "a month-old directory of a running process is a long build: kept"
    assert not dead_new.exists(), "a second-old directory of an exited process is abandoned: removed"


# --------------------------------------------------------------------------- item 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bootstrap.py", *args], capture_output=True, text=True,
                          cwd=bootstrap.PROJECT_DIR)


def current_target(catalog: Path) -> str:
    return os.readlink(catalog / "index" / "CURRENT")


def test_lifecycle_commands_beside_a_reader_holding_the_catalog(synthetic_catalog: Path,
                                                                children: list[subprocess.Popen[str]]) -> None:
    first = bootstrap.build_index(synthetic_catalog, "flat")["version"]  # persists v_faiss_idmap
    second = faiss_index.build_index(synthetic_catalog, "flat")["version"]
    database = synthetic_catalog / bootstrap.CATALOG_DB
    reader, ready = start_child(f"""
        import time, duckdb
        connection = duckdb.connect({str(database)!r}, read_only=True)
        print("ready", flush=True)
        time.sleep(600)
    """)
    children.append(reader)
    assert ready == "ready"
    catalog = str(synthetic_catalog)

    rolled = run_cli("rollback", "--to", first, "--catalog", catalog)
    assert rolled.returncode == 0, rolled.stderr
    assert current_target(synthetic_catalog) == f"versions/{first}"
    assert f"rollback: CURRENT changed from index version {second} to {first}" in rolled.stderr
    # The lock was real: the refresh failed, and the warning says the change stands.
    assert "views were not refreshed" in rolled.stderr and "lock" in rolled.stderr.lower()
    assert json.loads(rolled.stdout) == {"current": first, "previous": second}

    again = run_cli("rollback", "--to", first, "--catalog", catalog)
    assert again.returncode == 0, again.stderr
    assert current_target(synthetic_catalog) == f"versions/{first}"
    assert f"rollback: index version {first} is already CURRENT; nothing changed" in again.stderr
    assert json.loads(again.stdout) == {"current": first, "previous": first}

    published = run_cli("publish", second, "--catalog", catalog)
    assert published.returncode == 0, published.stderr
    assert f"publish: CURRENT changed from index version {first} to {second}" in published.stderr
    # gc and versions never open catalog.duckdb: nothing the views read changes.
    collected = run_cli("gc", "--keep", "1", "--catalog", catalog)
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["removed"] == [first]
    listed = run_cli("versions", "--catalog", catalog)
    assert listed.returncode == 0 and json.loads(listed.stdout)["current"] == second
    assert reader.poll() is None, "the reader kept its connection throughout"


def test_views_read_index_current_through_the_symlink(synthetic_catalog: Path) -> None:
    """Why a failed refresh loses nothing: the persisted view names index/CURRENT, not a version."""
    first = bootstrap.build_index(synthetic_catalog, "flat")["version"]
    faiss_index.build_index(synthetic_catalog, "flat")
    faiss_index.rollback(synthetic_catalog, to=first)  # no view refresh at all
    with duckdb.connect(str(synthetic_catalog / bootstrap.CATALOG_DB), read_only=True) as connection:
        (sql,) = connection.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'v_faiss_idmap'").fetchone()
        rows = connection.execute("SELECT count(*) FROM v_faiss_idmap").fetchone()[0]
    assert str(synthetic_catalog / "index" / "CURRENT" / "faiss_idmap.parquet") in sql and first not in sql
    assert rows == faiss_index.list_versions(synthetic_catalog)["versions"][0]["ntotal"]

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
import shutil
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
from codeintel import catalog_db, layout, sqlfiles
from udfs import faiss_build, faiss_current, faiss_versions
from udfs import versioned_dir as staging_dirs
from udfs.context import pinned

#: How long a child may take to import the project and reach its sleep.
CHILD_READY_SECONDS = 120


def start_child(code: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``code`` in a fresh Python in the project directory; return it and the first line it prints."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=layout.PROJECT_DIR,
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
        from udfs import faiss_build
        def hang(staging, *args):  # the build reached the point where it writes its files
            (staging / "index.faiss").write_bytes(b"x" * 4096)
            print(staging, flush=True)
            time.sleep(600)
        faiss_build._write_version_files = hang
        faiss_build.build_index({str(catalog)!r}, "flat")
    """)
    children.append(child)
    staging = Path(line)
    owner = json.loads((staging / staging_dirs.OWNER_FILE).read_text())
    assert owner["pid"] == child.pid and owner["host"] == socket.gethostname()
    kill_hard(child)
    assert staging.is_dir(), "SIGKILL ran no cleanup: the directory is left for the next build or gc"
    return staging


def ingest_killed_while_staging(catalog: Path, children: list[subprocess.Popen[str]]) -> Path:
    """The store's real staging path (the store's VersionedDir.stage) in a child, which is then killed."""
    child, line = start_child(f"""
        import time
        from pathlib import Path
        from codeintel import layout
        with layout.store_versions(Path({str(catalog)!r})).stage() as staging:
            (staging.path / "chunks.parquet").write_bytes(b"x" * 4096)
            print(staging.path, flush=True)
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
    kept = faiss_build.build_index(synthetic_catalog, "flat")["version"]
    staging = build_killed_while_writing(synthetic_catalog, children)
    collected = faiss_versions.gc(synthetic_catalog, keep=1)
    assert staging.name in collected["removed"] and not staging.exists()
    assert collected["kept"] == [kept]


def test_next_build_removes_the_staging_directory_of_a_killed_build(synthetic_catalog: Path,
                                                                    children: list[subprocess.Popen[str]]) -> None:
    staging = build_killed_while_writing(synthetic_catalog, children)
    built = faiss_build.build_index(synthetic_catalog, "flat")
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
        from udfs import versioned_dir
        print(versioned_dir.create(Path({str(versions)!r})), flush=True)
        time.sleep(600)
    """)
    children.append(child)
    theirs = Path(line)
    faiss_build.build_index(synthetic_catalog, "flat")
    faiss_build.build_index(synthetic_catalog, "flat")
    assert mine.name not in faiss_versions.gc(synthetic_catalog, keep=1)["removed"]
    assert mine.is_dir() and theirs.is_dir()
    kill_hard(child)
    assert faiss_versions.gc(synthetic_catalog, keep=1)["removed"] == [theirs.name]
    assert mine.is_dir()


def test_killed_ingest_staging_is_removed_by_gc_command_and_live_one_kept(
        synthetic_catalog: Path, children: list[subprocess.Popen[str]]) -> None:
    faiss_build.build_index(synthetic_catalog, "flat")
    dead = ingest_killed_while_staging(synthetic_catalog, children)
    live = staging_dirs.create(synthetic_catalog / "store" / "versions")
    completed = subprocess.run([sys.executable, "bootstrap.py", "gc", "--keep", "1", "--catalog",
                                str(synthetic_catalog)], capture_output=True, text=True, cwd=layout.PROJECT_DIR)
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
    layout.store_versions(synthetic_catalog).gc(keep=2)
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
                          cwd=layout.PROJECT_DIR)


def current_target(catalog: Path) -> str:
    return os.readlink(catalog / "index" / "CURRENT")


READER_LOOP = """
    import sys, time, duckdb
    connection = duckdb.connect(sys.argv[1], read_only=True)
    print("ready", flush=True)
    queries, errors = 0, []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            connection.execute("SELECT count(*) FROM chunks").fetchone()
            connection.execute("SELECT count(*) FROM v_faiss_join WHERE indexed").fetchone()
            queries += 1
        except Exception as error:  # any error is what the test is looking for
            errors.append(str(error))
        try:
            open(sys.argv[2]).close()
            break
        except FileNotFoundError:
            time.sleep(0.02)
    print(queries, len(errors), errors[:3], flush=True)
"""


def start_reader(database: Path, stop_file: Path) -> subprocess.Popen[str]:
    """A stock DuckDB client holding ``database`` read-only and querying it until ``stop_file`` exists."""
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(READER_LOOP), str(database), str(stop_file)],
                              stdout=subprocess.PIPE, text=True, cwd=layout.PROJECT_DIR)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    return reader


def stop_reader(reader: subprocess.Popen[str], stop_file: Path) -> tuple[int, int, str]:
    stop_file.touch()
    output, _ = reader.communicate(timeout=60)
    queries, errors, sample = output.strip().split(" ", 2)
    return int(queries), int(errors), sample


def test_a_reader_sees_no_error_through_ingest_build_publish_rollback_gc_and_bm25(
        synthetic_catalog: Path, synthetic_catalog_template: Path, tmp_path: Path,
        children: list[subprocess.Popen[str]]) -> None:
    """Issue 13 item 1: writers never need the reader's lock; the reader keeps its file and sees no error."""
    first = bootstrap.build_index(synthetic_catalog, "flat")["version"]  # persists the v_faiss_* views
    database = synthetic_catalog / layout.CATALOG_DB
    stop_file = tmp_path / "stop"
    reader = start_reader(database, stop_file)
    children.append(reader)
    catalog = str(synthetic_catalog)

    built = run_cli("build", "--family", "flat", "--catalog", catalog)
    assert built.returncode == 0, built.stderr
    second = json.loads(built.stdout)["version"]
    rolled = run_cli("rollback", "--to", first, "--catalog", catalog)
    assert rolled.returncode == 0, rolled.stderr
    assert f"rollback: CURRENT changed from index version {second} to {first}" in rolled.stderr
    assert "not refreshed" not in rolled.stderr, "nothing locks the refresh out any more"
    assert json.loads(rolled.stdout) == {"current": first, "previous": second}
    again = run_cli("rollback", "--to", first, "--catalog", catalog)
    assert again.returncode == 0 and json.loads(again.stdout) == {"current": first, "previous": first}
    published = run_cli("publish", second, "--catalog", catalog)
    assert published.returncode == 0, published.stderr
    collected = run_cli("gc", "--keep", "1", "--catalog", catalog)
    assert collected.returncode == 0 and json.loads(collected.stdout)["removed"] == [first]
    indexed = run_cli("bm25", "--catalog", catalog)
    assert indexed.returncode == 0, indexed.stderr
    imported = run_cli("import", str(synthetic_catalog_template.parent / "synthetic_chunks.parquet"),
                       "--catalog", catalog)
    assert imported.returncode == 0, imported.stderr

    queries, errors, sample = stop_reader(reader, stop_file)
    assert errors == 0, sample
    assert queries > 0
    # A client connecting now gets the catalog the writers published (bm25's tables are in it).
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM bm25_index_info").fetchone()[0] == 1
        assert connection.execute("SELECT count(*) FROM v_faiss_join WHERE indexed").fetchone()[0] == 2000
    # No copy is left behind.
    assert not [p.name for p in synthetic_catalog.iterdir() if p.name.startswith(staging_dirs.PREFIX)]


def test_a_killed_writer_leaves_the_catalog_unchanged_and_its_copy_is_removed(
        synthetic_catalog: Path, children: list[subprocess.Popen[str]]) -> None:
    database = synthetic_catalog / layout.CATALOG_DB
    before = database.read_bytes()
    child, line = start_child(f"""
        import time
        import bootstrap
        session = bootstrap.open_catalog({str(synthetic_catalog)!r})
        session.connection.execute("CREATE TABLE half_done AS SELECT 1 AS x")
        print(session.copy.staging, flush=True)
        time.sleep(600)
    """)
    children.append(child)
    staging = Path(line)
    assert staging.parent == synthetic_catalog and staging.is_dir()
    kill_hard(child)
    assert database.read_bytes() == before
    with bootstrap.open_catalog(synthetic_catalog) as session:  # the next writer takes the lock and cleans up
        assert not staging.exists()
        assert session.connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'half_done'").fetchone()[0] == 0


def test_writers_take_turns_and_a_failed_one_publishes_nothing(synthetic_catalog: Path) -> None:
    database = synthetic_catalog / layout.CATALOG_DB
    with bootstrap.open_catalog(synthetic_catalog) as session:
        with catalog_db.writer_lock(synthetic_catalog, wait=False) as held:
            assert held is False, "a second writer must wait while one is at work"
        session.connection.execute("CREATE TABLE kept AS SELECT 1 AS x")
    before = database.read_bytes()
    with pytest.raises(duckdb.Error), bootstrap.open_catalog(synthetic_catalog) as session:
        session.connection.execute("CREATE TABLE lost AS SELECT 1 AS x")
        session.connection.execute("SELECT * FROM no_such_table")
    assert database.read_bytes() == before
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = {row[0] for row in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "kept" in tables and "lost" not in tables


def test_views_read_index_current_through_the_symlink(synthetic_catalog: Path) -> None:
    """Why a failed refresh loses nothing: the persisted view names index/CURRENT, not a version."""
    first = bootstrap.build_index(synthetic_catalog, "flat")["version"]
    faiss_build.build_index(synthetic_catalog, "flat")
    faiss_versions.rollback(synthetic_catalog, to=first)  # no view refresh at all
    with duckdb.connect(str(synthetic_catalog / layout.CATALOG_DB), read_only=True) as connection:
        (sql,) = connection.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'v_faiss_idmap'").fetchone()
        rows = connection.execute("SELECT count(*) FROM v_faiss_idmap").fetchone()[0]
    assert str(synthetic_catalog / "index" / "CURRENT" / "faiss_idmap.parquet") in sql and first not in sql
    assert rows == faiss_versions.list_versions(synthetic_catalog)["versions"][0]["ntotal"]


# --------------------------------------------------------------------------- item 8: moved and copied catalogs


def test_a_copied_catalog_reads_its_own_files(synthetic_catalog: Path, tmp_path: Path) -> None:
    bootstrap.build_index(synthetic_catalog, "flat")
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_catalog, copy, symlinks=True)
    # The original changes after the copy: its store is gone, so reading it would fail or differ.
    shutil.rmtree(synthetic_catalog / "store")
    with bootstrap.open_catalog(copy, read_only=True) as session:  # TEMP views over the copy's own files
        assert session.connection.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2000
        assert session.connection.execute("SELECT count(*) FROM v_faiss_join WHERE indexed").fetchone()[0] == 2000
    database = str(copy / layout.CATALOG_DB)
    with duckdb.connect(database, read_only=True) as stock, pytest.raises(duckdb.IOException):
        stock.execute("SELECT count(*) FROM chunks").fetchone()  # still the original's path: says so, loudly
    relocated = run_cli("views", "--catalog", str(copy))
    assert relocated.returncode == 0, relocated.stderr
    with duckdb.connect(database, read_only=True) as stock:  # a stock client after one writing command
        assert stock.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2000
        assert not [sql for (sql,) in stock.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
                    if str(synthetic_catalog) + "/" in sql]


# --------------------------------------------------------------------------- issue 14: one version per statement


def test_a_pinned_statement_keeps_the_version_it_met_first(synthetic_catalog: Path) -> None:
    """Calls inside udfs.context.pinned (one statement in serve) use one version across a publish."""
    first = faiss_build.build_index(synthetic_catalog, "flat")["version"]
    second = faiss_build.build_index(synthetic_catalog, "ivf_flat", nlist=8)["version"]
    query = "SELECT faiss_topk(embedding, 5) FROM chunks ORDER BY id LIMIT 3"
    with bootstrap.open_catalog(synthetic_catalog, read_only=True) as session:
        connection, context = session.connection, session.context
        with sqlfiles.duckdb_threads(connection, 1), pinned(context):
            before = connection.execute(query).fetchall()
            assert faiss_current.load_current(context).version == second
            faiss_versions.publish(synthetic_catalog, first)
            assert faiss_current.load_current(context).version == second, "the pin holds across the publish"
            assert connection.execute(query).fetchall() == before
            assert connection.execute("SELECT family FROM faiss_index_info()").fetchone() == ("ivf_flat",)
        assert faiss_current.load_current(context).version == first, "the next statement sees the new version"
        assert connection.execute("SELECT family FROM faiss_index_info()").fetchone() == ("flat",)


def test_a_writer_refuses_to_start_beside_a_direct_read_write_connection(
        synthetic_catalog: Path, children: list[subprocess.Popen[str]]) -> None:
    """A read-write holder writes the file outside the writer lock: copying under it would lose its changes."""
    database = synthetic_catalog / layout.CATALOG_DB
    holder, ready = start_child(f"""
        import time, duckdb
        connection = duckdb.connect({str(database)!r})
        print("ready", flush=True)
        time.sleep(600)
    """)
    children.append(holder)
    assert ready == "ready"
    before = database.read_bytes()
    refused = run_cli("bm25", "--catalog", str(synthetic_catalog))
    assert refused.returncode == 2
    assert "is open read-write elsewhere" in refused.stderr and "Close it" in refused.stderr
    assert f"PID {holder.pid}" in refused.stderr, "DuckDB's lock message names the holder"
    kill_hard(holder)
    assert database.read_bytes() == before
    assert run_cli("bm25", "--catalog", str(synthetic_catalog)).returncode == 0

"""``bootstrap.py serve``: a real server on a free port, real clients (psycopg, SQLAlchemy, pandas, psql)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import bootstrap
from codeintel import serve
from codeintel.layout import PROJECT_DIR, SQL_DIR
from tests.eval_support import pooled_catalog

psycopg = pytest.importorskip("psycopg")
sqlalchemy = pytest.importorskip("sqlalchemy")

PASSWORD = "s3cret-for-tests"
SEARCH = ("SELECT h.rank, h.chunk_id, h.score, c.uri FROM faiss_search(embed(%s), k := 10) AS h "
          "JOIN chunks AS c ON c.id = h.chunk_id ORDER BY h.rank")
#: The same hits joined by id to the keyed chunk_locations table (a catalog table, not a view).
LOCATED = SEARCH.replace("JOIN chunks AS c", "JOIN chunk_locations AS c")
QUERIES = ("fn_3 value", "parse a config file", "retry with backoff", "fn_17 value")


@dataclasses.dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def connect(self, **kwargs) -> psycopg.Connection:
        options = {"host": "127.0.0.1", "port": self.port, "user": "tester", "dbname": "catalog",
                   "password": PASSWORD, "autocommit": True, **kwargs}
        return psycopg.connect(**options)

    def url(self) -> str:
        return f"postgresql+psycopg://tester:{PASSWORD}@127.0.0.1:{self.port}/catalog"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        return self.process.returncode


def start_server(catalog: Path, log: Path, *extra: str, password: str | None = PASSWORD) -> Server:
    env = {key: value for key, value in os.environ.items() if key != serve.PASSWORD_ENV}
    if password is not None:
        env[serve.PASSWORD_ENV] = password
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "bootstrap.py"), "serve", "--catalog",
                                    str(catalog), "--port", "0", *extra], stdout=out, stderr=out, env=env)
    # Wait for the line naming the port (a generous guard against a hung start, not a timing assertion).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        for line in text.splitlines():
            if "serve: serving" in line:
                port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
                return Server(process, port, log)
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"serve did not start:\n{log.read_text()}")


def snapshot(catalog: Path) -> dict[str, str]:
    """Every file's content hash and every symlink's target under the catalog."""
    state = {}
    for path in sorted(catalog.rglob("*")):
        key = str(path.relative_to(catalog))
        if path.is_symlink():
            state[key] = "-> " + os.readlink(path)
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def in_process(catalog: Path, sql: str, params: list | None = None) -> list[tuple]:
    connection = bootstrap.connect(catalog, read_only=True)
    try:
        if params is None:
            return connection.execute(sql).fetchall()
        return connection.execute(sql.replace("%s", "?"), params).fetchall()
    finally:
        connection.close()


def rounded(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(value, 5) if isinstance(value, float) else value for value in row) for row in rows]


@pytest.fixture(scope="module")
def served_catalog(eval_catalog_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evaluation catalog with pools for the eval views (written in process, before serving)."""
    return pooled_catalog(eval_catalog_template, tmp_path_factory.mktemp("served") / "catalog", k=10)


@pytest.fixture(scope="module")
def server(served_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(served_catalog, tmp_path_factory.mktemp("log") / "serve.log")
    yield running
    assert running.stop() == 0


def test_psycopg_search_equals_in_process(server: Server, served_catalog: Path) -> None:
    with server.connect() as connection:
        for text in QUERIES:
            over_wire = connection.execute(SEARCH, [text]).fetchall()
            assert rounded(over_wire) == rounded(in_process(served_catalog, SEARCH, [text]))
            assert len(over_wire) == 10
            assert rounded(connection.execute(LOCATED, [text]).fetchall()) == rounded(over_wire)
        # The literal form, as a BI tool sends it (simple query protocol), and a transaction.
    with server.connect(autocommit=False) as connection:
        literal = SEARCH.replace("%s", "'parse a config file'")
        assert rounded(connection.execute(literal).fetchall()) == rounded(
            in_process(served_catalog, SEARCH, ["parse a config file"]))
        connection.commit()


def test_sqlalchemy_pandas_and_schema_browsing(server: Server, served_catalog: Path) -> None:
    import pandas as pd

    engine = sqlalchemy.create_engine(server.url())
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(SEARCH.replace("%s", ":q")), {"q": "fn_3 value"}).fetchall()
            assert rounded([tuple(row) for row in rows]) == rounded(in_process(served_catalog, SEARCH, ["fn_3 value"]))
            frame = pd.read_sql(sqlalchemy.text(SEARCH.replace("%s", ":q")), connection, params={"q": "fn_17 value"})
            assert frame["chunk_id"].tolist() == [row[1] for row in in_process(served_catalog, SEARCH, ["fn_17 value"])]
            # The eval views and a report, as a dashboard reads them.
            per_channel = connection.execute(sqlalchemy.text(
                "SELECT channel, mrr_at_10 FROM v_eval_per_channel ORDER BY channel")).fetchall()
            assert rounded([tuple(row) for row in per_channel]) == rounded(in_process(
                served_catalog, "SELECT channel, mrr_at_10 FROM v_eval_per_channel ORDER BY channel"))
            assert {row[0] for row in per_channel} == {"faiss", "bm25"}
            for name in ("report_modules.sql", "report_eval.sql"):
                report = (SQL_DIR / name).read_text()
                rows = [tuple(row) for row in connection.execute(sqlalchemy.text(report.replace(":", r"\:")))]
                assert rows and rounded(rows) == rounded(in_process(served_catalog, report)), name
        inspector = sqlalchemy.inspect(engine)
        assert {"chunks", "modules", "v_eval_per_channel", "v_eval_per_query"} <= set(inspector.get_view_names())
        assert [column["name"] for column in inspector.get_columns("chunks")][:3] == ["id", "uri", "start_byte"]
    finally:
        engine.dispose()


def test_catalog_queries_clients_send_on_connect(server: Server) -> None:
    with server.connect() as connection:
        assert connection.info.server_version >= 140000
        assert connection.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL")
        tables = {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")}
        assert {"chunks", "modules", "v_eval_per_channel"} <= tables
        columns = connection.execute("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'chunks' ORDER BY ordinal_position").fetchall()
        assert columns[0] == ("id",)
        assert ("chunks",) in connection.execute("SELECT relname FROM pg_catalog.pg_class").fetchall()


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed (.ci/run installs postgresql-client)")
def test_psql_runs_a_search(server: Server, served_catalog: Path) -> None:
    sql = SEARCH.replace("%s", "'parse a config file'")
    result = subprocess.run(["psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                             "-p", str(server.port), "-U", "tester", "-d", "catalog", "-c", sql],
                            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": PASSWORD}, timeout=60)
    assert result.returncode == 0, result.stderr
    chunk_ids = [int(line.split("|")[1]) for line in result.stdout.splitlines() if line]
    assert chunk_ids == [row[1] for row in in_process(served_catalog, SEARCH, ["parse a config file"])]


def test_bad_sql_returns_its_error_and_the_session_goes_on(server: Server) -> None:
    with server.connect() as connection:
        with pytest.raises(psycopg.errors.SyntaxError, match="syntax error at or near"):
            connection.execute("SELEC 1")
        with pytest.raises(psycopg.Error, match="nosuch"):
            connection.execute("SELECT * FROM nosuch")
        assert connection.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
    with server.connect(autocommit=False) as connection:  # inside a transaction: ROLLBACK, then go on
        with pytest.raises(psycopg.Error, match="nosuch"):
            connection.execute("SELECT * FROM nosuch")
        connection.rollback()
        assert connection.execute("SELECT 41 + 1").fetchone()[0] == 42


def test_read_only_refuses_writes_and_files_outside(server: Server, served_catalog: Path) -> None:
    with server.connect() as connection:
        for statement in ("CREATE TABLE t (x INTEGER)", "DROP VIEW chunks", "COPY (SELECT 1) TO 'out.csv'",
                          "SELECT faiss_build('flat')", "ATTACH ':memory:' AS m", "SET threads = 1",
                          "SELECT faiss_set_params('nprobe=4')"):
            with pytest.raises(psycopg.Error) as refused:
                connection.execute(statement)
            assert any(word in str(refused.value) for word in ("read-only", "not allowed", "fixed when")), statement
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="disabled by configuration"):
            connection.execute("SELECT * FROM read_csv('/etc/passwd')")
        # TEMP objects are the session's own.
        connection.execute("CREATE TEMP TABLE mine AS SELECT id FROM chunks LIMIT 3")
        assert connection.execute("SELECT count(*) FROM mine").fetchone()[0] == 3
        assert connection.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
    assert not (served_catalog / "out.csv").exists()


def test_wrong_password_is_refused_and_logged(server: Server) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=server.port, user="intruder", password="wrong", dbname="catalog")
    assert "refused login of user 'intruder'" in server.log.read_text()


def test_thread_gate_keeps_one_thread_while_any_session_searches(tmp_path: Path) -> None:
    database = duckdb.connect(":memory:")
    database.execute("SET threads = 4")
    first, second = database.cursor(), database.cursor()
    gate = serve.ThreadGate(4)
    threads = lambda: database.execute("SELECT current_setting('threads')").fetchone()[0]  # noqa: E731
    with gate.single(first):
        with gate.single(second):
            assert threads() == 1
        assert threads() == 1  # the other session's statement still runs
    assert threads() == 4


def test_live_index_and_catalog_flip_under_eight_clients(eval_catalog: Path, tmp_path: Path) -> None:
    """8 clients search while another process publishes index versions back and forth."""
    from udfs import faiss_build, faiss_versions

    first = faiss_versions.index_versions(eval_catalog).current()
    second = faiss_build.build_index(eval_catalog, "flat", publish=False, metric="l2")["version"]
    expected: dict[str, dict[str, list[tuple]]] = {}
    for version in (second, first):
        faiss_versions.publish(eval_catalog, version)
        expected[version] = {text: rounded(in_process(eval_catalog, SEARCH, [text])) for text in QUERIES}
    assert expected[first] != expected[second]  # l2 scores are negated distances: every row differs

    running = start_server(eval_catalog, tmp_path / "serve.log")
    stop = threading.Event()
    try:
        def client(number: int) -> set[str]:
            seen = set()
            with running.connect() as connection:
                while not stop.is_set():
                    text = QUERIES[number % len(QUERIES)]
                    rows = rounded(connection.execute(SEARCH, [text]).fetchall())
                    matches = [version for version in expected if expected[version][text] == rows]
                    assert matches, f"client {number}: a result of neither version for {text!r}: {rows}"
                    seen.update(matches)
            return seen

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(client, number) for number in range(8)]
            for version in (second, first, second):
                flip = subprocess.run([sys.executable, str(PROJECT_DIR / "bootstrap.py"), "publish", version,
                                       "--catalog", str(eval_catalog)], capture_output=True, text=True, timeout=120)
                assert flip.returncode == 0, flip.stderr
                # Let every client run statements on this version before the next flip.
                with running.connect() as probe:
                    assert rounded(probe.execute(SEARCH, [QUERIES[0]]).fetchall()) == expected[version][QUERIES[0]]
            stop.set()
            seen = set().union(*(future.result() for future in clients))
        assert seen == {first, second}
        log = running.log.read_text()
        # The publish rewrote catalog.duckdb (refresh_views): new sessions were served from the new file.
        assert "generation 2" in log
        # One shared index: loaded once at the first search and once per flip, not once per client.
        assert log.count("loaded index version") <= 4
    finally:
        stop.set()
        assert running.stop() == 0


def test_server_stop_leaves_the_catalog_untouched(eval_catalog: Path, tmp_path: Path) -> None:
    before = snapshot(eval_catalog)
    running = start_server(eval_catalog, tmp_path / "serve.log")
    with running.connect() as connection:
        connection.execute(SEARCH, ["fn_3 value"]).fetchall()
        connection.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
    assert running.stop() == 0
    assert snapshot(eval_catalog) == before


def test_no_password_only_on_loopback(eval_catalog: Path) -> None:
    config = serve.ServeConfig(eval_catalog, host="0.0.0.0", password=None)
    with pytest.raises(bootstrap.CatalogError, match="no password is set"):
        serve.check_config(config)
    serve.check_config(dataclasses.replace(config, host="127.0.0.1"))
    serve.check_config(dataclasses.replace(config, password="x"))


def test_allow_writes_writes_the_catalog(eval_catalog: Path, tmp_path: Path) -> None:
    running = start_server(eval_catalog, tmp_path / "serve.log", "--allow-writes")
    try:
        with running.connect() as connection:
            connection.execute("CREATE TABLE notes AS SELECT 'hello' AS note")
            with pytest.raises(psycopg.Error, match="not allowed"):
                connection.execute("ATTACH ':memory:' AS m")
    finally:
        assert running.stop() == 0
    assert in_process(eval_catalog, "SELECT note FROM notes") == [("hello",)]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_quack_serves_duckdb_clients(served_catalog: Path, tmp_path: Path) -> None:
    from codeintel.serve_quack import QUACK_EXTENSIONS, extension_path

    port = free_port()
    running = start_server(served_catalog, tmp_path / "serve.log", "--quack", "--quack-port", str(port))
    client = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    try:
        for name in QUACK_EXTENSIONS:
            client.execute(f"LOAD '{extension_path(name)}'")
        uri = f"quack:localhost:{port}"

        def remote(sql: str) -> list[tuple]:
            return client.execute("SELECT * FROM quack_query(?, ?, token := ?)", [uri, sql, PASSWORD]).fetchall()

        with pytest.raises(duckdb.Error, match="Authentication failed"):
            client.execute("SELECT * FROM quack_query(?, 'SELECT 1', token := 'wrong-token')", [uri])
        client.execute(f"CREATE SECRET (TYPE quack, TOKEN '{PASSWORD}')")
        client.execute(f"ATTACH '{uri}' AS remote")
        assert client.execute("SELECT count(*) FROM remote.chunks").fetchone() == \
            in_process(served_catalog, "SELECT count(*) FROM chunks")[0]
        literal = SEARCH.replace("%s", "'parse a config file'")
        assert rounded(remote(literal)) == rounded(in_process(served_catalog, SEARCH, ["parse a config file"]))
        assert rounded(remote(LOCATED.replace("%s", "'parse a config file'"))) == rounded(remote(literal))
        assert remote("SELECT len(faiss_topk(embed('fn_3 value'), 5))") == [(5,)]
        for refused in ("CREATE TABLE t AS SELECT 1", "SELECT faiss_set_params('nprobe=2')",
                        f"SELECT * FROM quack_stop('{uri}')"):
            with pytest.raises(duckdb.Error, match="Authorization failed"):
                remote(refused)
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            remote("SELECT * FROM read_csv('/etc/passwd')")
    finally:
        client.close()
        assert running.stop() == 0
    log = running.log.read_text()
    assert "refused Quack login" in log and "refused Quack query" in log


def test_password_comes_from_the_file_then_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert serve.read_password(str(secret), {serve.PASSWORD_ENV: "from-env"}) == "from-file"
    assert serve.read_password(None, {serve.PASSWORD_ENV: "from-env"}) == "from-env"
    assert serve.read_password(None, {}) is None
    (tmp_path / "empty").write_text("")
    with pytest.raises(bootstrap.CatalogError, match="empty"):
        serve.read_password(str(tmp_path / "empty"))

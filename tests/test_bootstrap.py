"""bootstrap: registries, view ordering and rewriting, scripts, connections."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

import bootstrap
from codeintel import errors, layout, sqlfiles
from udfs import families
from udfs.registry import UdfSpec, check_unique
from udfs.settings import SettingError


def write_views(directory: Path, views: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in views.items():
        (directory / f"{name}.sql").write_text(f"/* {name} */\nCREATE OR REPLACE VIEW {name} AS {body};\n")
    return directory


def test_duplicate_udf_names_raise() -> None:
    spec = families.all_udf_specs()[0]
    twin = UdfSpec(name=spec.name, function=len, parameters=("VARCHAR",), return_type="BIGINT")
    with pytest.raises(ValueError, match=f"duplicate UDF name '{spec.name}'"):
        check_unique([spec, twin])


def test_views_apply_in_dependency_order(tmp_path: Path) -> None:
    # Names sort against the dependency order: a reads b, b reads c.
    views = write_views(tmp_path / "views", {
        "a_top": "SELECT x + 1 AS x FROM b_middle",
        "b_middle": "WITH base AS (SELECT x FROM c_base) SELECT x * 2 AS x FROM base",
        "c_base": "SELECT 1 AS x",
    })
    parsed = sqlfiles.read_view_files(views)
    order = sqlfiles.view_order(parsed, [])
    assert order.index("c_base") < order.index("b_middle") < order.index("a_top")
    connection = duckdb.connect()
    assert sqlfiles.apply_views(connection, tmp_path, views) == order
    assert connection.execute("SELECT x FROM a_top").fetchall() == [(3,)]


def test_view_cycle_names_the_files(tmp_path: Path) -> None:
    views = write_views(tmp_path / "views", {"p": "SELECT * FROM q", "q": "SELECT * FROM p"})
    with pytest.raises(errors.CatalogError, match=r"views form a cycle: .*(p\.sql -> q\.sql|q\.sql -> p\.sql)"):
        sqlfiles.view_order(sqlfiles.read_view_files(views), [])


def test_view_reading_unknown_relation_names_the_file(tmp_path: Path) -> None:
    views = write_views(tmp_path / "views", {"lonely": "SELECT * FROM nowhere_table"})
    with pytest.raises(errors.CatalogError, match=r"lonely\.sql: reads unknown relation\(s\) nowhere_table"):
        sqlfiles.view_order(sqlfiles.read_view_files(views), [])
    # An existing table is a known relation.
    assert sqlfiles.view_order(sqlfiles.read_view_files(views), ["nowhere_table"]) == ["lonely"]


def test_view_file_must_be_named_after_its_view(tmp_path: Path) -> None:
    (tmp_path / "wrong.sql").write_text("CREATE VIEW right_name AS SELECT 1 AS x;")
    with pytest.raises(errors.CatalogError, match=r"defines view 'right_name'"):
        sqlfiles.parse_view_file(tmp_path / "wrong.sql")


def test_view_over_missing_files_waits_with_its_dependents(tmp_path: Path) -> None:
    views = write_views(tmp_path / "views", {
        "over_file": "SELECT * FROM read_parquet('later/data.parquet')",
        "over_view": "SELECT count(*) AS n FROM over_file",
        "plain": "SELECT 42 AS answer",
    })
    connection = duckdb.connect()
    assert sqlfiles.apply_views(connection, tmp_path, views) == ["plain"]
    (tmp_path / "later").mkdir()
    connection.execute("COPY (SELECT 1 AS v UNION ALL SELECT 2) TO ?", [str(tmp_path / "later/data.parquet")])
    assert sorted(sqlfiles.apply_views(connection, tmp_path, views)) == ["over_file", "over_view", "plain"]
    assert connection.execute("SELECT n FROM over_view").fetchall() == [(2,)]


def test_reader_paths_become_absolute_and_stay_quoted(tmp_path: Path) -> None:
    catalog = tmp_path / "it's here"
    sql = ("SELECT * FROM read_json('store/m.jsonl', columns = {a: 'VARCHAR'}) "
           "JOIN read_parquet(['x/1.parquet', '/abs/2.parquet']) USING (a) WHERE a = 'store/m.jsonl'")
    rewritten = sqlfiles.absolutize_reader_paths(sql, catalog)
    quoted_root = str(catalog).replace("'", "''")
    assert f"read_json('{quoted_root}/store/m.jsonl', columns = {{a: 'VARCHAR'}})" in rewritten
    assert f"['{quoted_root}/x/1.parquet', '/abs/2.parquet']" in rewritten
    # A string that is not a reader's path argument is left alone.
    assert rewritten.endswith("WHERE a = 'store/m.jsonl'")


def test_script_parameters_are_bound_not_spliced(tmp_path: Path) -> None:
    script = tmp_path / "echo.sql"
    script.write_text("SELECT getvariable('value') AS value, getvariable('n') + 1 AS next;")
    connection = duckdb.connect()
    hostile = "x'); DROP TABLE t; --"
    result = sqlfiles.run_script(connection, script, {"value": hostile, "n": 41})
    assert result.fetchall() == [(hostile, 42)]
    with pytest.raises(errors.CatalogError, match="not an identifier"):
        sqlfiles.run_script(connection, script, {"bad name": 1})


def test_script_error_names_the_statement(tmp_path: Path) -> None:
    script = tmp_path / "broken.sql"
    script.write_text("SELECT 1;\nSELECT error('the second statement fails');\n")
    with pytest.raises(errors.CatalogError, match=r"broken\.sql, statement 2: .*the second statement fails"):
        sqlfiles.run_script(duckdb.connect(), script)


def test_read_only_connect_needs_an_existing_catalog(tmp_path: Path) -> None:
    with pytest.raises(errors.CatalogError, match="no catalog at .*bootstrap.py ingest"):
        bootstrap.connect(tmp_path / "absent", read_only=True)


def test_read_only_connection_reads_views(synthetic_catalog: Path) -> None:
    bootstrap.connect(synthetic_catalog).close()
    connection = bootstrap.connect(synthetic_catalog, read_only=True)
    try:
        assert connection.execute("SELECT count(*) FROM chunks").fetchone() == (2000,)
    finally:
        connection.close()


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="unknown setting.*no_such_setting.*Known settings: threads, embed_model"):
        bootstrap.connect(tmp_path / "new", settings={"no_such_setting": 1})
    assert not (tmp_path / "new").exists()


def test_stock_duckdb_client_reads_the_catalog(synthetic_catalog: Path) -> None:
    """The persisted views need nothing of ours: a bare duckdb process queries them."""
    bootstrap.connect(synthetic_catalog).close()
    program = textwrap.dedent("""
        import sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print(con.execute("SELECT count(*) FROM chunks").fetchone()[0])
        print(con.execute("SELECT count(*) FROM modules").fetchone()[0])
        print(con.execute("SELECT typeof(embedding) FROM chunks LIMIT 1").fetchone()[0])
    """)
    output = subprocess.run(
        [sys.executable, "-I", "-c", program, str(synthetic_catalog / layout.CATALOG_DB)],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()
    assert output == ["2000", "4", "FLOAT[384]"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bootstrap.py", *args], input=stdin, capture_output=True, text=True,
                          cwd=layout.PROJECT_DIR)


def test_cli_sql_prints_the_script_result(synthetic_catalog: Path, tmp_path: Path) -> None:
    script = tmp_path / "count.sql"
    script.write_text("SELECT count(*) AS chunk_rows, getvariable('label') AS label FROM chunks;")
    completed = run_cli("sql", str(script), "--catalog", str(synthetic_catalog), "--param", "label=synthetic")
    assert completed.returncode == 0, completed.stderr
    assert "chunk_rows" in completed.stdout and "2000" in completed.stdout and "synthetic" in completed.stdout


def test_cli_sql_reports_a_failing_statement_cleanly(synthetic_catalog: Path, tmp_path: Path) -> None:
    script = tmp_path / "bad.sql"
    script.write_text("SELECT 1;\nSELECT * FROM no_such_relation;\n")
    completed = run_cli("sql", str(script), "--catalog", str(synthetic_catalog))
    assert completed.returncode == 2
    assert "bad.sql, statement 2" in completed.stderr and "no_such_relation" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_shell_runs_statements_from_stdin(synthetic_catalog: Path) -> None:
    completed = run_cli("shell", "--catalog", str(synthetic_catalog),
                        stdin="SELECT count(*) AS n\nFROM chunks;\n"
                              "SELECT nonsense_column FROM chunks;\nSELECT 7 AS seven;\n")
    assert completed.returncode == 0, completed.stderr
    assert "2000" in completed.stdout and "seven" in completed.stdout
    assert "nonsense_column" in completed.stderr


def test_sql_words_reads_identifiers_and_keywords_only() -> None:
    assert sqlfiles.sql_words("") == set()
    assert sqlfiles.sql_words('SELECT "Faiss_TopK"(q, 10)::INTEGER[] FROM t -- embed\nWHERE x = \'view\'') == {
        "select", "faiss_topk", "q", "integer", "from", "t", "where", "x"}

"""The keyed chunk_locations table: where each chunk of the current store is (id, uri, bytes, lines).

Oracle: the store's own Parquet parts read by pyarrow (``store_schema.read_live_chunks``), not
the chunks view the table is refreshed from.  Read as a stock DuckDB client reads it (plain
``duckdb.connect`` of catalog.duckdb, none of our Python).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import layout
from tests.test_incremental import MORE_FILES, repo, settle  # noqa: F401  (fixture)
from udfs import store_schema

LOCATION_NAMES = [name for name, _ in store_schema.LOCATION_COLUMNS]


def stock(catalog: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(catalog / layout.CATALOG_DB), read_only=True)


def store_locations(catalog: Path) -> pa.Table:
    """The oracle: the current store's live rows from its Parquet parts, location columns, by id."""
    table = store_schema.read_live_chunks(catalog / "store" / "CURRENT", LOCATION_NAMES)
    return table.sort_by("id")


def table_locations(catalog: Path) -> tuple[pa.Table, list[tuple]]:
    """chunk_locations by id, and the audit's rows, as a stock client reads them."""
    with stock(catalog) as connection:
        table = connection.execute("SELECT * FROM chunk_locations ORDER BY id").to_arrow_table()
        audit = connection.execute("SELECT id, problem FROM v_chunk_locations_audit ORDER BY id").fetchall()
    return table, audit


def assert_matches_store(catalog: Path) -> None:
    table, audit = table_locations(catalog)
    oracle = store_locations(catalog)
    assert table.column_names == LOCATION_NAMES
    assert table.cast(oracle.schema).equals(oracle)
    assert audit == []
    with stock(catalog) as connection:
        (version,) = connection.execute("SELECT store_version FROM chunk_locations_store").fetchone()
    assert version == (catalog / "store" / "CURRENT").resolve().name


def test_follows_every_store_change(repo: Path, tmp_path: Path,  # noqa: F811
                                    caplog: pytest.LogCaptureFixture) -> None:
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    assert_matches_store(catalog)
    assert store_locations(catalog).num_rows > 5

    # An incremental ingest: one file changed (new part), one deleted (deleted ids).
    (repo / "lib/mod_0.py").write_text(MORE_FILES["lib/mod_0.py"].replace("value * 3\n", "value * 3 + 1\n"))
    (repo / "lib/mod_1.py").unlink()
    before = set(store_locations(catalog).column("id").to_pylist())
    with caplog.at_level(logging.INFO, logger="codeintel.chunk_locations"):
        second = bootstrap.ingest(repo, catalog)
    assert second.write.startswith("incremental write")
    assert_matches_store(catalog)
    # Only the rows that changed were touched, not the table rebuilt.
    after = set(store_locations(catalog).column("id").to_pylist())
    assert f"({len(before - after)} rows deleted, {len(after - before)} inserted)" in caplog.text
    assert 0 < len(after - before) < len(after)
    assert not any(uri == "lib/mod_1.py" for uri in table_locations(catalog)[0].column("uri").to_pylist())

    # An import of the user's own chunks replaces the store.
    own = store_schema.read_live_chunks(second.store, store_schema.column_names()).slice(0, 4)
    pq.write_table(own, tmp_path / "own.parquet")
    bootstrap.import_chunks(tmp_path / "own.parquet", catalog)
    assert_matches_store(catalog)
    assert table_locations(catalog)[0].num_rows == 4


def test_the_key_is_unique_and_joins_probe_it(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    with stock(catalog) as connection:
        constraints = connection.execute(
            "SELECT is_unique FROM duckdb_indexes() WHERE table_name = 'chunk_locations' "
            "AND expressions = '[id]'").fetchall()
        assert constraints == [(True,)]
        first = connection.execute("SELECT id FROM chunk_locations ORDER BY id LIMIT 1").fetchone()
        # The hits' join probes the key: DuckDB pushes the join's ids into the scan at run time,
        # so EXPLAIN ANALYZE (not EXPLAIN) shows the index scan.
        ids = [row[0] for row in connection.execute("SELECT id FROM chunk_locations LIMIT 3").fetchall()]
        plan = connection.execute("EXPLAIN ANALYZE SELECT l.uri FROM (SELECT unnest(?::BIGINT[]) AS id) AS h "
                                  "JOIN chunk_locations AS l ON l.id = h.id", [ids]).fetchall()[0][1]
        assert "Type: Index Scan" in plan
    with bootstrap.open_catalog(catalog) as session, pytest.raises(duckdb.ConstraintException):
        session.connection.execute("INSERT INTO chunk_locations (id, uri) VALUES (?, 'dup.py')", [first[0]])


def test_a_store_flip_behind_the_catalog_shows_in_the_audit_until_a_writer_runs(
        repo: Path, tmp_path: Path) -> None:  # noqa: F811
    """As after a writer killed between publishing a store version and catalog.duckdb."""
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    (repo / "lib/mod_2.py").unlink()
    bootstrap.ingest(repo, catalog)
    assert_matches_store(catalog)
    versions = layout.store_versions(catalog)
    versions.publish(first.store.name)  # the store moves back; catalog.duckdb does not know
    _, audit = table_locations(catalog)
    missing = [chunk_id for chunk_id, problem in audit if problem == "missing from chunk_locations"]
    expected = set(store_locations(catalog).column("id").to_pylist()) - set(
        table_locations(catalog)[0].column("id").to_pylist())
    assert expected and sorted(missing) == sorted(expected)
    assert {problem for _, problem in audit} == {"missing from chunk_locations"}

    done = subprocess.run([sys.executable, "bootstrap.py", "views", "--catalog", str(catalog)],
                          cwd=layout.PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_matches_store(catalog)


def test_hits_joined_to_it_equal_hits_joined_to_chunks(synthetic_catalog: Path) -> None:
    bootstrap.build_index(synthetic_catalog, "flat")
    with bootstrap.open_catalog(synthetic_catalog):
        pass  # a writing session: synthetic_catalog's store was written without one
    connection = bootstrap.connect(synthetic_catalog, read_only=True)
    try:
        for text in ("parse a config file", "retry with backoff"):
            rows = {}
            for relation in ("chunks", "chunk_locations"):
                rows[relation] = connection.execute(
                    f"SELECT h.rank, h.chunk_id, c.uri, c.start_line, c.end_line "
                    f"FROM faiss_search(embed(?), k := 25) AS h JOIN {relation} AS c ON c.id = h.chunk_id "
                    f"ORDER BY h.rank", [text]).fetchall()
            assert len(rows["chunks"]) == 25
            assert rows["chunk_locations"] == rows["chunks"]
    finally:
        connection.close()


def test_the_audit_view_compares_the_schemas_columns(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    """views/v_chunk_locations_audit.sql names the location columns itself (a view file takes no
    variables): they must be store_schema's, in order."""
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    with stock(catalog) as connection:
        view_sql = connection.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'v_chunk_locations_audit'"
                                      ).fetchone()[0]
    selected = re.search(r"SELECT\s+(c\.\w+(?:\s*,\s*c\.\w+)*)\s+FROM\s+chunks", view_sql)
    assert selected is not None
    assert [name.strip()[2:] for name in selected.group(1).split(",")] == LOCATION_NAMES


def test_a_table_of_other_columns_is_made_again(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    """As an older release left it (with language, kind and symbols): the next writer resets and fills it."""
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    with bootstrap.open_catalog(catalog) as session:
        session.connection.execute("ALTER TABLE chunk_locations ADD COLUMN kind VARCHAR")
    with stock(catalog) as connection:
        assert "kind" in [row[0] for row in connection.execute("DESCRIBE chunk_locations").fetchall()]
    with bootstrap.open_catalog(catalog):
        pass
    assert_matches_store(catalog)


def test_a_foreign_store_table_is_replaced(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    """A chunk_locations_store that is not this module's (another tool's, a hand edit) is not trusted."""
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    with bootstrap.open_catalog(catalog) as session:
        session.connection.execute("CREATE OR REPLACE TABLE chunk_locations_store AS SELECT 1 AS something_else")
        session.connection.execute("DELETE FROM chunk_locations")
    with bootstrap.open_catalog(catalog):
        pass
    assert_matches_store(catalog)

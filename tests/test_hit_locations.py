"""faiss_search locates its hits itself (udfs/hit_locations.py): uri, bytes and lines of the current store.

Oracle: the store's own Parquet parts read by pyarrow (``store_schema.read_live_chunks``), not
the DuckDB read the locations come from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import bootstrap
from codeintel import layout
from tests.test_incremental import MORE_FILES, repo, settle  # noqa: F401  (fixture)
from udfs import hit_locations, store_schema
from udfs.context import CatalogContext, pinned

LOCATED = ", ".join(hit_locations.LOCATED_FIELDS)


def store_rows(catalog: Path) -> dict[int, tuple]:
    """chunk id -> (uri, start_byte, end_byte, start_line, end_line) from the current store's parts."""
    table = store_schema.read_live_chunks(layout.current_store(catalog), ["id", *hit_locations.LOCATED_FIELDS])
    columns = [table.column(name).to_pylist() for name in table.column_names]
    return {row[0]: tuple(row[1:]) for row in zip(*columns, strict=True)}


def cli(*arguments: str) -> None:
    done = subprocess.run([sys.executable, "bootstrap.py", *arguments], cwd=layout.PROJECT_DIR,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def located_hits(connection: duckdb.DuckDBPyConnection, text: str, k: int, k_factor: float = 1.0) -> list[tuple]:
    return connection.execute(
        f"SELECT rank, chunk_id, {LOCATED} FROM faiss_search(embed(?), k := ?, k_factor := ?)",
        [text, k, k_factor]).fetchall()


def test_every_hit_is_where_the_store_says(synthetic_catalog: Path) -> None:
    bootstrap.build_index(synthetic_catalog, "flat")
    expected = store_rows(synthetic_catalog)
    connection = bootstrap.connect(synthetic_catalog, read_only=True)
    try:
        for text, k, k_factor in (("parse a config file", 1, 1.0), ("retry with backoff", 40, 1.0),
                                  ("open a socket", 10, 4.0)):
            rows = located_hits(connection, text, k, k_factor)
            assert [rank for rank, *_ in rows] == list(range(1, k + 1))
            for _, chunk_id, *where in rows:
                assert tuple(where) == expected[chunk_id]
        # k above the store size: every chunk, each located.
        everything = located_hits(connection, "parse a config file", 5000)
        assert {chunk_id: tuple(where) for _, chunk_id, *where in everything} == expected
    finally:
        connection.close()


def test_the_hits_follow_the_store_and_unheld_ones_have_no_location(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    """A reader's faiss_search reads store/CURRENT per call: after an incremental ingest the hits are
    located in the new version; with the store rolled back behind the index (as a writer killed
    between the two publishes leaves it), the hits the store does not hold get NULL locations,
    what a LEFT JOIN to chunks gives, and the rest keep theirs."""
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    bootstrap.build_index(catalog, "flat")
    connection = bootstrap.connect(catalog, read_only=True)
    try:
        everything = len(store_rows(catalog)) + 50
        before = {chunk_id: tuple(where) for _, chunk_id, *where in located_hits(connection, "value", everything)}
        assert before == store_rows(catalog)

        # One file changed (its chunks get new ids and lines), one deleted.
        source = MORE_FILES["lib/mod_0.py"]
        (repo / "lib/mod_0.py").write_text("# a comment line moves every chunk down\n" + source)
        (repo / "lib/mod_1.py").unlink()
        # Another process writes, as beside a live reader.
        cli("ingest", str(repo), "--catalog", str(catalog))
        cli("build", "--catalog", str(catalog), "--family", "flat")
        after = {chunk_id: tuple(where) for _, chunk_id, *where in located_hits(connection, "value", everything)}
        assert after == store_rows(catalog) != before
        assert not any(uri == "lib/mod_1.py" for uri, *_ in after.values())

        # The store goes back to the first version; the index (built on the second) does not.
        layout.store_versions(catalog).publish(first.store.name)
        held = store_rows(catalog)
        rows = located_hits(connection, "value", everything)
        orphans = [chunk_id for _, chunk_id, *where in rows if chunk_id not in held]
        assert orphans, "the second store's new chunks are not in the first"
        for _, chunk_id, *where in rows:
            assert tuple(where) == held.get(chunk_id, (None,) * len(hit_locations.LOCATED_FIELDS))
        oracle = connection.execute(
            f"SELECT h.chunk_id, c.uri, c.start_line FROM faiss_search(embed('value'), k := {everything}) AS h "
            "LEFT JOIN chunks AS c ON c.id = h.chunk_id ORDER BY h.rank").fetchall()
        assert oracle == [(chunk_id, uri, start_line) for _, chunk_id, uri, _, _, start_line, _ in rows]
    finally:
        connection.close()


def test_a_pinned_statement_keeps_the_store_version_it_met_first(repo: Path, tmp_path: Path) -> None:  # noqa: F811
    catalog = tmp_path / "catalog"
    first = bootstrap.ingest(repo, catalog)
    (repo / "lib/mod_1.py").unlink()
    second = bootstrap.ingest(repo, catalog)
    context = CatalogContext(catalog)
    with pinned(context):
        met = hit_locations.current_locations(context, "faiss_search").store_version
        assert met == second.store.name
        layout.store_versions(catalog).publish(first.store.name)
        assert hit_locations.current_locations(context, "faiss_search").store_version == met
    assert hit_locations.current_locations(context, "faiss_search").store_version == first.store.name


def test_no_store_locates_nothing(tmp_path: Path) -> None:
    located = hit_locations.current_locations(CatalogContext(tmp_path), "faiss_search")
    assert located.store_version is None
    assert located.locate(pa.array([1, 2], pa.int64()).to_numpy()) == [[None, None]] * len(
        hit_locations.LOCATED_FIELDS)


def test_an_unreadable_store_part_is_named_with_the_fix(synthetic_catalog: Path) -> None:
    bootstrap.build_index(synthetic_catalog, "flat")
    part = store_schema.chunk_parts(layout.current_store(synthetic_catalog))[0]
    part.unlink()  # a hard link may share the file with another version: write a new one
    part.write_bytes(b"not parquet")
    refusal = r"faiss_search: cannot read where the chunks of store version \S+ are .*; re-ingest the repository"
    with bootstrap.connect(synthetic_catalog, read_only=True) as connection, pytest.raises(duckdb.Error,
                                                                                           match=refusal):
        connection.execute("SELECT * FROM faiss_search(embed('x'), k := 3)").fetchall()


def test_locate_by_hand() -> None:
    """Ids found, missing (between, before and after the stored ones) and NULL values of an imported store."""
    table = pa.table({
        "id": pa.array([1, 5, 9], pa.int64()), "uri": pa.array(["a.py", None, "b.py"]),
        "start_byte": pa.array([0, None, 30], pa.int64()), "end_byte": pa.array([10, 20, 40], pa.int64()),
        "start_line": pa.array([1, 2, 3], pa.int32()), "end_line": pa.array([1, 2, 4], pa.int32())})
    located = hit_locations.StoreLocations.of_table("v", table)
    assert located.locate(pa.array([9, 5, 7, 1, 0, 12], pa.int64()).to_numpy()) == [
        ["b.py", None, None, "a.py", None, None],
        [30, None, None, 0, None, None],
        [40, 20, None, 10, None, None],
        [3, 2, None, 1, None, None],
        [4, 2, None, 1, None, None],
    ]

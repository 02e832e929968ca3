"""The keyed ``chunk_locations`` table of catalog.duckdb, and applying the catalog's views with it.

Ids from elsewhere (a pool, a saved run, a stock client's own list) are joined to the chunks for
uri and lines.  Through the ``chunks`` view that opens the store's Parquet parts and their
metadata on every statement: about 3 ms at 200k chunks and 8 ms at 1M for ten ids; a DuckDB
table keyed by id answers in about 1 ms (bench/bench_latency.py), and stock clients and BI tools,
which cannot call our UDFs, read it too.  So catalog.duckdb keeps where each chunk is
(``store_schema.LOCATION_COLUMNS``: id, uri, bytes and lines), keyed by id, and
``chunk_locations_store`` names the store version those rows are of.  (``faiss_search`` locates
its own hits in memory, udfs/hit_locations.py, from the same store files.)

Every writing session brings the table to the current store version
(:func:`apply_catalog_objects`), reading only what changed since the version it holds: after an
ingest or import, and after a writer that was killed between publishing a store version and
catalog.duckdb (the audit view ``v_chunk_locations_audit`` lists the rows that differ until
then).  Every writing session copies catalog.duckdb (codeintel/catalog_db.py), and every
CHECKPOINT rewrites a changed table's last row group, so the table holds no more than that:
content, symbols and embeddings stay in the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from codeintel.layout import SQL_DIR, current_store, read_store_manifest, store_versions
from codeintel.sqlfiles import apply_views, run_script
from udfs import store_schema

LOG = logging.getLogger(__name__)

TABLE = "chunk_locations"
STORE_TABLE = "chunk_locations_store"
RESET_SCRIPT = SQL_DIR / "reset_chunk_locations.sql"
UPDATE_SCRIPT = SQL_DIR / "update_chunk_locations.sql"


def location_schema() -> pa.Schema:
    return pa.schema(list(store_schema.LOCATION_COLUMNS))


def apply_catalog_objects(connection: duckdb.DuckDBPyConnection, catalog: Path) -> list[str]:
    """Apply the views (:func:`codeintel.sqlfiles.apply_views`) and bring ``chunk_locations`` to the
    current store version; return the views applied.  For a read-write connection of a writing session."""
    if table_columns(connection) != [name for name, _ in store_schema.LOCATION_COLUMNS]:
        # None yet, or an older release's: empty until the refresh fills it, and made first so
        # that the audit view applies.
        reset(connection)
    # Before the views: the refresh reads the store's files, not the views, and applying the
    # views makes the next script read every definition again (sqlfiles.core_owning_names).
    refresh(connection, catalog)
    return apply_views(connection, catalog)


def reset(connection: duckdb.DuckDBPyConnection) -> None:
    """An empty ``chunk_locations``, of no store version (``sql/reset_chunk_locations.sql``)."""
    with registered(connection, location_schema()):
        run_script(connection, RESET_SCRIPT)


def refresh(connection: duckdb.DuckDBPyConnection, catalog: Path) -> bool:
    """Bring ``chunk_locations`` to the current store version unless it is there already; return
    whether it changed (``sql/update_chunk_locations.sql``).

    When the current version holds every part of the version the table is of, and hides every
    id that one hid (an incremental ingest, or several), only the parts added since are read and
    only the ids hidden since deleted: an ingest that changed 1% of the chunks costs 1% of a
    rebuild.  Otherwise (the first time, an import, a compaction) the table is reset and filled
    from every part.  No store yet: it stays empty.
    """
    store = current_store(catalog)
    if store is None:
        return False
    held = table_store_version(connection)
    if held == store.name:
        return False
    parts = store_schema.chunk_parts(store)
    deleted_ids = store / store_schema.DELETED_IDS_FILE
    before = store_versions(catalog).path(held) if held is not None else None
    added = added_parts(before, store) if before is not None else None
    if added is None:
        reset(connection)
        if not parts:
            return True  # a store of no chunks: nothing to insert, and nothing for read_parquet to read
        added, deleted_before = parts, deleted_ids
    else:
        deleted_before = before / store_schema.DELETED_IDS_FILE
    deleted, inserted = run_script(connection, UPDATE_SCRIPT, {
        "location_columns": [name for name, _ in store_schema.LOCATION_COLUMNS],
        "parts": [str(part) for part in added],
        "deleted_ids": str(deleted_ids),
        "deleted_ids_before": str(deleted_before),
        "store_version": store.name,
        "store_fingerprint": read_store_manifest(store).get("fingerprint"),
    }).fetchone()
    LOG.info("chunk_locations: store version %s (%d rows deleted, %d inserted)", store.name, deleted, inserted)
    return True


def added_parts(before: Path, now: Path) -> list[Path] | None:
    """The parts of store version ``now`` that ``before`` lacks, when ``now`` shares every part of
    ``before`` (the same files: hard links) and hides every id it hid; otherwise None."""
    if not (before / store_schema.DELETED_IDS_FILE).is_file():
        return None  # gone (store versions are garbage-collected) or never complete
    now_parts = {part.name: part for part in store_schema.chunk_parts(now)}
    before_parts = store_schema.chunk_parts(before)
    if not before_parts or any(part.name not in now_parts or not os.path.samefile(part, now_parts[part.name])
                               for part in before_parts):
        return None
    hidden_before = store_schema.deleted_ids(before)
    if len(hidden_before) and not pc.all(pc.is_in(hidden_before, value_set=store_schema.deleted_ids(now))).as_py():
        return None
    added = [part for name, part in sorted(now_parts.items()) if name not in {p.name for p in before_parts}]
    return added or None


def table_columns(connection: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "ORDER BY ordinal_position", [TABLE]).fetchall()]


def table_store_version(connection: duckdb.DuckDBPyConnection) -> str | None:
    """The store version ``chunk_locations`` holds, or None (never filled)."""
    if not relation_exists(connection, STORE_TABLE):
        return None
    try:
        row = connection.execute(f"SELECT store_version FROM {STORE_TABLE}").fetchone()
    except duckdb.Error:  # not the table this module writes: refill from scratch
        return None
    return row[0] if row else None


def relation_exists(connection: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        [name]).fetchone()[0])


@contextlib.contextmanager
def registered(connection: duckdb.DuckDBPyConnection, schema: pa.Schema) -> Iterator[None]:
    """``schema`` as an empty Arrow table named ``chunk_location_schema`` while the block runs."""
    connection.register("chunk_location_schema", schema.empty_table())
    try:
        yield
    finally:
        connection.unregister("chunk_location_schema")

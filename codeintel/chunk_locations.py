"""The keyed ``chunk_locations`` table of catalog.duckdb, and applying the catalog's views with it.

A one-query statement joins its ten hits to the chunks for uri and lines.  Through the
``chunks`` view that opens the store's Parquet parts and their metadata on every statement,
about 2.5 ms at 200k chunks; a DuckDB table keyed by id answers in about 1 ms
(bench/bench_latency.py).  So catalog.duckdb keeps every chunk but its content and embedding
(``store_schema.LOCATION_COLUMNS``: 8% of the store's bytes at 384 dimensions), keyed by id, and
names the store version those rows are of in ``chunk_locations_store``.

Every writing session applies the views through :func:`apply_catalog_objects`, which refreshes
the table when its store version is not the current one: after an ingest or import, and after a
writer that was killed between publishing a store version and catalog.duckdb (the audit view
``v_chunk_locations_audit`` lists the rows that differ until then).  The table lives in
catalog.duckdb, which every writing session copies (codeintel/catalog_db.py), so it holds no
content or embeddings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from codeintel.layout import SQL_DIR, current_store, read_store_manifest
from codeintel.sqlfiles import apply_views, run_script
from udfs import store_schema

LOG = logging.getLogger(__name__)

TABLE = "chunk_locations"
STORE_TABLE = "chunk_locations_store"
REFRESH_SCRIPT = SQL_DIR / "refresh_chunk_locations.sql"


def location_schema() -> pa.Schema:
    return pa.schema(list(store_schema.LOCATION_COLUMNS))


def apply_catalog_objects(connection: duckdb.DuckDBPyConnection, catalog: Path) -> list[str]:
    """Apply the views (:func:`codeintel.sqlfiles.apply_views`) and bring ``chunk_locations`` to the
    current store version; return the views applied.  For a read-write connection of a writing session."""
    if not relation_exists(connection, TABLE):
        # Empty until the store has chunks; created first so the audit view can be applied.
        with registered(connection, location_schema()):
            connection.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM chunk_location_schema")
    applied = apply_views(connection, catalog)
    refresh(connection, catalog)
    return applied


def refresh(connection: duckdb.DuckDBPyConnection, catalog: Path) -> bool:
    """Rebuild ``chunk_locations`` from the ``chunks`` view unless it is of the current store version
    already; return whether it was rebuilt.  No store yet: the table stays empty."""
    store = current_store(catalog)
    if store is None or not relation_exists(connection, "chunks"):
        return False
    if table_store_version(connection) == store.name:
        return False
    manifest = read_store_manifest(store)
    with registered(connection, location_schema()):
        run_script(connection, REFRESH_SCRIPT,
                   {"store_version": store.name, "store_fingerprint": manifest.get("fingerprint")})
    LOG.info("chunk_locations: refreshed for store version %s", store.name)
    return True


def table_store_version(connection: duckdb.DuckDBPyConnection) -> str | None:
    """The store version ``chunk_locations`` holds, or None (never filled)."""
    if not relation_exists(connection, STORE_TABLE):
        return None
    row = connection.execute(f"SELECT store_version FROM {STORE_TABLE}").fetchone()
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

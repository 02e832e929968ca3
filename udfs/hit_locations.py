"""Where ``faiss_search``'s hits are: the published store's chunk locations, in memory.

``faiss_search`` returns each hit's uri, bytes and lines itself, so a one-query statement needs
no join.  Joining ten hits to the ``chunks`` view opens the store's Parquet parts on every
statement (3.5 ms at 200k chunks, 8.4 ms at 1M), and to catalog.duckdb's keyed
``chunk_locations`` table still costs 0.6-0.8 ms, more than the search; looking ten ids up in
sorted numpy arrays here costs microseconds (bench/bench_latency.py).

The locations are :data:`udfs.store_schema.LOCATION_COLUMNS` of ``store/CURRENT``
(:func:`udfs.store_schema.read_locations`), read by the first search that meets a store version
(0.04 s at 200k chunks, 0.2 s at 1M) and kept in the connection's context until CURRENT moves:
the same rows as the ``chunks`` view and ``chunk_locations``.  A hit the current store does not
hold (an index older than the store's last change, listed by ``v_faiss_orphan_ids``) gets NULL
locations, as a LEFT JOIN to ``chunks`` would give it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import duckdb
import numpy as np
import pyarrow as pa

from udfs import store_schema
from udfs.context import CatalogContext, statement_resource
from udfs.registry import UdfError
from udfs.versioned_dir import VersionedDir

logger = logging.getLogger("codeintel.faiss")

RESOURCE_KEY = "store.hit_locations"
VERSIONS_KEY = "store.versions"  # made once per context: every search call reads its CURRENT
#: The location columns after ``id``, in file order: what each hit gets beside rank, id and score.
LOCATED_FIELDS: tuple[str, ...] = tuple(name for name, _ in store_schema.LOCATION_COLUMNS if name != "id")
#: The integer fields among them (StoreLocations codes the uri).
_NUMBER_FIELDS = tuple(name for name in LOCATED_FIELDS if name != "uri")
_SQL_TYPES = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR"}
#: The SQL type of those fields, for the hits' STRUCT.
LOCATED_FIELD_TYPES: tuple[tuple[str, str], ...] = tuple(
    (name, _SQL_TYPES[kind]) for name, kind in store_schema.LOCATION_COLUMNS if name != "id")


@dataclasses.dataclass(frozen=True)
class StoreLocations:
    """One store version's chunk locations, sorted by id: numpy columns, the uri as codes into
    the store's few distinct uris (a file has many chunks)."""

    store_version: str | None  # None: no store is published
    ids: np.ndarray  # int64, ascending
    uri_codes: np.ndarray  # per id, the position of its uri in ``uris``
    uris: list[str]
    numbers: tuple[np.ndarray, ...]  # _NUMBER_FIELDS, row-aligned with ids

    @classmethod
    def empty(cls) -> StoreLocations:
        return cls.of_table(None, pa.schema(list(store_schema.LOCATION_COLUMNS)).empty_table())

    @classmethod
    def of_table(cls, store_version: str | None, table: pa.Table) -> StoreLocations:
        """From a table of LOCATION_COLUMNS sorted by id."""
        uris = table.column("uri").combine_chunks().dictionary_encode()
        # A NULL uri (a hand-made import) keeps its NULL: code len(uris) names the None appended.
        codes = uris.indices.fill_null(len(uris.dictionary)).to_numpy()
        return cls(store_version, table.column("id").to_numpy(), codes, [*uris.dictionary.to_pylist(), None],
                   tuple(_numbers(table.column(name)) for name in _NUMBER_FIELDS))

    def locate(self, chunk_ids: np.ndarray) -> list[list]:
        """Per LOCATED_FIELDS a list over ``chunk_ids``: the chunk's value, None where the store lacks the id.

        Ten ids take about 10 us: lists of Python values, as DuckDB's native UDF returns them.
        """
        if not len(self.ids):
            return [[None] * len(chunk_ids) for _ in LOCATED_FIELDS]
        rows = np.minimum(np.searchsorted(self.ids, chunk_ids), len(self.ids) - 1)
        found = self.ids[rows] == chunk_ids
        uris = [self.uris[code] for code in self.uri_codes[rows].tolist()]
        numbers = [column[rows].tolist() for column in self.numbers]
        if not found.all():
            missing = np.flatnonzero(~found).tolist()
            for values in (uris, *numbers):
                for position in missing:
                    values[position] = None
        by_field = {"uri": uris, **dict(zip(_NUMBER_FIELDS, numbers, strict=True))}
        return [by_field[name] for name in LOCATED_FIELDS]


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """An integer column as numpy; with NULLs (an imported store may lack lines), objects keeping None."""
    if column.null_count:
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy()


def current_locations(context: CatalogContext, function: str) -> StoreLocations:
    """The locations of ``store/CURRENT`` (one readlink per call), read when the version is new to
    this context; inside :func:`udfs.context.pinned`, the version the statement met first."""
    return statement_resource(context, RESOURCE_KEY, lambda: _published(context, function))


def _published(context: CatalogContext, function: str) -> StoreLocations:
    versions = context.resource(VERSIONS_KEY, lambda: store_schema.store_versions(context.catalog_dir))
    version = versions.current()
    return context.versioned(RESOURCE_KEY, version, lambda: _read(version, versions, function))


def _read(version: str | None, versions: VersionedDir, function: str) -> StoreLocations:
    if version is None:
        return StoreLocations.empty()
    started = time.perf_counter()
    try:
        table = store_schema.read_locations(versions.path(version))
    except (OSError, duckdb.Error) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UdfError(
            f"{function}: cannot read where the chunks of store version {version} are ({first_line}); "
            "re-ingest the repository, or roll the store back to a good version"
        ) from error
    logger.info("%s: located %d chunks of store version %s in %.2f s", function, table.num_rows, version,
                time.perf_counter() - started)
    return StoreLocations.of_table(version, table)

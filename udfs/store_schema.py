"""The chunk store's columns and files, defined once.

A store version's chunks are one or more Parquet parts (:data:`CHUNK_PARTS_GLOB`) minus the
ids listed in :data:`DELETED_IDS_FILE`:

* a full write (first ingest, import, or compaction) writes one part, ``chunks.parquet``, and
  an empty deleted-ids file;
* an incremental ingest hard-links its parent's parts, writes the rows with new ids as
  ``chunks-NNNN.parquet`` and adds the ids its changed and deleted files no longer have to the
  deleted-ids file, so a one-line change writes a few hundred rows, not the whole store.

Every part is written with :func:`chunk_schema` (the ingest and import scripts insert into a
table made from it, so DuckDB casts or refuses by name); the ``chunks`` view reads ``s.*`` from
the parts, drops the deleted ids and only restores the embedding's array length, which Parquet
does not keep; views over ``chunks`` select ``c.*``; Python readers use :func:`read_live_chunks`.
Tests and the synthetic stores of the benchmarks build their tables from the same schema, so a
new column is added here and nowhere else.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from udfs.versioned_dir import VersionedDir

#: (name, Arrow type) of every column but the embedding, in file order.
CHUNK_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("id", pa.int64()),  # stable 63-bit id: blake2b(uri, byte range, content)
    ("uri", pa.string()),  # path relative to the repository root
    ("start_byte", pa.int64()),
    ("end_byte", pa.int64()),  # exclusive
    ("start_line", pa.int32()),  # 1-based
    ("end_line", pa.int32()),  # inclusive
    ("language", pa.string()),
    ("kind", pa.string()),  # the syntax node type the chunk starts at
    ("symbols", pa.list_(pa.string())),  # names the chunk defines
    ("content", pa.string()),
)
EMBEDDING_COLUMN = "embedding"
#: Where each chunk is: the columns of catalog.duckdb's keyed ``chunk_locations`` table
#: (codeintel/chunk_locations.py).  Not language, kind or symbols: with those every ingest's
#: CHECKPOINT took 52 ms instead of 21 to rewrite the table's last row group (25k chunks).
LOCATION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (name, kind) for name, kind in CHUNK_COLUMNS
    if name in ("id", "uri", "start_byte", "end_byte", "start_line", "end_line"))

#: A full write's single part; an incremental ingest adds ``chunks-NNNN.parquet`` beside it.
BASE_PART = "chunks.parquet"
#: Every part of a store version (the glob views/chunks.sql reads, relative to the version).
CHUNK_PARTS_GLOB = "chunks*.parquet"
#: One column, ``id``: chunks of the parts that are not in the store any more.
DELETED_IDS_FILE = "deleted_ids.parquet"
DELETED_IDS_SCHEMA = pa.schema([("id", pa.int64())])


#: The store's versioned directory under a catalog, and each version's manifest.
STORE_DIR = "store"
STORE_MANIFEST = "store.json"


def store_versions(catalog: Path) -> VersionedDir:
    """The chunk store: ``store/versions/<version>/`` {chunks*.parquet, deleted_ids.parquet,
    files.parquet, modules.jsonl, store.json}."""
    return VersionedDir(Path(catalog) / STORE_DIR, STORE_MANIFEST, "store")


def current_link(catalog: Path) -> Path:
    """``store/CURRENT``, the symlink to the published version: a file opened through it is the
    published version's at that moment."""
    return store_versions(catalog).current_link


def current_store(catalog: Path) -> Path | None:
    """The published store version's directory, or None before the first ingest."""
    return store_versions(catalog).current_path()


def chunk_schema(dimension: int) -> pa.Schema:
    """The Arrow schema of ``chunks.parquet``; ``embedding`` is FixedSizeList(float32, dimension)."""
    return pa.schema([*CHUNK_COLUMNS, (EMBEDDING_COLUMN, pa.list_(pa.float32(), dimension))])


def column_names() -> tuple[str, ...]:
    return (*(name for name, _ in CHUNK_COLUMNS), EMBEDDING_COLUMN)


def arrow_schema_metadata(dimension: int) -> str:
    """The ``ARROW:schema`` footer value DuckDB's COPY writes, so Arrow readers see FixedSizeList."""
    return base64.b64encode(chunk_schema(dimension).serialize().to_pybytes()).decode("ascii")


def chunk_parts(store: Path) -> list[Path]:
    """The Parquet parts of a store version, in name order (``chunks-NNNN`` sorts before ``chunks``)."""
    return sorted(Path(store).glob(CHUNK_PARTS_GLOB))


def deleted_ids(store: Path) -> pa.Array:
    """The ids a store version's parts hold but its chunks do not (int64; empty when none)."""
    path = Path(store) / DELETED_IDS_FILE
    if not path.is_file():  # a store written before parts existed: one part, nothing deleted
        return pa.array([], pa.int64())
    return pq.read_table(path, columns=["id"]).column("id").combine_chunks().cast(pa.int64())


def write_empty_deleted_ids(store: Path) -> None:
    """Give a store version an empty deleted-ids file (by an atomic rename); write_chunk_store.sql
    writes the file of every version it makes."""
    temporary = Path(store) / (DELETED_IDS_FILE + ".tmp")
    pq.write_table(DELETED_IDS_SCHEMA.empty_table(), temporary, compression="zstd")
    temporary.replace(Path(store) / DELETED_IDS_FILE)


def read_live_chunks(store: Path, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a store version's chunks: every part's rows but the deleted ids.

    Raises FileNotFoundError when the version has no part.
    """
    parts = chunk_parts(store)
    if not parts:
        raise FileNotFoundError(f"{store} has no chunk part ({CHUNK_PARTS_GLOB})")
    wanted = list(dict.fromkeys(["id", *columns]))
    table = pa.concat_tables(pq.read_table(part, columns=wanted) for part in parts)
    gone = deleted_ids(store)
    if len(gone):
        table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=gone)))
    return table.select(list(columns))


@functools.lru_cache(maxsize=1)
def _scratch_database() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process for :func:`read_vectors`; each call takes its own cursor
    (a connection of its own to this instance).  Starting a new instance per call took 11 ms, a
    tenth of an incremental index update (bench/bench_incremental.py)."""
    return duckdb.connect(":memory:")


def _live_rows(files: list[str], deleted: Path | None) -> tuple[str, dict[str, Any]]:
    """A FROM clause over the parts' rows less the ``deleted`` file's ids (alias ``s``), and its parameters."""
    parameters: dict[str, Any] = {"files": files}
    source = "read_parquet($files) AS s"
    if deleted is not None and pq.read_metadata(deleted).num_rows:
        source += " ANTI JOIN read_parquet($deleted) AS d ON d.id = s.id"
        parameters["deleted"] = str(deleted)
    return source, parameters


def read_vectors(parts: Sequence[Path], dimension: int, *, deleted: Path | None = None,
                 sort_by_id: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids, float32 (rows, dimension) vectors, rows with a NULL embedding left out) of ``parts``, in
    file order or sorted by id, less the ids in the ``deleted`` file when it holds any.

    Read by DuckDB, not pyarrow: Parquet keeps a list's every element with its own repetition
    level, and pyarrow decodes them on one thread per column chunk (2.6 s for 200k x 384 floats
    where DuckDB takes 0.7-0.9 s).  DuckDB sorts too (0.2 s there, where a numpy gather into new
    memory took 0.7 s), and the vectors are a view of the Arrow result when it is one batch.
    """
    files = [str(part) for part in parts]
    source, parameters = _live_rows(files, deleted)
    connection = _scratch_database().cursor()
    try:
        rows = connection.execute(f"SELECT count(*) FROM {source}", parameters).fetchone()[0]
        table = connection.execute(
            f"SELECT s.id::BIGINT AS id, s.embedding::FLOAT[{int(dimension)}] AS embedding FROM {source} "
            f"WHERE s.embedding IS NOT NULL {'ORDER BY s.id' if sort_by_id else ''}", parameters).to_arrow_table()
    finally:
        connection.close()
    if table.column("id").null_count:
        raise NullIdError(f"{table.column('id').null_count} rows of {', '.join(files)} have a NULL id")
    pieces = [batch.flatten().to_numpy(zero_copy_only=False).reshape(-1, dimension)
              for batch in table.column("embedding").chunks]
    vectors = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.empty((0, dimension),
                                                                                                  np.float32)
    return table.column("id").to_numpy(), vectors, int(rows - table.num_rows)


def read_locations(store: Path) -> pa.Table:
    """:data:`LOCATION_COLUMNS` of a store version's chunks, sorted by id (an empty table for a
    version of no part).  Read and sorted by DuckDB: 0.04 s at 200k chunks and 0.23 s at 1M, where
    pyarrow's read and sort took 0.3 and 0.5 s."""
    files = [str(part) for part in chunk_parts(store)]
    schema = pa.schema(list(LOCATION_COLUMNS))
    if not files:
        return schema.empty_table()
    deleted = Path(store) / DELETED_IDS_FILE
    source, parameters = _live_rows(files, deleted if deleted.is_file() else None)
    columns = ", ".join(f"s.{name}" for name, _ in LOCATION_COLUMNS)
    connection = _scratch_database().cursor()
    try:
        table = connection.execute(f"SELECT {columns} FROM {source} ORDER BY s.id", parameters).to_arrow_table()
    finally:
        connection.close()
    return table.cast(schema)


class NullIdError(ValueError):
    """A chunk part holds a row without an id."""

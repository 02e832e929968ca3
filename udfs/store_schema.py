"""The chunk store's columns, defined once.

``chunks.parquet`` is written with :func:`chunk_schema` (the ingest and import scripts insert
into a table made from it, so DuckDB casts or refuses by name); the ``chunks`` view reads
``s.*`` from the file and only restores the embedding's array length, which Parquet does not
keep; views over ``chunks`` select ``c.*``.  Tests and the synthetic stores of the benchmarks
build their tables from the same schema, so a new column is added here and nowhere else.
"""

from __future__ import annotations

import base64

import pyarrow as pa

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


def chunk_schema(dimension: int) -> pa.Schema:
    """The Arrow schema of ``chunks.parquet``; ``embedding`` is FixedSizeList(float32, dimension)."""
    return pa.schema([*CHUNK_COLUMNS, (EMBEDDING_COLUMN, pa.list_(pa.float32(), dimension))])


def column_names() -> tuple[str, ...]:
    return (*(name for name, _ in CHUNK_COLUMNS), EMBEDDING_COLUMN)


def arrow_schema_metadata(dimension: int) -> str:
    """The ``ARROW:schema`` footer value DuckDB's COPY writes, so Arrow readers see FixedSizeList."""
    return base64.b64encode(chunk_schema(dimension).serialize().to_pybytes()).decode("ascii")

"""Helpers of the evaluation tests: hand-made stores, query sets and hand-written runs."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import bootstrap
from codeintel import layout, sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from udfs import store_schema


def hand_store(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A chunk store from rows of ``id, uri, content, embedding`` (plus optional ``symbols``).

    Each file's chunks tile it in row order, one line per chunk line of content.
    """
    dimension = len(rows[0]["embedding"])
    cursor: dict[str, tuple[int, int]] = {}
    columns: dict[str, list[Any]] = {name: [] for name in store_schema.chunk_schema(dimension).names}
    for row in rows:
        byte, line = cursor.get(row["uri"], (0, 1))
        lines = row["content"].count("\n")
        values = {
            "id": row["id"], "uri": row["uri"], "start_byte": byte, "end_byte": byte + len(row["content"].encode()),
            "start_line": line, "end_line": line + max(lines - 1, 0), "language": row.get("language", "python"),
            "kind": row.get("kind", "function_definition"), "symbols": row.get("symbols", []),
            "content": row["content"], "embedding": [float(x) for x in row["embedding"]],
        }
        for name, value in values.items():
            columns[name].append(value)
        cursor[row["uri"]] = (values["end_byte"], line + lines)
    return pa.table(columns, schema=store_schema.chunk_schema(dimension))


def import_store(table: pa.Table, catalog: Path) -> Path:
    """Publish ``table`` as the catalog's current store (a new version each call)."""
    catalog.mkdir(parents=True, exist_ok=True)
    source = catalog.parent / f"{catalog.name}-chunks.parquet"
    pq.write_table(table, source)
    bootstrap.import_chunks(source, catalog)
    return catalog


def load_query_set(connection: duckdb.DuckDBPyConnection, directory: Path, queries: Iterable[Mapping[str, Any]],
                   qrels: Iterable[Mapping[str, Any]] | None = None) -> tuple[Any, ...]:
    """Write the query set as Parquet files and load it with sql/load_queries.sql; return its summary row."""
    directory.mkdir(parents=True, exist_ok=True)
    parameters = {"queries_path": str(directory / "queries.parquet")}
    pq.write_table(rows_table(queries), parameters["queries_path"])
    if qrels is not None:
        parameters["qrels_path"] = str(directory / "qrels.parquet")
        pq.write_table(rows_table(qrels), parameters["qrels_path"])
    return sqlfiles.run_script(connection, layout.SQL_DIR / "load_queries.sql", parameters).fetchone()


def rows_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A table of every key any row has (pa.Table.from_pylist looks at the first row only)."""
    rows = list(rows)
    keys = dict.fromkeys(key for row in rows for key in row)
    return pa.table({key: [row.get(key) for row in rows] for key in keys})


def write_pool(connection: duckdb.DuckDBPyConnection, **parameters: Any) -> dict[str, Any]:
    """Run sql/write_pool.sql; return its summary row as a dict."""
    relation = sqlfiles.run_script(connection, layout.SQL_DIR / "write_pool.sql", parameters)
    return dict(zip(relation.columns, relation.fetchone(), strict=True))


def pooled_catalog(template: Path, target: Path, k: int) -> Path:
    """A copy of the evaluation catalog with a FAISS and a BM25 run (pools), its views applied."""
    from tests.conftest import copy_catalog

    catalog = copy_catalog(template, target)
    connection = bootstrap.connect(catalog)
    try:
        for channel in ("faiss", "bm25"):
            write_pool(connection, channel=channel, k=k)
        apply_catalog_objects(connection, catalog)  # the views the pools made possible
    finally:
        connection.close()
    return catalog


def write_hand_run(catalog: Path, run_id: str, channel: str, hits: Mapping[str, Sequence[int]], k: int,
                   created_at: datetime.datetime) -> None:
    """A run as sql/write_pool.sql leaves it on disk (pool and run files), from ranked chunk ids per query.

    The explain columns are NULL: the views over pools never need them.
    """
    rows = [
        {"run_id": run_id, "query_id": query_id, "channel": channel, "rank": rank, "chunk_id": chunk_id,
         "score": 1.0 / rank}
        for query_id, chunk_ids in hits.items()
        for rank, chunk_id in enumerate(chunk_ids, start=1)
    ]
    explained = [(name, pa.list_(pa.string())) for name in ("explain_symbols", "explain_ast_kinds", "explain_cst_hits")]
    schema = pa.schema([("run_id", pa.string()), ("query_id", pa.string()), ("channel", pa.string()),
                        ("rank", pa.int32()), ("chunk_id", pa.int64()), ("score", pa.float64()), *explained])
    (catalog / "pools").mkdir(exist_ok=True)
    (catalog / "runs").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), catalog / "pools" / f"{run_id}.parquet")
    run = {"run_id": run_id, "created_at": created_at, "channel": channel, "index_version": None,
           "tuning_profile": None, "parameters": json.dumps({"k": k})}
    pq.write_table(pa.Table.from_pylist([run]), catalog / "runs" / f"{run_id}.parquet")


def perturbed(vector: Sequence[float], rng: np.random.Generator, noise: float) -> list[float]:
    """``vector`` plus Gaussian noise, normalised to unit length."""
    moved = np.asarray(vector, dtype=np.float32) + noise * rng.standard_normal(len(vector)).astype(np.float32)
    return (moved / np.linalg.norm(moved)).tolist()

"""The ``faiss_autotune`` UDF: the autotune sweep (:mod:`udfs.faiss_sweep`) as SQL.

The table macro ``faiss_autotune(k := 10, target_recall := 0.95, queries := NULL, ...)``
(``sql/macros/faiss_autotune.sql``) calls the scalar UDF of the same name, which sweeps the
published index, saves the tuning profile and returns the whole grid as a list of structs
(:data:`GRID_TYPE`).  ``python bootstrap.py autotune`` runs ``sql/autotune.sql`` over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from udfs.context import CatalogContext
from udfs.faiss_current import load_current
from udfs.faiss_sweep import tune
from udfs.registry import UdfError, UdfSpec

GRID_TYPE = (
    "STRUCT(parameters VARCHAR, recall_at_k DOUBLE, recall_low DOUBLE, recall_high DOUBLE, "
    "single_mean_ms DOUBLE, single_p95_ms DOUBLE, batch_mean_ms DOUBLE, batch_p95_ms DOUBLE, "
    "pareto BOOLEAN, build_default BOOLEAN, meets_target BOOLEAN, picked BOOLEAN, note VARCHAR)[]"
)


def _query_matrix(rows: list[list[float] | None], queries_name: str) -> np.ndarray:
    """The ``queries`` list the macro aggregated from ``query_table(queries_name)``, as a float32 matrix."""
    missing = [number for number, row in enumerate(rows, start=1) if row is None]
    if missing:
        raise UdfError(
            f"faiss_autotune: queries {queries_name!r} has a NULL embedding in row {missing[0]}; "
            "filter those rows out (WHERE embedding IS NOT NULL)"
        )
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise UdfError(
            f"faiss_autotune: queries {queries_name!r} mixes embedding lengths {lengths}; "
            "every query vector needs the index's dimension"
        )
    return np.asarray(rows, dtype=np.float32)


def _faiss_autotune(
    context: CatalogContext,
    k: int | None,
    target_recall: float | None,
    queries_name: str | None,
    queries: list[list[float] | None] | None,
    query_count: int | None,
    seed: int | None,
) -> list[dict[str, Any]]:
    arguments = {"k": k, "target_recall": target_recall, "query_count": query_count, "seed": seed}
    for name, value in arguments.items():
        if value is None:
            raise UdfError(f"faiss_autotune: {name} is NULL; leave it out for its default or pass a value")
    if queries_name is not None and not queries:
        raise UdfError(
            f"faiss_autotune: queries {queries_name!r} has no rows; fill it with query vectors (column embedding) "
            "or leave queries out for a held-out sample of the index's vectors"
        )
    matrix = None if queries is None else _query_matrix(queries, queries_name)
    loaded = load_current(context)
    with context.lock:  # one sweep at a time per connection, and no reload under it
        result = tune(loaded, k=k, target_recall=target_recall, queries=matrix,
                      query_source=f"query_table({queries_name!r})", query_count=query_count, seed=seed,
                      function="faiss_autotune")
    return [
        {**dataclasses.asdict(point), "note": result.note if point.picked else None} for point in result.grid
    ]


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="faiss_autotune",
        function=_faiss_autotune,
        parameters=("INTEGER", "DOUBLE", "VARCHAR", "FLOAT[][]", "INTEGER", "INTEGER"),
        return_type=GRID_TYPE,
        kind="native",
        null_handling="special",
        side_effects=True,
        owns_cores=True,
        doc="Measure the published index's search-parameter grid, pick and persist a tuning profile; "
        "returns every point.",
    ),
)

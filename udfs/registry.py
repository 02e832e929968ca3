"""The frozen description of one UDF, shared by every ``udfs/<family>.py`` module.

Each family module exposes ``REGISTRY: tuple[UdfSpec, ...]``; ``bootstrap.py`` walks the
families in a fixed order and registers every entry on a connection.  Keeping the
DuckDB-facing facts (types, null and exception handling, side effects) beside the
implementation means a signature is changed in one place only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import duckdb
import pyarrow as pa

from udfs.context import CatalogContext

TypeSpec = str | Callable[[CatalogContext], str]


def combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow array for a UDF argument: DuckDB may hand an arrow UDF a chunked one."""
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


class UdfError(ValueError):
    """A UDF rejected its input; the message names the function, the argument and the fix."""


@dataclasses.dataclass(frozen=True)
class UdfSpec:
    """One scalar UDF.

    ``function`` receives the connection's :class:`CatalogContext` first, then one
    argument per SQL parameter (pyarrow arrays when ``kind == "arrow"``).  A type given
    as a callable is resolved against the context at registration: the embedding
    dimension, for instance, depends on the configured model.
    """

    name: str
    function: Callable[..., Any]
    parameters: tuple[TypeSpec, ...]
    return_type: TypeSpec
    kind: Literal["arrow", "native"] = "arrow"
    null_handling: Literal["default", "special"] = "default"
    exception_handling: Literal["default", "return_null"] = "default"
    #: DuckDB must call the function every time: it writes, or it reads state that changes under
    #: the connection (the published index, the store).  Without it DuckDB folds a call on
    #: constant arguments while planning, once at PREPARE, and every EXECUTE returns that answer,
    #: even after a publish (udfs/faiss_search.py says why its search UDFs accept that).
    side_effects: bool = False
    #: The function runs its own thread pool (FAISS's OpenMP team, onnxruntime) over the whole
    #: chunk; statements that call it run with DuckDB threads=1 (bootstrap.core_owning_names).
    owns_cores: bool = False
    doc: str = ""

    def resolve_type(self, spec: TypeSpec, context: CatalogContext) -> duckdb.sqltypes.DuckDBPyType:
        text = spec(context) if callable(spec) else spec
        return duckdb.sqltype(text)

    def register(self, connection: duckdb.DuckDBPyConnection, context: CatalogContext) -> None:
        # DuckDB counts the callable's parameters, so the context is bound with partial,
        # which keeps the implementation's signature minus its first parameter.
        bound = functools.partial(self.function, context)
        connection.create_function(
            self.name,
            bound,
            [self.resolve_type(p, context) for p in self.parameters],
            self.resolve_type(self.return_type, context),
            type=self.kind,
            null_handling=self.null_handling,
            exception_handling=self.exception_handling,
            side_effects=self.side_effects,
        )


def check_unique(specs: list[UdfSpec]) -> None:
    """Raise when two registry entries share a name: DuckDB would silently keep one."""
    seen: dict[str, UdfSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise ValueError(
                f"duplicate UDF name {spec.name!r}: defined by {seen[spec.name].function.__module__} "
                f"and {spec.function.__module__}; rename one of them"
            )
        seen[spec.name] = spec

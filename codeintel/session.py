"""A prepared catalog connection with the context its UDFs share."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from types import TracebackType

import duckdb

from codeintel.catalog_db import CatalogCopy
from udfs.context import CatalogContext
from udfs.settings import Settings


@dataclasses.dataclass
class Session:
    """What ``bootstrap.open_catalog`` returns: the connection, ready, and its :class:`CatalogContext`.

    A writing session works on a private copy of ``catalog.duckdb`` (``copy``, see
    :mod:`codeintel.catalog_db`): :meth:`close` publishes it, :meth:`abort` (or leaving a
    ``with`` block by an exception) throws it away.  The package's functions take a session
    rather than opening connections themselves, so ``bootstrap.open_catalog`` stays the one
    place that prepares a connection.
    """

    connection: duckdb.DuckDBPyConnection
    context: CatalogContext
    copy: CatalogCopy | None = None
    #: Releases the writer lock and the copy's staging directory (set by bootstrap.open_catalog).
    cleanup: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

    @property
    def catalog(self) -> Path:
        return self.context.catalog_dir

    @property
    def settings(self) -> Settings:
        return self.context.settings  # type: ignore[return-value]  # always resolved by CatalogContext

    def close(self) -> None:
        """Close; a writing session publishes its copy first (CHECKPOINT, close, atomic rename)."""
        with self.cleanup:
            if self.copy is None:
                self.connection.close()
                return
            try:
                self.connection.execute("CHECKPOINT")
            finally:
                self.connection.close()
            self.copy.publish()

    def abort(self) -> None:
        """Close without publishing: ``catalog.duckdb`` stays as it was."""
        with self.cleanup:
            self.connection.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None:
            self.close()
        else:
            self.abort()

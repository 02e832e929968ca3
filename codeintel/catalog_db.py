"""Writing ``catalog.duckdb`` beside its readers: a private copy, published by atomic rename.

DuckDB locks a database file: a read-write connection needs it exclusively, so a BI tool or
a search process holding ``catalog.duckdb`` open (even read-only) made every writing
command fail with "Could not set lock", and a running build locked every reader out.  So a
writing session never opens ``catalog.duckdb`` itself:

1. it takes the catalog's writer lock (``.catalog.lock``, ``flock``: one writer at a time,
   released by the kernel if the process dies), so no two writers publish over each other;
2. it copies ``catalog.duckdb`` into a staging directory owned by this process
   (``.tmp-<uuid>/catalog.duckdb``: the same file name, so the database keeps its name
   ``catalog``) and works on the copy;
3. on success it checkpoints and closes the copy, fsyncs it and renames it over
   ``catalog.duckdb`` (``os.replace``: atomic), then fsyncs the directory.

Open readers keep the file they opened (the old inode) and never see an error; readers
that connect afterwards get the new file.  A failure or a kill leaves ``catalog.duckdb`` as
it was; a killed writer's staging directory is removed by the next writer
(:func:`udfs.versioned_dir.remove_abandoned`).  The copy costs one file copy per writing
command (BENCHMARKS.md: milliseconds for the demo catalog).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import duckdb

from codeintel.errors import CatalogError
from codeintel.layout import CATALOG_DB
from udfs import versioned_dir

LOG = logging.getLogger("codeintel")

LOCK_FILE = ".catalog.lock"


@contextlib.contextmanager
def writer_lock(catalog: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the catalog's writer lock for the block; yields False (not held) when ``wait`` is off and it is busy."""
    catalog.mkdir(parents=True, exist_ok=True)
    with open(catalog / LOCK_FILE, "a+") as handle:
        if not _try_lock(handle):
            if not wait:
                yield False
                return
            LOG.info("waiting for another command writing %s (%s) to finish", catalog / CATALOG_DB,
                     _holder(handle) or "unknown process")
            fcntl.flock(handle, fcntl.LOCK_EX)
        _record_holder(handle)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _record_holder(handle: IO[str]) -> None:
    """Write who holds the lock into the lock file, so a waiting writer can say whom it waits for."""
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(versioned_dir.owner_record()))
    handle.flush()


def _holder(handle: IO[str]) -> str | None:
    handle.seek(0)
    try:
        owner = json.loads(handle.read() or "null")
    except ValueError:
        return None
    return f"pid {owner['pid']} on {owner['host']}" if isinstance(owner, dict) and "pid" in owner else None


def refuse_direct_writers(database: Path) -> None:
    """Refuse to start while a connection holds ``database`` read-write (``bootstrap.connect``, a stock client).

    Such a connection writes the file itself, outside the writer lock: copying the file under
    it could miss its unwritten changes, and publishing the copy would discard whatever it
    writes afterwards.  A read-write holder keeps DuckDB's exclusive lock, so a read-only open
    fails; readers share the lock and pass.  (In this process, DuckDB refuses a second
    connection to a file it holds read-write with another configuration: the same signal.)
    """
    if not database.exists():
        return
    try:
        duckdb.connect(str(database), read_only=True).close()
    except duckdb.Error as error:
        message = str(error)
        if "lock" not in message.lower() and "different configuration" not in message:
            raise
        raise CatalogError(
            f"{database} is open read-write elsewhere ({message.splitlines()[0]}); a command writing the catalog "
            "would lose that connection's changes. Close it (or open it read-only) and run the command again"
        ) from error


@dataclasses.dataclass
class CatalogCopy:
    """A writer's private copy of ``catalog.duckdb``; :meth:`publish` renames it into place."""

    catalog: Path
    staging: Path

    @property
    def path(self) -> Path:
        return self.staging / CATALOG_DB

    def publish(self) -> None:
        """Rename the (closed, checkpointed) copy over ``catalog.duckdb``, durably."""
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists():  # a close that did not checkpoint: never publish a file that needs its WAL
            raise RuntimeError(f"{self.path}: the catalog copy still has a write-ahead log; it was not closed")
        versioned_dir.fsync(self.path)
        os.replace(self.path, self.catalog / CATALOG_DB)
        versioned_dir.fsync(self.catalog)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def private_copy(catalog: Path) -> Iterator[CatalogCopy]:
    """Under the writer lock, a copy of ``catalog.duckdb`` (none yet: a new file) to write to.

    The caller publishes it (:meth:`CatalogCopy.publish`) before the block ends; otherwise it
    is discarded and ``catalog.duckdb`` is untouched.
    """
    with writer_lock(catalog):
        refuse_direct_writers(catalog / CATALOG_DB)
        versioned_dir.remove_abandoned(catalog)
        copy = CatalogCopy(catalog, versioned_dir.create(catalog))
        try:
            source = catalog / CATALOG_DB
            if source.exists():
                started = time.perf_counter()
                shutil.copyfile(source, copy.path)
                # A writer killed before its checkpoint left a WAL that DuckDB replays on open: keep it.
                wal = source.with_name(source.name + ".wal")
                if wal.exists():
                    shutil.copyfile(wal, copy.path.with_name(copy.path.name + ".wal"))
                LOG.debug("catalog copy: %d bytes in %.3f s", copy.path.stat().st_size, time.perf_counter() - started)
            yield copy
        finally:
            copy.discard()

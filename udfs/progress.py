"""Progress of long work: a progress bar on a terminal, a log line every few seconds elsewhere.

Chunking and embedding run inside DuckDB statements, in UDF calls, so the UDFs report what
they did (:func:`advance`) to the tracker that ``bootstrap.ingest`` opened (:func:`tracking`);
with no tracker open (a user's own ``SELECT embed_chunk(...)``) reporting does nothing.

Other long work (FAISS builds, autotune sweeps) runs in Python and opens a named stage
(:func:`stage`): a start line, then a bar or periodic lines as it advances, then a done line.
Slow statements of a SQL script are logged by :func:`statement_done`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("codeintel.progress")

#: Seconds between two progress log lines (tests set 0 to log every report).
PROGRESS_INTERVAL_S = 5.0

FILES_CHUNKED = "files chunked"
CHUNKS_MADE = "chunks made"
CHUNKS_EMBEDDED = "chunks embedded"


class IngestProgress:
    """Counts files chunked, chunks made and chunks embedded; shows them as bars or log lines."""

    def __init__(self, files_listed: int, bar: bool) -> None:
        self._lock = threading.Lock()
        self._counts = {FILES_CHUNKED: 0, CHUNKS_MADE: 0, CHUNKS_EMBEDDED: 0}
        self._files_listed = files_listed
        self._bar_wanted = bar
        self._bar: Any = None
        self._bar_stage = ""
        self._started = self._last_logged = time.monotonic()

    def advance(self, name: str, count: int) -> None:
        with self._lock:
            self._counts[name] += count
            if self._bar_wanted:
                self._update_bar(name, count)
                return
            now = time.monotonic()
            if now - self._last_logged >= PROGRESS_INTERVAL_S:
                self._last_logged = now
                logger.info("ingest: %s", self.summary(now))

    def summary(self, now: float | None = None) -> str:
        counts = self._counts
        embedded = counts[CHUNKS_EMBEDDED]
        # Chunking has finished before the first chunk is embedded, so the chunk count is the total then.
        embedding = f"{embedded}/{counts[CHUNKS_MADE]} chunks embedded" if embedded else "0 chunks embedded"
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        return (f"{self._files_listed} files listed, {counts[FILES_CHUNKED]} files chunked, "
                f"{counts[CHUNKS_MADE]} chunks made, {embedding} ({elapsed:.0f} s)")

    def _update_bar(self, name: str, count: int) -> None:
        from tqdm import tqdm

        stage = "embedding" if name == CHUNKS_EMBEDDED else "chunking"
        if stage != self._bar_stage:
            self.close()
            self._bar_stage = stage
            if stage == "chunking":
                self._bar = tqdm(desc="chunking", unit=" files", total=None, leave=False)
            else:
                self._bar = tqdm(desc="embedding", unit=" chunks", total=self._counts[CHUNKS_MADE], leave=False)
        if name != CHUNKS_MADE:
            self._bar.update(count)
        if stage == "chunking":
            self._bar.set_postfix(chunks=self._counts[CHUNKS_MADE], refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_current: IngestProgress | None = None
_current_lock = threading.Lock()


@contextlib.contextmanager
def tracking(files_listed: int, bar: bool | None = None) -> Iterator[IngestProgress]:
    """Track one ingest; ``bar`` defaults to whether stderr (where tqdm and the log write) is a terminal."""
    global _current
    progress = IngestProgress(files_listed, sys.stderr.isatty() if bar is None else bar)
    with _current_lock:
        previous, _current = _current, progress
    try:
        yield progress
    finally:
        progress.close()
        with _current_lock:
            _current = previous


def bar_shown() -> bool:
    """Whether the open ingest tracker draws a tqdm bar (DuckDB's own bar should stay off then)."""
    progress = _current
    return progress is not None and progress._bar_wanted


def advance(name: str, count: int) -> None:
    """Report ``count`` more of ``name`` to the open tracker, if any."""
    progress = _current
    if progress is not None and count:
        progress.advance(name, count)


class StageProgress:
    """One named stage of long work: ``advance`` once per batch or step, never per row."""

    def __init__(self, name: str, total: int | None, unit: str, bar: bool) -> None:
        self.name = name
        self.total = total
        self.unit = unit
        self.done = 0
        self._lock = threading.Lock()
        self._started = self._last_logged = time.monotonic()
        if total is not None:
            logger.info("%s: started (%d %s)", name, total, unit)
        else:
            # A step with no count (reading, writing) is logged only once it proves slow, in close.
            logger.debug("%s: started", name)
        self._bar: Any = None
        if bar and total is not None:
            from tqdm import tqdm

            self._bar = tqdm(desc=name, unit=f" {unit}", total=total, leave=False)

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(count)
                return
            now = time.monotonic()
            if now - self._last_logged >= PROGRESS_INTERVAL_S:
                self._last_logged = now
                logger.info("%s: %s (%.0f s)", self.name, self._count(), now - self._started)

    def _count(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"

    def close(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elapsed = time.monotonic() - self._started
        if self.total is None and elapsed < PROGRESS_INTERVAL_S:
            logger.debug("%s: %s (%.1f s)", self.name, "stopped" if failed else "done", elapsed)
        elif failed:
            logger.info("%s: stopped after %s (%.1f s)", self.name, self._count(), elapsed)
        elif self.total is not None:
            logger.info("%s: done, %s (%.1f s)", self.name, self._count(), elapsed)
        else:
            logger.info("%s: done (%.1f s)", self.name, elapsed)


@contextlib.contextmanager
def stage(name: str, total: int | None = None, unit: str = "steps",
          bar: bool | None = None) -> Iterator[StageProgress]:
    """Report one stage of long work; a bar (when ``total`` is known) on a terminal, log lines elsewhere.

    With ``total`` the stage logs a start line, a line every :data:`PROGRESS_INTERVAL_S` seconds and
    a done line; without, it logs one line when it ends, and only if it took that long.

    ``bar`` defaults to whether stderr is a terminal and no ingest tracker is drawing its own bar.
    """
    wanted = (sys.stderr.isatty() and not bar_shown()) if bar is None else bar
    progress = StageProgress(name, total, unit, wanted)
    try:
        yield progress
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()


def statement_done(script: str, number: int, statements: int, seconds: float) -> None:
    """Log a statement of a SQL script that ran at least :data:`PROGRESS_INTERVAL_S` seconds."""
    if seconds >= PROGRESS_INTERVAL_S:
        logger.info("%s: statement %d of %d done (%.1f s)", script, number, statements, seconds)

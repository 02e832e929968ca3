"""Progress of a long ingest: a progress bar on a terminal, a log line every few seconds elsewhere.

Chunking and embedding run inside DuckDB statements, in UDF calls, so the UDFs report what
they did (:func:`advance`) to the tracker that ``bootstrap.ingest`` opened (:func:`tracking`);
with no tracker open (a user's own ``SELECT embed_chunk(...)``) reporting does nothing.
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


def advance(name: str, count: int) -> None:
    """Report ``count`` more of ``name`` to the open tracker, if any."""
    progress = _current
    if progress is not None and count:
        progress.advance(name, count)

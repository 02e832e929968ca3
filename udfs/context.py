"""Per-connection state that UDFs share: the catalog directory, settings and lazy resources."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from udfs.settings import Settings

T = TypeVar("T")


@dataclasses.dataclass
class CatalogContext:
    """What a connection's UDFs know about their catalog.

    ``resources`` caches expensive objects (the ONNX session, a loaded FAISS index)
    under a family-chosen key; ``lock`` guards their creation because DuckDB may call a
    UDF from several worker threads at once.
    """

    catalog_dir: Path
    #: The connection embeds a new chunk store (ingest), so ``embed`` may differ from the current store's embedder.
    ingesting: bool = False
    #: A mapping is checked and completed with defaults (tests and benches pass overrides only).
    settings: Settings | Mapping[str, Any] = dataclasses.field(default_factory=Settings)
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, Settings):
            self.settings = Settings.resolve(self.settings)

    def resource(self, key: str, factory: Any) -> Any:
        """Return the cached resource ``key``, creating it once with ``factory()``."""
        with self.lock:
            if key not in self.resources:
                self.resources[key] = factory()
            return self.resources[key]

    def versioned(self, key: str, version: str | None, load: Callable[[], T]) -> T:
        """The resource ``key`` of ``version`` (a published version's name): the cached one when it is
        of that version, else ``load()``'s, made under the lock once however many threads ask."""
        cached = self.resources.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        with self.lock:
            cached = self.resources.get(key)
            if cached is None or cached[0] != version:
                cached = (version, load())
                self.resources[key] = cached
            return cached[1]


#: Per thread: the statement in progress on this thread, if its runner pinned one.
_pins = threading.local()


@dataclasses.dataclass
class _Pin:
    context: CatalogContext
    #: What the statement met first, per resource key (the index version, the store's locations).
    met: dict[str, Any] = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def pinned(context: CatalogContext) -> Iterator[None]:
    """Every UDF call on this thread inside the block uses one version of each versioned resource.

    A statement whose UDF is called once per chunk of rows (a batched LATERAL search) would
    otherwise see a publish or rollback that lands between two chunks, and answer with two
    versions.  A statement runner (``codeintel.serve``) wraps each statement, which runs on its
    own thread under the thread rule (DuckDB threads = 1 executes on the caller): the version
    the first call met serves the whole statement; the next statement sees the new one.  Calls
    from other threads fall back to the per-call check.
    """
    previous = getattr(_pins, "pin", None)
    _pins.pin = _Pin(context)
    try:
        yield
    finally:
        _pins.pin = previous


def statement_resource(context: CatalogContext, key: str, current: Callable[[], T]) -> T:
    """``current()`` (a resource as published now), or inside :func:`pinned` the one the statement met first."""
    pin = getattr(_pins, "pin", None)
    if pin is None or pin.context is not context:
        return current()
    if key not in pin.met:
        pin.met[key] = current()
    return pin.met[key]

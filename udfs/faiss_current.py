"""The index a connection serves: the published version, loaded once and reloaded when CURRENT moves.

:func:`load_current` is what every FAISS UDF calls first.  It reads ``index/CURRENT`` (one
readlink per call), and when that names another version than the cached one it loads it
(:func:`udfs.faiss_loaded.load_version`), applies its tuning profile
(:func:`udfs.faiss_tuning.apply_profile`) or, with setting ``autotune_on_start`` and no
profile yet, tunes it now (:func:`udfs.faiss_sweep.tune`, aiming at settings ``autotune_k``
and ``autotune_target_recall``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator

from udfs.context import CatalogContext
from udfs.faiss_loaded import LoadedIndex, load_version
from udfs.faiss_sweep import TuningResult, tune
from udfs.faiss_tuning import apply_profile
from udfs.faiss_versions import BUILD_HINT, index_versions
from udfs.registry import UdfError
from udfs.settings import Settings

logger = logging.getLogger("codeintel.autotune")

RESOURCE_KEY = "faiss.loaded_index"


@dataclasses.dataclass
class _Pin:
    context: CatalogContext
    loaded: LoadedIndex | None = None  # the version the statement met first


#: Per thread: the statement in progress on this thread, if its runner pinned one.
_pins = threading.local()


@contextlib.contextmanager
def pinned(context: CatalogContext) -> Iterator[None]:
    """Every FAISS UDF call on this thread inside the block uses one index version.

    A statement whose UDF is called once per chunk of rows (a batched LATERAL search)
    would otherwise see a publish or rollback that lands between two chunks, and answer
    with two versions.  A statement runner (``codeintel.serve``) wraps each statement, which
    runs on its own thread under the thread rule (DuckDB threads = 1 executes on the caller):
    the version the first call loads serves the whole statement; the next statement sees
    the new one.  Calls from other threads fall back to the per-call check.
    """
    previous = getattr(_pins, "pin", None)
    _pins.pin = _Pin(context)
    try:
        yield
    finally:
        _pins.pin = previous


def tune_on_start(loaded: LoadedIndex, settings: Settings) -> TuningResult | None:
    """Setting ``autotune_on_start``: tune a version that has no profile as it is loaded."""
    if not settings.autotune_on_start:
        return None
    k, target_recall = settings.autotune_k, settings.autotune_target_recall
    logger.info("autotune_on_start: index version %s has no tuning profile; tuning it (k=%s, target recall %s)",
                loaded.version, k, target_recall)
    return tune(loaded, k=k, target_recall=target_recall,
                function="autotune_on_start (settings autotune_k, autotune_target_recall)")


def _load(context: CatalogContext, version: str) -> LoadedIndex:
    loaded = load_version(context.catalog_dir, version, context.settings)
    if not apply_profile(loaded):
        tune_on_start(loaded, context.settings)
    return loaded


def load_current(context: CatalogContext) -> LoadedIndex:
    """The published index, cached in ``context.resources`` and reloaded when CURRENT points elsewhere."""
    pin = getattr(_pins, "pin", None)
    if pin is not None and pin.context is context:
        if pin.loaded is None:
            pin.loaded = _published(context)
        return pin.loaded
    return _published(context)


def _published(context: CatalogContext) -> LoadedIndex:
    versions = index_versions(context.catalog_dir)
    version = versions.current()
    if version is None:
        raise UdfError(
            f"faiss: no index is published in {versions.root}; {BUILD_HINT.format(catalog=context.catalog_dir)}"
        )
    cached = context.resources.get(RESOURCE_KEY)
    if cached is not None and cached.version == version:
        return cached
    with context.lock:
        cached = context.resources.get(RESOURCE_KEY)
        if cached is None or cached.version != version:
            cached = _load(context, version)
            context.resources[RESOURCE_KEY] = cached
        return cached

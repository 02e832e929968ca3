"""The index a connection serves: the published version, loaded once and reloaded when CURRENT moves.

:func:`load_current` is what every FAISS UDF calls first.  It reads ``index/CURRENT`` (one
readlink per call), and when that names another version than the cached one it loads it
(:func:`udfs.faiss_loaded.load_version`), applies its tuning profile
(:func:`udfs.faiss_tuning.apply_profile`) or, with setting ``autotune_on_start`` and no
profile yet, tunes it now (:func:`udfs.faiss_sweep.tune`, aiming at settings ``autotune_k``
and ``autotune_target_recall``).
"""

from __future__ import annotations

import logging

from udfs.context import CatalogContext, statement_resource
from udfs.faiss_loaded import LoadedIndex, load_version
from udfs.faiss_sweep import TuningResult, tune
from udfs.faiss_tuning import apply_profile
from udfs.faiss_versions import BUILD_HINT, index_versions
from udfs.registry import UdfError
from udfs.settings import Settings

logger = logging.getLogger("codeintel.autotune")

RESOURCE_KEY = "faiss.loaded_index"
VERSIONS_KEY = "faiss.index_versions"  # made once per context: every search call reads its CURRENT


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
    """The published index, cached in ``context.resources`` and reloaded when CURRENT points elsewhere;
    inside :func:`udfs.context.pinned`, the version the statement met first."""
    return statement_resource(context, RESOURCE_KEY, lambda: _published(context))


def _published(context: CatalogContext) -> LoadedIndex:
    versions = context.resource(VERSIONS_KEY, lambda: index_versions(context.catalog_dir))
    version = versions.current()
    if version is None:
        raise UdfError(
            f"faiss: no index is published in {versions.root}; {BUILD_HINT.format(catalog=context.catalog_dir)}"
        )
    return context.versioned(RESOURCE_KEY, version, lambda: _load(context, version))

"""The one place the benchmarks call into the project's catalog and FAISS code.

The benchmarks use the names below and nothing else from ``bootstrap`` or ``udfs.faiss_*``,
so when code moves between those modules only this file changes.  Nothing here adds
behaviour: each name is the project's own function, class or constant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bootstrap
from codeintel import chunk_locations, demo, layout, sqlfiles
from codeintel.corpus import DEMO_PACKAGES
from codeintel.errors import CatalogError
from udfs import (
    faiss_build,
    faiss_current,
    faiss_loaded,
    faiss_search,
    faiss_sweep,
    faiss_versions,
    hit_locations,
    store_schema,
)
from udfs.context import CatalogContext
from udfs.settings import Settings

__all__ = [
    "DEMO_PACKAGES", "CatalogError", "CatalogContext",
    "PROJECT_DIR", "SQL_DIR", "connect", "open_catalog", "load_extensions", "current_store", "read_store_manifest",
    "read_locations", "import_chunks", "ingest", "run_script", "apply_views", "build_bm25_index", "build_index",
    "core_owning_names", "core_owner_threads", "sql_words",
    "LoadedIndex", "BuildOptions", "FAMILIES", "MANIFEST_FILE", "IndexPlan", "plan_index", "train_and_add",
    "StoreSnapshot", "store_fingerprint",
    "current_version", "publish", "load_current", "build_faiss_index", "faiss_topk", "exact_rerank",
    "faiss_search_hits", "HITS_TYPE", "LOCATED_HITS_TYPE", "current_locations",
    "tune", "TUNE_BATCH_QUERIES", "REFINE_K_FACTOR",
    "catalog_context", "setting",
]

# ---- catalogs, stores and scripts
PROJECT_DIR: Path = layout.PROJECT_DIR
SQL_DIR: Path = layout.SQL_DIR
current_store = layout.current_store
read_store_manifest = layout.read_store_manifest
run_script = sqlfiles.run_script
#: The views, and the keyed chunk_locations table, as a writing session applies them.
apply_views = chunk_locations.apply_catalog_objects
#: Statements calling a UDF with its own thread pool run with DuckDB on one thread (run_script's rule).
core_owning_names = sqlfiles.core_owning_names
core_owner_threads = sqlfiles.core_owner_threads
sql_words = sqlfiles.sql_words
build_bm25_index = demo.build_bm25_index
connect = bootstrap.connect
#: A writing session on a private copy of catalog.duckdb, published by atomic rename on close.
open_catalog = bootstrap.open_catalog
load_extensions = bootstrap.load_extensions
import_chunks = bootstrap.import_chunks
#: A store version's chunks (its parts but the deleted ids), as an Arrow table of the given columns.
read_live_chunks = store_schema.read_live_chunks
#: A store version's id, uri, bytes and lines, sorted by id.
read_locations = store_schema.read_locations
CHUNK_COLUMNS = store_schema.column_names()
ingest = bootstrap.ingest
#: The CLI's index build (``sql/build_index.sql``): builds and publishes ``family``, returns the manifest.
build_index = bootstrap.build_index

# ---- FAISS indexes
LoadedIndex = faiss_loaded.LoadedIndex
BuildOptions = faiss_build.BuildOptions
FAMILIES: tuple[str, ...] = tuple(faiss_build.FAMILIES)
IndexPlan = faiss_build.IndexPlan
plan_index = faiss_build.plan_index
#: A build's training and adding, as ``faiss_build`` runs them (a plan, a store snapshot, threads).
train_and_add = faiss_build.train_and_add
StoreSnapshot = faiss_build.StoreSnapshot
#: The library build, without the CLI's option checks: returns the manifest.
build_faiss_index = faiss_build.build_index
MANIFEST_FILE: str = faiss_versions.MANIFEST_FILE
store_fingerprint = faiss_versions.store_fingerprint
current_version = faiss_versions.current_version
publish = faiss_versions.publish
load_current = faiss_current.load_current
#: The project's name of IndexRefine's k factor in parameter strings (FAISS's is k_factor_rf;
#: faiss_set_params and LoadedIndex.set_parameters refuse FAISS's name).
REFINE_K_FACTOR = "refine_k_factor"
faiss_topk = faiss_search.faiss_topk
exact_rerank = faiss_search.exact_rerank
#: The UDF behind the faiss_search macro, and the hits list type the FAISS UDFs return.
faiss_search_hits = faiss_search.faiss_search_hits
HITS_TYPE: str = faiss_search.HITS_TYPE
#: faiss_search_hits' type (hits with uri, bytes and lines), and where the current store's chunks are.
LOCATED_HITS_TYPE: str = faiss_search.LOCATED_HITS_TYPE
current_locations = hit_locations.current_locations
#: Autotune's sweep of a loaded index, and the queries per call of its batched timings.
tune = faiss_sweep.tune
TUNE_BATCH_QUERIES: int = faiss_sweep.BATCH_QUERIES


def catalog_context(catalog: Path, overrides: dict[str, Any] | None = None, *,
                    catalog_settings: bool = False) -> CatalogContext:
    """A UDF context for ``catalog``: the default settings (with ``catalog_settings``, the catalog's
    settings.json over them, as a connection resolves them) and ``overrides`` on top."""
    if catalog_settings:
        return CatalogContext(catalog_dir=catalog, settings=Settings.from_file(catalog / layout.SETTINGS_FILE,
                                                                               overrides))
    return CatalogContext(catalog_dir=catalog, settings=dict(overrides or {}))


def setting(context: CatalogContext, name: str) -> Any:
    """One setting of a context."""
    return getattr(context.settings, name)

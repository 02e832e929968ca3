"""Where things are: the project's SQL files, and the parts of a catalog directory.

A catalog directory holds::

    catalog.duckdb     persisted views (stock DuckDB clients open it)
    settings.json      optional setting overrides (udfs/settings.py)
    store/             the chunk store, a VersionedDir (udfs/versioned_dir.py)
    index/             FAISS index versions, a VersionedDir
    eval/, xtr/, ...   files written by the evaluation and report scripts
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from udfs.versioned_dir import VersionedDir

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_DIR / "sql"
VIEWS_DIR = PROJECT_DIR / "views"
MACROS_DIR = SQL_DIR / "macros"

CATALOG_DB = "catalog.duckdb"
SETTINGS_FILE = "settings.json"
STORE_DIR = "store"
STORE_MANIFEST = "store.json"


def store_versions(catalog: Path) -> VersionedDir:
    """The chunk store: ``store/versions/<version>/`` {chunks.parquet, files.parquet, modules.jsonl, store.json}."""
    return VersionedDir(catalog / STORE_DIR, STORE_MANIFEST, "store")


def current_store(catalog: Path) -> Path | None:
    """The published store version's directory, or None before the first ingest."""
    return store_versions(catalog).current_path()


def read_store_manifest(store: Path) -> dict[str, Any]:
    return json.loads((store / STORE_MANIFEST).read_text())

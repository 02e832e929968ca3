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

from udfs import store_schema

# The store's directory is defined where its files are (the UDFs read it too); named here as well.
from udfs.store_schema import STORE_DIR as STORE_DIR
from udfs.store_schema import STORE_MANIFEST as STORE_MANIFEST
from udfs.store_schema import current_store as current_store
from udfs.store_schema import store_versions as store_versions

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_DIR / "sql"
VIEWS_DIR = PROJECT_DIR / "views"
MACROS_DIR = SQL_DIR / "macros"

CATALOG_DB = "catalog.duckdb"
SETTINGS_FILE = "settings.json"


def read_store_manifest(store: Path) -> dict[str, Any]:
    return json.loads((store / STORE_MANIFEST).read_text())


def upgrade_store_versions(catalog: Path) -> list[str]:
    """Give every store version written before chunk parts existed an empty deleted-ids file.

    Such a version holds one part, ``chunks.parquet``, and nothing deleted; views/chunks.sql
    reads the deleted-ids file of CURRENT, so a writing session (which applies the views) adds
    it first.  Adding a file changes none of the version's chunks.  Returns the versions upgraded.
    """
    versions = store_versions(catalog)
    upgraded = []
    for version in versions.complete_versions():
        path = versions.path(version)
        if not (path / store_schema.DELETED_IDS_FILE).exists() and (path / store_schema.BASE_PART).is_file():
            store_schema.write_empty_deleted_ids(path)
            upgraded.append(version)
    return upgraded

"""The index's versioned directory: its layout, manifests, and publish / rollback / gc / list.

Layout under ``<catalog>/index`` (a :class:`~udfs.versioned_dir.VersionedDir`)::

    versions/<version>/        one complete build, never modified after its rename
    versions/.tmp-<uuid>/      a build in progress, with its owner's pid and host, so the next
                               build or gc removes it once that process is gone
    CURRENT -> versions/<v>    relative symlink, flipped atomically

A version directory holds:

* ``index.faiss``: an ``IndexIDMap2`` (chunk ids as external ids) around the family's index,
  with its default search parameters (nprobe, efSearch, refine_k_factor) set before writing;
* ``faiss_idmap.parquet``: ``faiss_row BIGINT, external_id BIGINT`` for the SQL views;
* ``vectors.npy``: the store's raw embeddings, row ``i`` belonging to faiss row ``i``; vectors
  are added in ascending id order, so the id column is sorted and ``np.searchsorted`` maps a
  chunk id to its row (used by ``exact_rerank``);
* ``tuning.json``: ``{}`` until autotune writes a profile (format: :mod:`udfs.faiss_tuning`);
* ``manifest.json``: what was built, from which store, why, with which libraries; its presence
  marks the version complete.  ``parent`` names the version that was CURRENT when the build
  started; ``incremental`` says whether this version is that parent updated (``remove_ids`` /
  ``add_with_ids``, trained quantizers kept) rather than built anew, ``incremental_reason`` why,
  and ``drift`` counts the ids added and removed since the parent and since the last full build
  (``drift.since_full_build``), whose fraction decides when an update becomes a full rebuild.
  An update is written like any build: a new version in a staging directory, never the
  parent's files (see :func:`udfs.faiss_build.update_index`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from udfs import store_schema
from udfs.faiss_params import ours_from_faiss
from udfs.registry import UdfError
from udfs.versioned_dir import VersionedDir

logger = logging.getLogger("codeintel.faiss")

INDEX_FILE = "index.faiss"
IDMAP_FILE = "faiss_idmap.parquet"
VECTORS_FILE = "vectors.npy"
TUNING_FILE = "tuning.json"
MANIFEST_FILE = "manifest.json"

BUILD_HINT = "build one with `python bootstrap.py build --catalog {catalog}` or `SELECT * FROM faiss_build()`"
REPAIR_HINT = (
    "rebuild with `python bootstrap.py build --catalog {catalog}` "
    "or roll back with `python bootstrap.py rollback --catalog {catalog}`"
)


def index_versions(catalog_dir: Path | str) -> VersionedDir:
    """The catalog's ``index/`` directory; a version is complete once it holds its manifest."""
    return VersionedDir(Path(catalog_dir) / "index", MANIFEST_FILE, "index")


def current_version(catalog_dir: Path | str) -> str | None:
    """The published version, read from the CURRENT symlink (one readlink: cheap enough per UDF call)."""
    return index_versions(catalog_dir).current()


def read_manifest(directory: Path, catalog_dir: Path) -> dict[str, Any]:
    """A version's manifest; a ``search_parameters`` string of an older build gets today's knob names."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UdfError(f"faiss: cannot read {path} ({error}); {REPAIR_HINT.format(catalog=catalog_dir)}") from error
    manifest["search_parameters"] = ours_from_faiss(manifest.get("search_parameters", ""))
    return manifest


def store_fingerprint(catalog_dir: Path) -> str | None:
    """The fingerprint of the published chunk store, or None when there is none."""
    try:
        manifest = store_schema.current_link(catalog_dir) / store_schema.STORE_MANIFEST
        return str(json.loads(manifest.read_text())["fingerprint"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None


def publish(catalog_dir: Path | str, version: str) -> dict[str, Any]:
    """Make a complete version the published one; return ``{"current", "previous"}`` (unchanged if already)."""
    return index_versions(catalog_dir).publish(version)


def rollback(catalog_dir: Path | str, to: str | None = None) -> dict[str, Any]:
    """Publish ``to``, or by default the newest version older than the current one."""
    versions = index_versions(catalog_dir)
    if to is None and versions.current() is None:
        raise UdfError(
            f"rollback: no index is published in {versions.root}; {BUILD_HINT.format(catalog=catalog_dir)}"
        )
    return versions.rollback(to)


def gc(catalog_dir: Path | str, keep: int = 3) -> dict[str, Any]:
    """Remove all but the ``keep`` newest versions, never CURRENT, and the staging directories of killed builds.

    Readers of a removed version keep working: the index was read into memory and
    ``vectors.npy`` is memory-mapped, and Linux keeps an unlinked file's pages alive while mapped.
    """
    return index_versions(catalog_dir).gc(keep)


def list_versions(catalog_dir: Path | str) -> dict[str, Any]:
    """Every complete version, oldest first, with the manifest facts a person picks a rollback target by."""
    versions = index_versions(catalog_dir)
    current = versions.current()
    rows = []
    for version in versions.complete_versions():
        manifest = read_manifest(versions.path(version), Path(catalog_dir))
        rows.append(
            {
                "version": version,
                "current": version == current,
                "family": manifest["family"],
                "factory": manifest["factory"],
                "ntotal": manifest["ntotal"],
                "store_version": manifest["store"]["version"],
                "built_at": manifest["built_at"],
                # Older manifests predate updates: each was a full build.
                "incremental": bool(manifest.get("incremental", False)),
                "parent": manifest.get("parent"),
            }
        )
    return {"current": current, "versions": rows}

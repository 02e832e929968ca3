"""The chunk store: ingest a repository or import a user's chunks as a new store version.

A store version is written by SQL scripts into a staging directory of the store's
:class:`udfs.versioned_dir.VersionedDir` (``sql/ingest_chunk_store.sql`` or
``sql/import_chunk_store.sql``, then ``sql/write_chunk_store.sql`` and
``sql/derive_store_metadata.sql``) and published by the atomic ``CURRENT`` flip only when
every step completed.  An unchanged store (same fingerprint) keeps the current version, so
ids, pools and indexes stay comparable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from codeintel.errors import CatalogError
from codeintel.layout import SQL_DIR, current_store, read_store_manifest, store_versions
from codeintel.session import Session
from codeintel.sqlfiles import apply_views, run_script
from udfs import ignore, progress, store_schema
from udfs.embedding import IMPORTED_PREFIX
from udfs.settings import Settings

LOG = logging.getLogger("codeintel")

#: Store versions kept with CURRENT, so an index built on the previous store can still be audited.
STORE_VERSIONS_KEPT = 2
DEFAULT_MAX_FILE_BYTES = 1_000_000
DEFAULT_MAX_CHUNK_CHARS = 1200


@dataclasses.dataclass(frozen=True)
class IngestResult:
    store: Path
    manifest: dict[str, Any]
    file_report: list[tuple[str, int]]
    unchanged: bool


@dataclasses.dataclass(frozen=True)
class StoreEmbedder:
    """What embedded a store version: recorded in store.json, checked when the store is searched."""

    name: str
    sha256: str | None
    dimension: int


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """A checked ingest: the repository, what ``.gitignore`` and ``ingest_exclude`` skip, the script's parameters.

    Made before any catalog is opened, so bad input is refused before anything is created.
    """

    root: Path
    files_seen: int
    parameters: dict[str, Any]


def plan_ingest(repo: str | os.PathLike[str], settings: Settings, *, include: Iterable[str] = ("**",),
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> IngestPlan:
    """Check the repository and arguments and decide, once and in Python, what the ignore rules skip."""
    root = Path(repo).expanduser()
    if not root.exists():
        raise CatalogError(f"ingest: repository path {root} does not exist; pass the root of a source tree")
    if not root.is_dir():
        raise CatalogError(f"ingest: repository path {root} is not a directory; pass the root of a source tree")
    if not os.access(root, os.R_OK | os.X_OK):
        raise CatalogError(f"ingest: repository path {root} is not readable; check its permissions")
    if max_file_bytes < 1 or max_chunk_chars < 1:
        raise CatalogError("ingest: max_file_bytes and max_chunk_chars must be at least 1")
    root = root.resolve()
    include = list(include)
    check_include_globs(include)
    try:
        decision = ignore.decide(root, settings.ingest_exclude, include)
    except ignore.IgnoreSettingError as error:
        raise CatalogError(str(error)) from error
    LOG.info("ingest: %d files under %s, %d entries ignored (.gitignore, setting ingest_exclude)",
             decision.files_seen, root, len(decision.ignored))
    return IngestPlan(root, decision.files_seen, {
        "repo_root": str(root) + os.sep,
        "include_globs": [escape_glob(str(root)) + "/" + pattern for pattern in include],
        **decision.as_parameters(),
        "max_file_bytes": max_file_bytes,
        "max_chunk_chars": max_chunk_chars,
    })


def ingest(session: Session, plan: IngestPlan) -> IngestResult:
    """Chunk and embed a planned repository into a new store version (``sql/ingest_chunk_store.sql``).

    ``session`` must be an ingesting one (``bootstrap.open_catalog(..., ingesting=True)``):
    its ``embed`` may differ from the current store's embedder.
    """
    name, sha256, dimension = session.connection.execute(
        "SELECT embed_model(), embed_model_sha256(), len(embed(''))").fetchone()
    with progress.tracking(plan.files_seen):
        return write_store(session, SQL_DIR / "ingest_chunk_store.sql", plan.parameters,
                           StoreEmbedder(name, sha256, int(dimension)))


def check_include_globs(include: Iterable[str]) -> None:
    """Refuse include globs that could reach outside the repository: absolute ones, and any ``..`` part."""
    for pattern in include:
        parts = re.split(r"[/\\]", pattern)
        if not pattern or Path(pattern).is_absolute() or ".." in parts:
            raise CatalogError(
                f"ingest: --include {pattern!r} is not a glob inside the repository; give a glob relative to "
                "REPO without '..' parts, such as 'src/**/*.py' (default '**')"
            )


#: DuckDB glob metacharacters; each is matched literally inside a one-character class.
GLOB_METACHARACTERS = re.compile(r"[*?\[]")


def escape_glob(path: str) -> str:
    """``path`` as a DuckDB glob that matches itself: ``*``, ``?`` and ``[`` become ``[*]``, ``[?]``, ``[[]``."""
    return GLOB_METACHARACTERS.sub(lambda match: f"[{match.group(0)}]", path)



def import_chunks(session: Session, source: str | os.PathLike[str]) -> IngestResult:
    """Publish a user's own Parquet chunks (any embedding dimension) as a chunk-store version."""
    path = Path(source).expanduser().resolve()
    dimension = check_chunk_schema(path)
    return write_store(session, SQL_DIR / "import_chunk_store.sql", {"source_path": str(path)},
                       StoreEmbedder(f"{IMPORTED_PREFIX}{path.name}", None, dimension))


def check_chunk_schema(path: Path) -> int:
    """Check a user's Parquet file has the chunk-store columns; return its embedding dimension."""

    if not path.is_file():
        raise CatalogError(f"import: no Parquet file at {path}")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise CatalogError(f"import: {path} is not a readable Parquet file ({error})") from error
    expected = store_schema.chunk_schema(384)
    missing = [name for name in expected.names if name not in schema.names]
    if missing:
        raise CatalogError(f"import: {path} lacks column(s) {', '.join(missing)}; a chunk store has "
                           + ", ".join(f"{field.name} {field.type}" for field in expected))
    embedding = schema.field("embedding").type
    if not (pa.types.is_fixed_size_list(embedding) and pa.types.is_float32(embedding.value_type)):
        raise CatalogError(
            f"import: {path} column embedding is {embedding}; it must be FixedSizeList(float32), "
            "e.g. rewrite it with DuckDB: COPY (SELECT * REPLACE (embedding::FLOAT[384] AS embedding) "
            "FROM 'in.parquet') TO 'out.parquet'"
        )
    if not pa.types.is_integer(schema.field("id").type):
        raise CatalogError(f"import: {path} column id is {schema.field('id').type}; it must be an integer")
    return embedding.list_size



def write_store(session: Session, script: Path, parameters: dict[str, Any], embedder: StoreEmbedder) -> IngestResult:
    """Stage chunks with ``script``, write them and their metadata to a staging directory, then publish.

    Nothing is published unless every step completed; an unchanged store (same
    fingerprint) keeps the current version so ids, pools and indexes stay comparable.
    """
    connection, catalog = session.connection, session.catalog
    if not session.context.ingesting:
        raise CatalogError("writing a store needs an ingesting session: bootstrap.open_catalog(..., ingesting=True)")
    if progress.bar_shown():
        # The ingest tracker draws a tqdm bar; DuckDB's own bar would draw beside it.
        connection.execute("SET enable_progress_bar = false")
    previous = current_store(catalog)
    previous_embedder = read_store_manifest(previous).get("embedder") if previous is not None else None
    if previous_embedder is not None and previous_embedder != embedder.name:
        LOG.info("the current store was embedded by %s; this run embeds every chunk again with %s",
                 previous_embedder, embedder.name)
    versions = store_versions(catalog)
    with versions.stage() as staging:
        staging_dir = str(staging.path) + os.sep
        report = run_script(connection, script, {**parameters, "staging_dir": staging_dir})
        file_report = [(str(s), int(n)) for s, n in report.fetchall()] if report is not None else []
        schema = store_schema.chunk_schema(embedder.dimension)
        connection.register("chunk_store_schema", schema.empty_table())
        try:
            connection.execute("CREATE OR REPLACE TEMP TABLE chunk_rows AS SELECT * FROM chunk_store_schema")
        finally:
            connection.unregister("chunk_store_schema")
        # The staged view may read the staging script's parameters, so they are set again.
        # It embeds, so run_script gives the embedder the cores (the thread rule).
        run_script(connection, SQL_DIR / "write_chunk_store.sql", {
            **parameters,
            "staging_dir": staging_dir,
            "chunk_columns": list(schema.names),
            "arrow_schema": store_schema.arrow_schema_metadata(embedder.dimension),
        })
        run_script(connection, SQL_DIR / "derive_store_metadata.sql",
                   {"staging_dir": staging_dir, "embedder": embedder.name, "embedder_sha256": embedder.sha256})
        manifest = read_store_manifest(staging.path)
        if previous is not None and read_store_manifest(previous).get("fingerprint") == manifest["fingerprint"]:
            LOG.info("chunk store unchanged (fingerprint %s); keeping %s", manifest["fingerprint"], previous.name)
            return IngestResult(previous, read_store_manifest(previous), file_report, unchanged=True)
        version = staging.commit()
    versions.publish(version)
    versions.gc(keep=STORE_VERSIONS_KEPT)
    apply_views(connection, catalog)
    store = versions.path(version)
    return IngestResult(store, read_store_manifest(store), file_report, unchanged=False)

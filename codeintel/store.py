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
import functools
import hashlib
import importlib.metadata
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from codeintel.chunk_locations import apply_catalog_objects
from codeintel.errors import CatalogError
from codeintel.layout import PROJECT_DIR, SQL_DIR, current_store, read_store_manifest, store_versions
from codeintel.session import Session
from codeintel.sqlfiles import run_script
from udfs import ignore, progress, store_schema
from udfs.embedding import IMPORTED_PREFIX
from udfs.settings import Settings

LOG = logging.getLogger("codeintel")

#: Store versions kept with CURRENT, so an index built on the previous store can still be audited.
STORE_VERSIONS_KEPT = 2
DEFAULT_MAX_FILE_BYTES = 1_000_000
DEFAULT_MAX_CHUNK_CHARS = 1200


#: An incremental ingest adds a part and hides replaced rows (udfs/store_schema.py); past these a
#: write compacts the store into one part again, so a read of the chunks view never opens more
#: than this many files nor reads more than this share of rows that are gone.
STORE_MAX_PARTS = 16
STORE_MAX_DELETED_FRACTION = 0.05
#: ... counting hidden rows only past this many: the chunks view's anti-join costs by their number
#: (about 0.2 ms for none, 0.8 ms for 100, 1.5 ms for 5,000; BENCHMARKS.md), not their share.
STORE_MIN_DELETED_TO_COMPACT = 1000
PART_NUMBER = re.compile(r"chunks-(\d+)\.parquet")

#: files.parquet columns an incremental ingest compares a file against (sql/ingest_chunk_store.sql).
FILE_STATE_COLUMNS = ("mtime", "content_md5", "listed_at")


@dataclasses.dataclass(frozen=True)
class IngestResult:
    store: Path
    manifest: dict[str, Any]
    file_report: list[tuple[str, int]]
    unchanged: bool
    #: What an ingest reused from the previous store: files_reused (not re-chunked), files_unread
    #: (of those, not even read: size and mtime matched), chunks_from_unchanged_files,
    #: embeddings_reused (chunks of changed files whose id the previous store holds) and
    #: chunks_embedded.  Empty for imports.
    reuse: dict[str, int] = dataclasses.field(default_factory=dict)
    #: How the version was written (StoreWrite.reason); empty when the previous version was kept.
    write: str = ""


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
    embedder = StoreEmbedder(name, sha256, int(dimension))
    chunker = chunker_signature(int(plan.parameters["max_chunk_chars"]))
    previous_store, reuse_files = reusable_store(current_store(session.catalog), embedder, chunker)
    parameters = {
        **plan.parameters,
        "previous_store": None if previous_store is None else str(previous_store) + os.sep,
        "reuse_files": reuse_files,
    }
    with progress.tracking(plan.files_seen):
        return write_store(session, SQL_DIR / "ingest_chunk_store.sql", parameters, embedder, chunker=chunker)


def chunker_signature(max_chunk_chars: int) -> str:
    """What cut a store's chunks: the budget, the chunker's source and the tree-sitter packages.

    Recorded in store.json; an unchanged file reuses its previous chunks only when this is
    equal, because the same bytes cut by another chunker give other chunks.
    """
    source = hashlib.sha256((PROJECT_DIR / "udfs" / "chunking.py").read_bytes()).hexdigest()[:16]
    return f"cast(max_chunk_chars={max_chunk_chars}, chunking.py={source}, {', '.join(tree_sitter_packages())})"


@functools.cache
def tree_sitter_packages() -> tuple[str, ...]:
    """The installed tree-sitter packages and versions (read once: scanning every distribution's metadata
    costs about 50 ms, and a process does not change its grammars)."""
    return tuple(sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions()
                        if (dist.metadata["Name"] or "").lower().replace("_", "-").startswith("tree-sitter")))


def reusable_store(previous: Path | None, embedder: StoreEmbedder, chunker: str) -> tuple[Path | None, bool]:
    """The store whose embeddings this ingest may reuse (or None), and whether its files' chunks too.

    Embeddings are reused only from a store the same embedder (label and model hash) made;
    unchanged files' chunks only when the store also records file state and the same chunker.
    Each refusal is logged with why, since it makes the ingest embed or chunk everything.
    """
    if previous is None:
        return None, False
    manifest = read_store_manifest(previous)
    same_embedder = (manifest.get("embedder") == embedder.name and embedder.sha256 is not None
                     and manifest.get("embedder_sha256") == embedder.sha256)
    if not same_embedder:
        LOG.info("the current store was embedded by %s (sha256 %s); this run embeds every chunk again with %s "
                 "(sha256 %s)", manifest.get("embedder"), manifest.get("embedder_sha256"), embedder.name,
                 embedder.sha256)
        return None, False
    try:
        recorded = set(pq.read_schema(previous / "files.parquet").names)
    except (OSError, pa.ArrowException):
        recorded = set()
    if not set(FILE_STATE_COLUMNS) <= recorded:
        LOG.info("the current store records no file state (an older ingest or an import): every file is read "
                 "and chunked again; embeddings of unchanged chunks are reused")
        return previous, False
    if manifest.get("chunker") != chunker:
        LOG.info("the current store was chunked by %s, this run chunks with %s: every file is chunked again; "
                 "embeddings of unchanged chunks are reused", manifest.get("chunker"), chunker)
        return previous, False
    return previous, True


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



def write_store(session: Session, script: Path, parameters: dict[str, Any], embedder: StoreEmbedder, *,
                chunker: str | None = None) -> IngestResult:
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
    versions = store_versions(catalog)
    with versions.stage() as staging:
        staging_dir = str(staging.path) + os.sep
        report = run_script(connection, script, {**parameters, "staging_dir": staging_dir})
        file_report, reuse = read_report(report)
        if reuse:
            LOG.info("ingest: %d files unchanged (not chunked again; %d of them not read: same size and mtime), "
                     "%d chunks taken from them, %d embeddings reused by chunk id, %d chunks embedded",
                     reuse["files_reused"], reuse["files_unread"], reuse["chunks_from_unchanged_files"],
                     reuse["embeddings_reused"], reuse["chunks_embedded"])
        if previous is not None and reuse.pop("store_unchanged", False):
            # Same files, each unchanged: the chunks (so the fingerprint) are the previous store's.
            LOG.info("chunk store unchanged (every chunked file unchanged); keeping %s", previous.name)
            apply_catalog_objects(connection, catalog)
            return IngestResult(previous, read_store_manifest(previous), file_report, unchanged=True, reuse=reuse)
        write = plan_write(previous, parameters, reuse)
        if write.incremental:
            for part in store_schema.chunk_parts(previous):
                # A version never changes a file it published, so its parts can be shared.
                os.link(part, staging.path / part.name)
        schema = store_schema.chunk_schema(embedder.dimension)
        connection.register("chunk_store_schema", schema.empty_table())
        try:
            connection.execute("CREATE OR REPLACE TEMP TABLE chunk_rows AS SELECT * FROM chunk_store_schema")
        finally:
            connection.unregister("chunk_store_schema")
        # The staged views may read the staging script's parameters, so they are set again.
        run_script(connection, SQL_DIR / "write_chunk_store.sql", {
            **parameters,
            "staging_dir": staging_dir,
            "incremental": write.incremental,
            "part_file": write.part_file,
            "chunk_columns": list(schema.names),
            "arrow_schema": store_schema.arrow_schema_metadata(embedder.dimension),
        })
        LOG.info("chunk store: %s", write.reason)
        run_script(connection, SQL_DIR / "derive_store_metadata.sql",
                   {"staging_dir": staging_dir, "embedder": embedder.name, "embedder_sha256": embedder.sha256,
                    "chunker": chunker, "dimension": embedder.dimension})
        manifest = read_store_manifest(staging.path)
        if (previous is not None and read_store_manifest(previous).get("fingerprint") == manifest["fingerprint"]
                and same_file_state_columns(previous, staging.path)):
            LOG.info("chunk store unchanged (fingerprint %s); keeping %s", manifest["fingerprint"], previous.name)
            apply_catalog_objects(connection, catalog)
            return IngestResult(previous, read_store_manifest(previous), file_report, unchanged=True, reuse=reuse)
        version = staging.commit()
    versions.publish(version)
    versions.gc(keep=STORE_VERSIONS_KEPT)
    apply_catalog_objects(connection, catalog)
    store = versions.path(version)
    return IngestResult(store, read_store_manifest(store), file_report, unchanged=False, reuse=reuse,
                        write=write.reason)


@dataclasses.dataclass(frozen=True)
class StoreWrite:
    """How a store version is written: one part (full), or a part added to the previous version's."""

    incremental: bool
    part_file: str
    reason: str


def plan_write(previous: Path | None, parameters: dict[str, Any], reuse: dict[str, int]) -> StoreWrite:
    """Incremental when an ingest reuses the previous store's files and the result stays compact.

    The previous version's parts are shared (hard links) and only the new chunks are written,
    unless that would leave more than :data:`STORE_MAX_PARTS` parts or hidden rows above
    :data:`STORE_MAX_DELETED_FRACTION` of the rows read (and :data:`STORE_MIN_DELETED_TO_COMPACT`),
    or a known chunk moved lines (its stored row cannot stand); then every chunk is written again
    as one part (a compaction).
    """
    full = store_schema.BASE_PART
    if previous is None or not reuse or not parameters.get("reuse_files"):
        return StoreWrite(False, full, "full write (no previous store with this embedder and chunker)")
    parts = store_schema.chunk_parts(previous)
    live = int(read_store_manifest(previous).get("chunk_count", 0)) - reuse["chunks_deleted"] + reuse["chunks_added"]
    hidden = len(store_schema.deleted_ids(previous)) + reuse["chunks_deleted"]
    if reuse["chunks_moved"]:
        return StoreWrite(False, full, f"full write: {reuse['chunks_moved']} unchanged chunks moved lines")
    if len(parts) + 1 > STORE_MAX_PARTS:
        return StoreWrite(False, full, f"full write (compaction): {len(parts)} parts, at most {STORE_MAX_PARTS}")
    if hidden > max(STORE_MAX_DELETED_FRACTION * (live + hidden), STORE_MIN_DELETED_TO_COMPACT):
        return StoreWrite(False, full, f"full write (compaction): {hidden} hidden rows beside {live} chunks "
                                       f"(at most {STORE_MAX_DELETED_FRACTION:.0%} of the rows read)")
    numbers = [int(match.group(1)) for part in parts if (match := PART_NUMBER.fullmatch(part.name))]
    part_file = f"chunks-{max(numbers, default=0) + 1:04d}.parquet"
    return StoreWrite(True, part_file, f"incremental write: {reuse['chunks_added']} chunks added as {part_file} "
                                       f"beside {len(parts)} shared parts, {reuse['chunks_deleted']} hidden")


def same_file_state_columns(previous: Path, staged: Path) -> bool:
    """Whether both files.parquet record file state alike, so keeping ``previous`` loses none.

    A store written before file state was recorded is replaced once by an unchanged re-ingest:
    the next ingest can then skip unchanged files.
    """
    def state(path: Path) -> bool:
        try:
            return set(FILE_STATE_COLUMNS) <= set(pq.read_schema(path / "files.parquet").names)
        except (OSError, pa.ArrowException):
            return False
    return state(previous) == state(staged)


def read_report(report: Any) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """(status, files) rows of a staging script's last statement, and the ingest's reuse counts if it has them."""
    if report is None:
        return [], {}
    rows = report.fetchall()
    columns = list(report.columns)
    file_report = [(str(row[0]), int(row[1])) for row in rows]
    counted = ("chunks_from_unchanged_files", "embeddings_reused", "chunks_embedded", "chunks_added",
               "chunks_deleted", "chunks_moved")
    if "files_reused" not in columns:
        return file_report, {}
    reuse = {name: sum(int(row[columns.index(name)]) for row in rows) for name in ("files_reused", "files_unread")}
    reuse.update({name: int(rows[0][columns.index(name)]) if rows else 0 for name in counted})
    if "store_unchanged" in columns and rows:
        reuse["store_unchanged"] = bool(rows[0][columns.index("store_unchanged")])
    return file_report, reuse

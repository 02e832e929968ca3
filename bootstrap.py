"""Connect to a codeintel-sql catalog, and the command line.

``connect`` opens ``<catalog>/catalog.duckdb`` and prepares it in a fixed order:
extensions, settings, UDFs (every ``udfs/<family>.py`` REGISTRY), macros
(``sql/macros/*.sql``), then views (``views/*.sql``) in the dependency order sqlglot
reads from the view files themselves.  Scripts in ``sql/`` take their parameters as
DuckDB variables, bound with prepared statements, never spliced into SQL text.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import graphlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import string
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.tokens import TokenType

from codeintel import static_training
from codeintel.corpus import DEMO_PACKAGES
from udfs import faiss_index, ignore, progress
from udfs import staging as staging_dirs
from udfs.context import CatalogContext
from udfs.embedding import IMPORTED_PREFIX
from udfs.registry import UdfError, UdfSpec, check_unique

LOG = logging.getLogger("codeintel")

PROJECT_DIR = Path(__file__).resolve().parent
SQL_DIR = PROJECT_DIR / "sql"
VIEWS_DIR = PROJECT_DIR / "views"
MACROS_DIR = SQL_DIR / "macros"

#: UDF families in registration order; a later family may call an earlier one's UDFs.
UDF_FAMILIES = ("udfs.chunking", "udfs.embedding", "udfs.metrics", "udfs.faiss_search", "udfs.explain",
                "udfs.evaluation", "udfs.autotune", "udfs.xtr")
#: Extensions loaded on every connection, from their PyPI packages when offline.
EXTENSIONS = ("fts", "vss")
#: Table functions whose first argument is a file path or glob, resolved against the catalog.
FILE_READERS = frozenset(
    {"read_parquet", "parquet_scan", "read_json", "read_json_auto", "read_ndjson", "read_csv",
     "read_csv_auto", "read_text", "read_blob", "glob"}
)
CATALOG_DB = "catalog.duckdb"
STORE_DIR = "store"
#: Store versions kept besides CURRENT, so an index built on the previous store can still be audited.
STORE_VERSIONS_KEPT = 2
DEFAULT_MAX_FILE_BYTES = 1_000_000
DEFAULT_MAX_CHUNK_CHARS = 1200
#: The demo's XTR lens: lens queries and chunks drawn besides their pooled ones (see evaluate_demo).
DEMO_XTR_QUERIES = 12
DEMO_XTR_SAMPLE = 40


class CatalogError(RuntimeError):
    """The catalog, a script or a view file is unusable; the message says what to do."""


# --------------------------------------------------------------------------- connect


def connect(
    catalog_dir: str | os.PathLike[str],
    read_only: bool = False,
    settings: Mapping[str, Any] | None = None,
    ingesting: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A connection to ``<catalog_dir>/catalog.duckdb`` with every UDF, macro and view ready.

    ``settings`` override the families' defaults and ``<catalog_dir>/settings.json``.
    Read-only connections reuse the views a writing connection persisted.  ``ingesting``
    connections embed a new store, so ``embed`` may differ from the current store's embedder.
    """
    catalog = Path(catalog_dir).expanduser().resolve()
    database = catalog / CATALOG_DB
    if read_only and not database.exists():
        raise CatalogError(
            f"no catalog at {catalog}: create one with `python bootstrap.py ingest REPO --catalog {catalog}`"
        )
    # Settings are checked before the directory is made: a rejected --set leaves nothing behind.
    resolved = resolve_settings(catalog, settings)
    catalog.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(str(database), read_only=read_only,
                                config={"allow_unsigned_extensions": "true"})
    try:
        load_extensions(connection)
        context = CatalogContext(catalog_dir=catalog, ingesting=ingesting, settings=resolved)
        apply_settings(connection, context)
        register_udfs(connection, context)
        apply_macros(connection)
        if not read_only:
            apply_views(connection, catalog)
    except BaseException:
        connection.close()
        raise
    return connection


def load_extensions(connection: duckdb.DuckDBPyConnection) -> None:
    """LOAD each extension from its PyPI package (offline), else from DuckDB's own repository."""
    for name in EXTENSIONS:
        bundled = bundled_extension_path(name)
        if bundled is not None:
            connection.execute("LOAD " + quote_literal(str(bundled)))
        else:
            connection.execute(f"INSTALL {name}; LOAD {name}")


def bundled_extension_path(name: str) -> Path | None:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}"
            / f"{name}.duckdb_extension")
    return path if path.exists() else None


def resolve_settings(catalog: Path, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Family defaults, then ``settings.json`` in the catalog, then explicit overrides."""
    known = settings_defaults()
    settings: dict[str, Any] = {}
    for module in family_modules():
        settings.update(getattr(module, "DEFAULT_SETTINGS", {}))
    settings_file = catalog / "settings.json"
    if settings_file.exists():
        try:
            stored = json.loads(settings_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CatalogError(f"{settings_file} is not valid JSON ({error}); fix or delete it") from error
        if not isinstance(stored, dict):
            raise CatalogError(f"{settings_file} must hold a JSON object of settings, such as "
                               '{"embed_model": "static-code"}; fix or delete it')
        # A misspelled key would otherwise be ignored and its default used without a word.
        unknown = sorted(set(stored) - set(known))
        if unknown:
            raise CatalogError(f"{settings_file}: unknown setting(s) {', '.join(unknown)}; fix the key(s) or "
                               f"remove them; known: {', '.join(sorted(known))}")
        settings.update(stored)
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise CatalogError(f"unknown setting(s) {', '.join(unknown)} (--set); known: {', '.join(sorted(known))}")
    settings.update(overrides or {})
    return settings


def settings_defaults() -> dict[str, Any]:
    defaults: dict[str, Any] = {"threads": os.cpu_count() or 1}
    for module in family_modules():
        defaults.update(getattr(module, "DEFAULT_SETTINGS", {}))
    return defaults


def apply_settings(connection: duckdb.DuckDBPyConnection, context: CatalogContext) -> None:
    context.settings.setdefault("threads", os.cpu_count() or 1)
    connection.execute("SET threads = ?", [int(context.settings["threads"])])
    # DuckDB's bar redraws on a terminal; elsewhere (CI logs, pipes) it would print thousands
    # of lines, and the embedder's progress log says enough there.
    connection.execute("SET enable_progress_bar = ?", [sys.stdout.isatty()])


def family_modules() -> list[Any]:
    return [importlib.import_module(name) for name in UDF_FAMILIES]


def all_udf_specs() -> list[UdfSpec]:
    """Every registry entry, in family order; duplicate names raise."""
    specs = [spec for module in family_modules() for spec in module.REGISTRY]
    check_unique(specs)
    return specs


def register_udfs(connection: duckdb.DuckDBPyConnection, context: CatalogContext) -> None:
    for spec in all_udf_specs():
        spec.register(connection, context)


def apply_macros(connection: duckdb.DuckDBPyConnection) -> None:
    """Table macros that call Python UDFs; TEMP, so the persisted catalog stays stock-readable."""
    for path in sorted(MACROS_DIR.glob("*.sql")):
        for statement in duckdb.extract_statements(path.read_text()):
            try:
                connection.execute(statement)
            except duckdb.Error as error:
                raise CatalogError(f"{path.relative_to(PROJECT_DIR)}: {error}") from error


# --------------------------------------------------------------------------- views


#: Catalog facts a view file may name as ``${fact}``: integers read from the current store,
#: because DuckDB types such as the embedding's ``FLOAT[n]`` cannot come from a variable.
VIEW_FACT_PLACEHOLDERS = {"embedding_dim": 1}


@dataclasses.dataclass(frozen=True)
class ViewFile:
    """A parsed ``views/<name>.sql``: what it reads, and the SQL with catalog paths made absolute."""

    name: str
    path: Path
    dependencies: frozenset[str]
    source_paths: tuple[str, ...]
    sql_template: str

    def sql_for(self, catalog: Path, facts: Mapping[str, int]) -> str:
        rendered = string.Template(self.sql_template).substitute({k: int(v) for k, v in facts.items()})
        return absolutize_reader_paths(rendered, catalog)


def catalog_facts(catalog: Path) -> dict[str, int]:
    store = current_store(catalog)
    if store is None:
        return dict(VIEW_FACT_PLACEHOLDERS)
    return {"embedding_dim": int(read_store_manifest(store)["dimension"])}


def read_view_files(views_dir: Path = VIEWS_DIR) -> dict[str, ViewFile]:
    views: dict[str, ViewFile] = {}
    for path in sorted(views_dir.glob("*.sql")):
        view = parse_view_file(path)
        views[view.name] = view
    return views


def parse_view_file(path: Path) -> ViewFile:
    text = path.read_text()
    try:
        placeholder_free = string.Template(text).substitute(VIEW_FACT_PLACEHOLDERS)
    except (KeyError, ValueError) as error:
        raise CatalogError(f"{path}: unknown placeholder {error}; known: "
                           + ", ".join("${" + name + "}" for name in VIEW_FACT_PLACEHOLDERS)) from error
    try:
        statements = [s for s in sqlglot.parse(placeholder_free, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as error:
        raise CatalogError(f"{path}: not valid SQL ({error})") from error
    if len(statements) != 1 or not isinstance(statements[0], exp.Create) or statements[0].kind != "VIEW":
        raise CatalogError(f"{path}: a view file holds exactly one CREATE VIEW statement")
    create = statements[0]
    name = create.this.name
    if name != path.stem:
        raise CatalogError(f"{path}: defines view {name!r}; a view file is named after its view ({name}.sql)")
    return ViewFile(
        name=name,
        path=path,
        dependencies=frozenset(referenced_relations(create.expression)),
        source_paths=tuple(reader_paths(placeholder_free)),
        sql_template=text,
    )


def referenced_relations(query: exp.Expression) -> set[str]:
    """Names of tables and views a query reads, excluding its CTEs and table functions."""
    names: set[str] = set()
    for scope in traverse_scope(query):
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                names.add(source.name)
    return names


def view_order(views: Mapping[str, ViewFile], existing_relations: Iterable[str]) -> list[str]:
    """Views sorted so each follows the views it reads; unknown relations and cycles raise."""
    known = set(views) | {name.lower() for name in existing_relations}
    graph: dict[str, set[str]] = {}
    for view in views.values():
        unknown = sorted(d for d in view.dependencies if d not in views and d.lower() not in known)
        if unknown:
            raise CatalogError(
                f"{view.path}: reads unknown relation(s) {', '.join(unknown)}; "
                "add a view file for it or create the table before applying views"
            )
        graph[view.name] = {d for d in view.dependencies if d in views}
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        files = " -> ".join(str(views[name].path.name) for name in cycle)
        raise CatalogError(f"views form a cycle: {files}; break it by inlining one view") from error


def apply_views(connection: duckdb.DuckDBPyConnection, catalog: Path,
                views_dir: Path = VIEWS_DIR) -> list[str]:
    """Create or replace every view whose source files exist; return the names applied.

    A view over files not written yet (no index built, say) is skipped with its
    dependents and applied by a later call, so ``connect`` works on a new catalog.
    """
    views = read_view_files(views_dir)
    existing = [row[0] for row in connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
    facts = catalog_facts(catalog)
    applied: list[str] = []
    skipped: set[str] = set()
    for name in view_order(views, [e for e in existing if e not in views]):
        view = views[name]
        missing = [p for p in view.source_paths if not any_file_matches(catalog, p)]
        blocked = sorted(view.dependencies & skipped)
        if missing or blocked:
            skipped.add(name)
            LOG.debug("view %s not applied yet: %s", name, ", ".join(missing or blocked))
            continue
        try:
            connection.execute(view.sql_for(catalog, facts))
        except duckdb.Error as error:
            raise CatalogError(f"{view.path}: {error}") from error
        applied.append(name)
    return applied


def any_file_matches(catalog: Path, pattern: str) -> bool:
    path = Path(pattern) if Path(pattern).is_absolute() else catalog / pattern
    if any(ch in pattern for ch in "*?["):
        return any(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
    return path.exists()


def reader_tokens(sql: str) -> Iterator[sqlglot.tokens.Token]:
    """String tokens forming the first argument of a file-reading table function."""
    tokens = sqlglot.tokenize(sql, read="duckdb")
    index = 0
    while index < len(tokens) - 1:
        token = tokens[index]
        if token.text.lower() in FILE_READERS and tokens[index + 1].token_type == TokenType.L_PAREN:
            depth = 0
            for inner in tokens[index + 1:]:
                if inner.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET):
                    depth += 1
                elif inner.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET):
                    depth -= 1
                    if depth == 0:
                        break
                elif inner.token_type == TokenType.COMMA and depth == 1:
                    break
                elif inner.token_type == TokenType.STRING:
                    yield inner
        index += 1


def reader_paths(sql: str) -> list[str]:
    return [token.text for token in reader_tokens(sql)]


def absolutize_reader_paths(sql: str, catalog: Path) -> str:
    """Rewrite relative reader paths against the catalog, keeping the rest of the text as written.

    Views are persisted with absolute paths so that a stock DuckDB client, started from
    any directory, reads the right files; the literal is regenerated by sqlglot, so a
    catalog path with quotes in it cannot change the statement.
    """
    pieces: list[str] = []
    cursor = 0
    for token in reader_tokens(sql):
        if Path(token.text).is_absolute():
            continue
        start = sql.rfind("'", 0, token.start + 1)
        pieces.append(sql[cursor:start])
        pieces.append(quote_literal(str(catalog / token.text)))
        cursor = token.end + 1
    pieces.append(sql[cursor:])
    return "".join(pieces)


def quote_literal(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="duckdb")


# --------------------------------------------------------------------------- scripts


def run_script(connection: duckdb.DuckDBPyConnection, script: str | os.PathLike[str],
               parameters: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run every statement of a SQL file; return the last statement's result, if it has rows.

    Each parameter becomes a DuckDB variable (``getvariable('name')`` in the script),
    bound with a prepared statement, and is reset afterwards: variables live as long as
    the connection, and a later script must not see this one's values.
    """
    path = Path(script)
    if not path.is_file():
        raise CatalogError(f"no SQL script at {path}")
    names = []
    for name in parameters or {}:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise CatalogError(f"script parameter name {name!r} is not an identifier")
        names.append(exp.to_identifier(name).sql("duckdb"))
    statements = split_statements(path.read_text())
    try:
        for quoted, value in zip(names, (parameters or {}).values(), strict=True):
            connection.execute(f"SET VARIABLE {quoted} = ?", [value])
        result = None
        owners = core_owning_names(connection)
        for number, statement in enumerate(statements, start=1):
            LOG.debug("%s: statement %d of %d", path.name, number, len(statements))
            words = sql_words(statement)
            statement_started = time.monotonic()
            try:
                with core_owner_threads(connection, words, owners):
                    if number < len(statements):
                        connection.execute(statement)
                    else:
                        # The final query runs, and is materialised, here: its errors name the statement
                        # and its rows are those of this script's variables, reset below.
                        relation = connection.sql(statement)
                        result = connection.from_arrow(relation.to_arrow_table()) if relation is not None else None
            except duckdb.Error as error:
                raise CatalogError(f"{path.name}, statement {number}: {describe_error(error)}") from error
            # A slow statement (write_pool.sql's channel query) gets a log line; fast ones stay quiet.
            progress.statement_done(path.name, number, len(statements), time.monotonic() - statement_started)
            if words & DEFINING_WORDS:
                owners = core_owning_names(connection)
        return result
    finally:
        for quoted in names:
            connection.execute(f"RESET VARIABLE {quoted}")


def split_statements(text: str) -> list[str]:
    """The statements of a script, split at its semicolons by DuckDB's tokenizer.

    Each statement is parsed only when it runs: a PRAGMA such as ``create_fts_index``
    expands while DuckDB parses it, and needs the tables earlier statements create.
    """
    ends = [start for start, kind in duckdb.tokenize(text) if kind == duckdb.token_type.operator and text[start] == ";"]
    pieces = (text[start:end] for start, end in zip([0, *(end + 1 for end in ends)], [*ends, len(text)], strict=True))
    # Comments produce no tokens, so a piece holding only comments is dropped.
    return [piece.strip() for piece in pieces if duckdb.tokenize(piece)]


#: Where DuckDB starts the Python stack of an exception raised inside a UDF.
UDF_TRACEBACK_MARKER = re.compile(r"\n\s*At:\n")


def describe_error(error: BaseException) -> str:
    """DuckDB's message on one line, without the UDF wrapper noise and stack, so users read the cause first.

    DuckDB appends the Python stack of a failing UDF ("At:" and a line per frame) to the
    message; that stack is for debugging (``--debug`` logs it), not for users.
    """
    text = str(error)
    for marker in ("UdfError: ", "Invalid Input Error: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return one_line(text)


def one_line(text: str) -> str:
    """``text`` without a UDF's Python stack, its lines joined: one log line per failure."""
    text = UDF_TRACEBACK_MARKER.split(text, maxsplit=1)[0]
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


# --------------------------------------------------------------------------- chunk store


def store_root(catalog: Path) -> Path:
    return catalog / STORE_DIR


def current_store(catalog: Path) -> Path | None:
    current = store_root(catalog) / "CURRENT"
    return current.resolve() if current.exists() else None


@contextlib.contextmanager
def duckdb_threads(connection: duckdb.DuckDBPyConnection, threads: int) -> Iterator[None]:
    """Run a block with DuckDB's ``threads`` setting at ``threads``, then restore it."""
    previous = connection.execute("SELECT current_setting('threads')").fetchone()[0]
    connection.execute("SET threads = ?", [threads])
    try:
        yield
    finally:
        connection.execute("SET threads = ?", [previous])


#: One identifier or keyword: a quoted name or a run of word characters, after any punctuation
#: the tokenizer counts with it (a cast's ``::`` starts the type's token).
WORD = re.compile(r'[^\w"]*(?:"((?:[^"]|"")*)"|(\w+))')


def sql_words(text: str) -> set[str]:
    """The identifiers and keywords of SQL text, lower-cased, as DuckDB's tokenizer reads them."""
    # The tokenizer gives where each token starts; WORD reads the token from there.
    return {
        "".join(WORD.match(text, start).groups("")).lower()
        for start, kind in duckdb.tokenize(text)
        if kind in (duckdb.token_type.identifier, duckdb.token_type.keyword)
    }


def core_owning_names(connection: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The UDFs that run their own thread pool, and every macro and view that calls one.

    Who owns the cores: DuckDB's Python client busy-waits on the calling thread while a
    worker thread runs a chunk, so a UDF that parallelises over the chunk itself (FAISS's
    OpenMP team, onnxruntime) shares its cores with that spin.  faiss_topk over 2,000
    queries ran 1.5x the time of a direct index.search when a DuckDB worker called it, and
    1.05x with ``threads = 1``, when the client thread runs it; embedding ran 1.4x faster
    (bench/bench_search.py, bench/bench_ingest.py).  So a statement naming any of these runs
    with DuckDB on one thread (:func:`core_owner_threads`) and the UDF owns the cores.
    """
    names = {spec.name for spec in all_udf_specs() if spec.owns_cores}
    bodies = [(name.lower(), sql_words(body)) for name, body in
              connection.execute((SQL_DIR / "catalog_definitions.sql").read_text()).fetchall()]
    while grown := {name for name, words in bodies if name not in names and words & names}:
        names |= grown
    return frozenset(names)


def core_owner_threads(connection: duckdb.DuckDBPyConnection, words: set[str],
                       owners: frozenset[str]) -> contextlib.AbstractContextManager[None]:
    """DuckDB on one thread while a statement runs whose ``words`` (:func:`sql_words`) name one of ``owners``."""
    return duckdb_threads(connection, 1) if words & owners else contextlib.nullcontext()


#: Statements with these words may define a macro or view that calls a core-owning UDF.
DEFINING_WORDS = frozenset({"macro", "function", "view"})


@contextlib.contextmanager
def staging_directory(parent: Path) -> Iterator[Path]:
    """A hidden directory under ``parent``, owned by this process, removed unless the caller renames it away.

    A process killed inside this block (kill -9) runs no ``finally``; its directory records
    its pid and host, so the next ingest or ``gc`` removes it (:mod:`udfs.staging`), which
    this call starts by doing for the directories of earlier killed writers.
    """
    staging_dirs.remove_abandoned(parent)
    staging = staging_dirs.create(parent)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_store_version(catalog: Path, staging: Path) -> Path:
    """Move a complete staging store into ``versions/`` and flip ``CURRENT`` to it atomically."""
    versions = store_root(catalog) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    final = versions / version
    staging_dirs.release(staging)
    staging.rename(final)
    flip_symlink(store_root(catalog) / "CURRENT", Path("versions") / version)
    collect_old_store_versions(catalog)
    return final


def flip_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: readers see the old or the new target, never none."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    temporary.symlink_to(target)
    os.replace(temporary, link)


def collect_old_store_versions(catalog: Path) -> None:
    """Keep CURRENT and ``STORE_VERSIONS_KEPT - 1`` older store versions; remove abandoned staging directories.

    Only abandoned ones: a staging directory whose owner still runs is another ingest in
    progress, and removing it would fail that ingest.
    """
    versions = store_root(catalog) / "versions"
    current = current_store(catalog)
    old = sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".") and p != current)
    for path in old[: max(0, len(old) - (STORE_VERSIONS_KEPT - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    staging_dirs.remove_abandoned(versions)


def read_store_manifest(store: Path) -> dict[str, Any]:
    return json.loads((store / "store.json").read_text())


@dataclasses.dataclass(frozen=True)
class IngestResult:
    store: Path
    manifest: dict[str, Any]
    file_report: list[tuple[str, int]]
    unchanged: bool


def chunk_store_schema(dimension: int) -> Any:
    """The Arrow schema of ``chunks.parquet``; ``embedding`` is FixedSizeList(float32, dimension)."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.int64()), ("uri", pa.string()), ("start_byte", pa.int64()), ("end_byte", pa.int64()),
        ("start_line", pa.int32()), ("end_line", pa.int32()), ("language", pa.string()), ("kind", pa.string()),
        ("symbols", pa.list_(pa.string())), ("content", pa.string()),
        ("embedding", pa.list_(pa.float32(), dimension)),
    ])


def arrow_schema_metadata(dimension: int) -> str:
    """``ARROW:schema`` footer value: DuckDB's COPY writes it so Arrow readers see FixedSizeList."""
    import base64

    return base64.b64encode(chunk_store_schema(dimension).serialize().to_pybytes()).decode("ascii")


def ingest(repo: str | os.PathLike[str], catalog_dir: str | os.PathLike[str], *,
           include: Iterable[str] = ("**",), max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
           max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
           settings: Mapping[str, Any] | None = None) -> IngestResult:
    """Chunk and embed a repository into a new chunk-store version (``sql/ingest_chunk_store.sql``)."""
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
    # Settings are resolved here too (connect resolves them again): the ignore decision is made
    # in Python, once, before any SQL runs, and a bad ingest_exclude is refused before any work.
    resolved = resolve_settings(Path(catalog_dir).expanduser().resolve(), settings)
    try:
        decision = ignore.decide(root, resolved["ingest_exclude"], include)
    except ignore.IgnoreSettingError as error:
        raise CatalogError(str(error)) from error
    LOG.info("ingest: %d files under %s, %d entries ignored (.gitignore, setting ingest_exclude)",
             decision.files_seen, root, len(decision.ignored))
    parameters = {
        "repo_root": str(root) + os.sep,
        "include_globs": [escape_glob(str(root)) + "/" + pattern for pattern in include],
        **decision.as_parameters(),
        "max_file_bytes": max_file_bytes,
        "max_chunk_chars": max_chunk_chars,
    }
    with progress.tracking(decision.files_seen):
        return write_store(catalog_dir, SQL_DIR / "ingest_chunk_store.sql", parameters, settings,
                           embedder_of=lambda connection: connection.execute(
                               "SELECT embed_model(), embed_model_sha256()").fetchone(),
                           dimension_of=lambda connection: connection.execute(
                               "SELECT len(embed(''))").fetchone()[0])


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


def import_chunks(source: str | os.PathLike[str], catalog_dir: str | os.PathLike[str], *,
                  settings: Mapping[str, Any] | None = None) -> IngestResult:
    """Publish a user's own Parquet chunks (any embedding dimension) as a chunk-store version."""
    path = Path(source).expanduser().resolve()
    dimension = check_chunk_schema(path)
    return write_store(catalog_dir, SQL_DIR / "import_chunk_store.sql", {"source_path": str(path)}, settings,
                       embedder_of=lambda _connection: (f"{IMPORTED_PREFIX}{path.name}", None),
                       dimension_of=lambda _connection: dimension)


def check_chunk_schema(path: Path) -> int:
    """Check a user's Parquet file has the chunk-store columns; return its embedding dimension."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise CatalogError(f"import: no Parquet file at {path}")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise CatalogError(f"import: {path} is not a readable Parquet file ({error})") from error
    expected = chunk_store_schema(384)
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


def write_store(catalog_dir: str | os.PathLike[str], script: Path, parameters: dict[str, Any],
                settings: Mapping[str, Any] | None, embedder_of: Any, dimension_of: Any) -> IngestResult:
    """Stage chunks with ``script``, write them and their metadata to a staging directory, then publish.

    Nothing is published unless every step completed; an unchanged store (same
    fingerprint) keeps the current version so ids, pools and indexes stay comparable.
    """
    catalog = Path(catalog_dir).expanduser().resolve()
    connection = connect(catalog, settings=settings, ingesting=True)
    try:
        if progress.bar_shown():
            # The ingest tracker draws a tqdm bar; DuckDB's own bar would draw beside it.
            connection.execute("SET enable_progress_bar = false")
        embedder, embedder_sha256 = embedder_of(connection)
        previous = current_store(catalog)
        previous_embedder = read_store_manifest(previous).get("embedder") if previous is not None else None
        if previous_embedder is not None and previous_embedder != embedder:
            LOG.info("the current store was embedded by %s; this run embeds every chunk again with %s",
                     previous_embedder, embedder)
        with staging_directory(store_root(catalog) / "versions") as staging:
            staging_dir = str(staging) + os.sep
            report = run_script(connection, script, {**parameters, "staging_dir": staging_dir})
            file_report = [(str(s), int(n)) for s, n in report.fetchall()] if report is not None else []
            # The staged view may read the staging script's parameters, so they are set again.
            # It embeds, so run_script gives onnxruntime the cores (core_owning_names).
            run_script(connection, SQL_DIR / "write_chunk_store.sql", {
                **parameters,
                "staging_dir": staging_dir,
                "arrow_schema": arrow_schema_metadata(int(dimension_of(connection))),
            })
            run_script(connection, SQL_DIR / "derive_store_metadata.sql",
                       {"staging_dir": staging_dir, "embedder": embedder, "embedder_sha256": embedder_sha256})
            manifest = read_store_manifest(staging)
            if previous is not None and read_store_manifest(previous).get("fingerprint") == manifest["fingerprint"]:
                LOG.info("chunk store unchanged (fingerprint %s); keeping %s", manifest["fingerprint"],
                         previous.name)
                return IngestResult(previous, read_store_manifest(previous), file_report, unchanged=True)
            store = publish_store_version(catalog, staging)
        apply_views(connection, catalog)
        return IngestResult(store, read_store_manifest(store), file_report, unchanged=False)
    finally:
        connection.close()


# --------------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps a later default from
    # overwriting an earlier --debug.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on failure, log the traceback after the one-line error")
    parser = argparse.ArgumentParser(prog="bootstrap.py", description=__doc__.splitlines()[0], parents=[debug])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[debug], **kwargs)

    def with_catalog(sub: argparse.ArgumentParser, default: str | None = None) -> None:
        sub.add_argument("--catalog", required=default is None, default=default,
                         help="catalog directory (holds catalog.duckdb, store/, index/)")
        sub.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                         help="override a setting for this run (repeatable)")

    demo = add_command("demo", help="ingest standard-library packages, index them, print a report")
    with_catalog(demo, default="demo_catalog")

    ingest_cmd = add_command("ingest", help="chunk and embed a repository into the chunk store")
    ingest_cmd.add_argument("repo")
    with_catalog(ingest_cmd)
    ingest_cmd.add_argument("--include", action="append", metavar="GLOB",
                            help="glob relative to REPO (repeatable; default **)")
    ingest_cmd.add_argument("--max-file-bytes", type=positive_int, default=DEFAULT_MAX_FILE_BYTES)
    ingest_cmd.add_argument("--max-chunk-chars", type=positive_int, default=DEFAULT_MAX_CHUNK_CHARS,
                            help="chunk budget in non-whitespace characters")

    train = add_command("train-embedder", help="train a static code embedder offline (tokenizer, token "
                                "table distilled from MiniLM, contrastive tuning on docstring/code pairs) into --out")
    train.add_argument("--out", required=True, help="new model directory; set embed_model to it to use the model")
    train.add_argument("--corpus", action="append", default=[], metavar="PATH",
                       help="a repository whose Python files join the standard library and the pinned packages "
                       "(repeatable)")
    defaults = static_training.TrainingConfig()
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--dim", type=positive_int, default=defaults.dim, help="vector width (at most 384)")
    train.add_argument("--vocab-size", type=positive_int, default=defaults.vocab_size)
    train.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                       help="most contrastive epochs (training stops earlier when validation MRR@10 stalls)")
    train.add_argument("--name", default=None, help="model name in its card (default: the --out directory's name)")

    import_cmd = add_command("import", help="publish your own Parquet chunks (any dimension) as the store")
    import_cmd.add_argument("parquet")
    with_catalog(import_cmd)

    build = add_command("build", help="build and publish a FAISS index over the current store "
                                "(runs sql/build_index.sql)")
    with_catalog(build)
    build.add_argument("--family", default="auto", choices=("auto", *faiss_index.FAMILIES))
    build.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="build option, e.g. nlist=256, pq_m=48, metric=cos, publish=false (repeatable)")

    autotune = add_command("autotune", help="measure the current index's search-parameter grid, save "
                                   "the fastest point reaching --target-recall as its tuning profile "
                                   "(runs sql/autotune.sql)")
    with_catalog(autotune)
    autotune.add_argument("--k", type=positive_int, default=10, help="recall@k is measured at this k")
    autotune.add_argument("--target-recall", type=float, default=0.95)
    autotune.add_argument("--queries", metavar="PARQUET",
                          help="query vectors (column embedding); default: a held-out sample of the index's vectors")

    for name, text in (("versions", "list index versions and which one is CURRENT"),
                       ("publish", "make an index version CURRENT"),
                       ("rollback", "make the previous (or a named) index version CURRENT"),
                       ("gc", "delete old index versions, never CURRENT")):
        lifecycle = add_command(name, help=text)
        with_catalog(lifecycle)
        if name == "publish":
            lifecycle.add_argument("version")
        elif name == "rollback":
            lifecycle.add_argument("--to", metavar="VERSION")
        elif name == "gc":
            lifecycle.add_argument("--keep", type=positive_int, default=3)

    bm25 = add_command("bm25", help="build the BM25 index of channel_bm25 / channel_hybrid "
                               "(runs sql/build_bm25_index.sql)")
    with_catalog(bm25)
    bm25.add_argument("--symbol-repeats", type=int, metavar="N",
                      help="times a chunk's defined names are added to its document (default 6, measured)")

    xtr = add_command("xtr", help="build the XTR oracle lens over a dev split of chunks (runs "
                              "sql/build_xtr.sql) and print sql/report_xtr.sql; needs a loaded query set")
    with_catalog(xtr)
    xtr.add_argument("--sample", type=int, help="chunks drawn at random into the dev split besides the pooled "
                     "and judged ones (default 200)")
    xtr.add_argument("--queries", type=positive_int, help="lens queries drawn from the queries table (default: all)")
    xtr.add_argument("--k", type=positive_int, help="depth of the oracle rankings (default 100)")
    xtr.add_argument("--seed", type=int, help="seed of the draws (default 0)")

    sql_cmd = add_command("sql", help="run a SQL script and print its result")
    sql_cmd.add_argument("script")
    with_catalog(sql_cmd)
    sql_cmd.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="script variable, read with getvariable('NAME') (repeatable)")

    shell = add_command("shell", help="interactive SQL prompt on a prepared connection")
    with_catalog(shell)
    shell.add_argument("--read-only", action="store_true")
    return parser


def parse_assignments(items: Iterable[str], what: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CatalogError(f"{what} {item!r} is not NAME=VALUE")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError:
            values[name] = text
    return values


def print_relation(relation: duckdb.DuckDBPyRelation | None, max_rows: int = 10_000) -> None:
    if relation is not None:
        relation.show(max_rows=max_rows, max_width=10_000)


def command_demo(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    include = [f"{package}/**" for package in DEMO_PACKAGES]
    result = command_ingest_run(stdlib, args.catalog, include, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_CHUNK_CHARS,
                                settings)
    LOG.info("demo store: %s", result.store)
    manifest = build_index(args.catalog, settings=settings)
    LOG.info("demo index: %s %s over %s chunks (%s)", manifest["family"], manifest["factory"], manifest["ntotal"],
             manifest["family_reason"])
    connection = connect(args.catalog, settings=settings)
    try:
        print_relation(run_script(connection, SQL_DIR / "report_modules.sql"))
        print_relation(run_script(connection, SQL_DIR / "report_demo_search.sql"))
        evaluate_demo(connection, Path(args.catalog).expanduser().resolve(), stdlib)
    finally:
        connection.close()


def build_index(catalog: str | os.PathLike[str], family: str = "auto", options: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Build and publish an index through ``sql/build_index.sql``; re-apply the index views; return the manifest.

    ``options`` are build options by name (:func:`udfs.faiss_index.build_option_names`); they
    are checked before anything is built, and an unknown one is refused with the valid names.
    """
    options = dict(options or {})
    valid = faiss_index.build_option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise CatalogError(f"build: unknown --option {', '.join(unknown)}; valid options: {', '.join(valid)}")
    publish = options.pop("publish", True)
    if not isinstance(publish, bool):
        raise CatalogError(f"build: --option publish must be true or false, got {publish!r}")
    try:
        faiss_index.BuildOptions.from_mapping(options)
    except UdfError as error:
        raise CatalogError(f"build --option: {error}") from error
    # Options travel as the faiss_<name> settings, which faiss_build reads for every option it
    # is not passed, so every BuildOptions field (build_threads too) reaches the build, not only
    # those sql/build_index.sql names.  An option overrides the same --set or settings.json value.
    settings = {**(settings or {}), **{f"faiss_{name}": value for name, value in options.items()}}
    connection = connect(catalog, settings=settings)
    try:
        manifest = run_script(connection, SQL_DIR / "build_index.sql", {"family": family, "publish": publish})
        apply_views(connection, Path(catalog).expanduser().resolve())
        return dict(manifest.fetchall()) if manifest is not None else {}
    finally:
        connection.close()


def index_lifecycle(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``versions``, ``publish``, ``rollback`` or ``gc``; say whether CURRENT moved, and from where to where."""
    catalog = Path(args.catalog).expanduser().resolve()
    if args.command == "versions":
        return faiss_index.list_versions(catalog)
    if args.command == "gc":
        result = faiss_index.gc(catalog, keep=args.keep)
        # gc serves the chunk store's staging directories too: an ingest killed with kill -9 left one.
        result["removed_store_staging"] = staging_dirs.remove_abandoned(store_root(catalog) / "versions")
        return result
    if args.command == "publish":
        result = faiss_index.publish(catalog, args.version)
    else:
        result = faiss_index.rollback(catalog, to=args.to)
    if result["current"] != result["previous"]:
        LOG.info("%s: CURRENT changed from index version %s to %s", args.command, result["previous"],
                 result["current"])
    else:
        LOG.info("%s: index version %s is already CURRENT; nothing changed", args.command, result["current"])
    return result


def refresh_views(args: argparse.Namespace, settings: Mapping[str, Any] | None, result: Mapping[str, Any]) -> None:
    """Re-apply the views after ``publish`` or ``rollback``; a failure is a warning, not an error.

    The command's change is already made and complete: the persisted views read
    ``<catalog>/index/CURRENT/...`` through the symlink, so they read the new version
    without being re-created.  Re-applying matters only for a view that could not be made
    before (``v_faiss_idmap`` on a catalog that had no published index until now), and
    every read-write ``connect`` (build, bm25, sql, shell, ...) applies it.  So a locked
    catalog.duckdb (another process has it open) must not turn a completed change into
    exit 2: a script that retries on failure would roll back twice.
    """
    try:
        connect(args.catalog, settings=settings).close()
    except (Exception, KeyboardInterrupt) as error:  # Ctrl-C here too: the change stands, so rc 0 stays true
        done = ("CURRENT was changed" if result["current"] != result["previous"] else "CURRENT was already right")
        LOG.warning("%s: %s (index version %s), but the views were not refreshed: %s. They read index/CURRENT "
                    "through its symlink, so they already see version %s; a view still missing is created by "
                    "the next read-write connect, or rerun `python bootstrap.py publish %s --catalog %s` once "
                    "catalog.duckdb is free (it changes nothing else)", args.command, done, result["current"],
                    error_line(error), result["current"], result["current"], args.catalog)


def build_bm25_index(connection: duckdb.DuckDBPyConnection,
                     symbol_repeats: int | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run ``sql/build_bm25_index.sql``; return its summary row."""
    return run_script(connection, SQL_DIR / "build_bm25_index.sql", {"symbol_repeats": symbol_repeats})


def build_xtr_lens(connection: duckdb.DuckDBPyConnection, catalog: Path, **parameters: Any) -> None:
    """Build the XTR oracle lens (``sql/build_xtr.sql``), apply its views, print ``sql/report_xtr.sql``."""
    LOG.info("XTR lens: %s", run_script(connection, SQL_DIR / "build_xtr.sql", parameters).fetchone())
    apply_views(connection, catalog)
    print_relation(run_script(connection, SQL_DIR / "report_xtr.sql"))


def evaluate_demo(connection: duckdb.DuckDBPyConnection, catalog: Path, repo_root: Path) -> None:
    """Docstring-to-function evaluation of the demo store; prints coverage and per-channel quality.

    The queries are first sentences of the stdlib functions' docstrings, the answers the
    functions' chunks (sql/export_docstring_queries.sql).  The indexed code still holds those
    docstrings, a known bias in every channel's favour; bench/bench_eval.py also measures on
    a copy with the docstrings blanked out.
    """
    LOG.info("BM25 index: %s", build_bm25_index(connection).fetchone())
    queries_file, qrels_file, queries, functions = run_script(
        connection, SQL_DIR / "export_docstring_queries.sql", {"repo_root": str(repo_root) + os.sep}).fetchone()
    LOG.info("docstring query set: %d queries from %d documented functions", queries, functions)
    run_script(connection, SQL_DIR / "load_queries.sql", {"queries_path": queries_file, "qrels_path": qrels_file})
    # The hybrid run fuses with weights measured on this query set (fusion.json), not assumed ones.
    LOG.info("fusion profile: %s", run_script(connection, SQL_DIR / "tune_fusion.sql").fetchone())
    for channel in ("faiss", "bm25", "hybrid"):
        LOG.info("pool: %s", run_script(connection, SQL_DIR / "write_pool.sql", {"channel": channel}).fetchone())
    apply_views(connection, catalog)
    heatmap_file, _ = run_script(connection, SQL_DIR / "write_coverage_heatmap.sql").fetchone()
    LOG.info("coverage heatmap: %s; the docstrings asked are in the indexed code, so scores are optimistic",
             heatmap_file)
    print_relation(run_script(connection, SQL_DIR / "report_coverage.sql"))
    print_relation(run_script(connection, SQL_DIR / "report_eval.sql"))
    # A seeded sample of DEMO_XTR_QUERIES queries: their pooled chunks plus DEMO_XTR_SAMPLE drawn ones make a
    # dev split of about 200 chunks, whose encoder pass takes about half a minute on two cores.
    build_xtr_lens(connection, catalog, query_sample=DEMO_XTR_QUERIES, sample=DEMO_XTR_SAMPLE)


def command_ingest_run(repo: Path | str, catalog: str, include: list[str], max_file_bytes: int,
                       max_chunk_chars: int, settings: dict[str, Any]) -> IngestResult:
    started = time.perf_counter()
    result = ingest(repo, catalog, include=include, max_file_bytes=max_file_bytes,
                    max_chunk_chars=max_chunk_chars, settings=settings)
    elapsed = time.perf_counter() - started
    for status, count in result.file_report:
        LOG.info("files %-28s %6d", status, count)
    manifest = result.manifest
    LOG.info("%s %d chunks (dimension %d) in %.1f s -> %s", "unchanged:" if result.unchanged else "ingested",
             manifest["chunk_count"], manifest["dimension"], elapsed, result.store)
    return result


def command_train_embedder(args: argparse.Namespace) -> None:
    out = Path(args.out).expanduser()
    try:
        config = static_training.TrainingConfig(seed=args.seed, dim=args.dim, vocab_size=args.vocab_size,
                                                epochs=args.epochs, name=args.name or out.resolve().name)
        card = static_training.train(out, [Path(path) for path in args.corpus], config)
    except (ValueError, FileExistsError, RuntimeError) as error:
        raise CatalogError(str(error)) from error
    LOG.info("static model %s: %d tokens x %d, validation MRR@10 %.3f (epoch %d), %.0f s, peak %d MiB -> %s",
             card["name"], card["vocab_size"], card["dim"], card["validation_mrr_at_10"], card["best_epoch"],
             card["training_seconds"], card["peak_memory_mib"], out)
    LOG.info("use it with --set embed_model=%s (or embed_model in the catalog's settings.json), then re-ingest",
             out.resolve())


#: Commands that may create their --catalog; every other command needs an existing one.
CATALOG_CREATING_COMMANDS = frozenset({"demo", "ingest", "import"})


def require_catalog(command: str, catalog_dir: str | os.PathLike[str]) -> None:
    """Refuse a --catalog without ``catalog.duckdb``: connecting would create an empty catalog there."""
    catalog = Path(catalog_dir).expanduser().resolve()
    if not (catalog / CATALOG_DB).is_file():
        raise CatalogError(
            f"{command}: no catalog at {catalog} ({CATALOG_DB} is missing); check the --catalog path, or create "
            f"one with `python bootstrap.py ingest REPO --catalog {catalog}` (or `import CHUNKS.parquet`)"
        )


def error_line(error: BaseException) -> str:
    """One line for the log: our errors say what to do; anything else is named by its type."""
    if isinstance(error, duckdb.Error):
        return describe_error(error)
    if isinstance(error, (CatalogError, UdfError)):
        return one_line(str(error))
    text = one_line(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_command(args)
    except KeyboardInterrupt:
        LOG.error("interrupted; nothing half-written was published")
        return 130
    except Exception as error:  # every failure, ours or not, ends as one line and exit code 2
        # A traceback helps whoever debugs this code, not whoever mistyped an argument: --debug adds it.
        suffix = "" if debug or isinstance(error, (CatalogError, UdfError, duckdb.Error)) else \
            " (rerun with --debug for the traceback)"
        LOG.error("%s%s", error_line(error), suffix, exc_info=debug)
        return 2
    return 0


def run_command(args: argparse.Namespace) -> None:
    """Run the parsed command; errors propagate to :func:`main`."""
    if getattr(args, "catalog", None) is not None and args.command not in CATALOG_CREATING_COMMANDS:
        require_catalog(args.command, args.catalog)
    settings = parse_assignments(getattr(args, "set", []), "--set")  # train-embedder takes no catalog
    if args.command == "demo":
        command_demo(args, settings)
    elif args.command == "ingest":
        command_ingest_run(args.repo, args.catalog, args.include or ["**"], args.max_file_bytes,
                           args.max_chunk_chars, settings)
    elif args.command == "train-embedder":
        command_train_embedder(args)
    elif args.command == "import":
        result = import_chunks(args.parquet, args.catalog, settings=settings)
        LOG.info("%s %d chunks (dimension %d) -> %s", "unchanged:" if result.unchanged else "imported",
                 result.manifest["chunk_count"], result.manifest["dimension"], result.store)
    elif args.command == "build":
        manifest = build_index(args.catalog, args.family, parse_assignments(args.option, "--option"), settings)
        print(json.dumps(manifest, indent=2))
    elif args.command == "autotune":
        connection = connect(args.catalog, settings=settings)
        try:
            print_relation(run_script(connection, SQL_DIR / "autotune.sql", {
                "k": args.k, "target_recall": args.target_recall,
                "queries": str(Path(args.queries).resolve()) if args.queries else None}))
        finally:
            connection.close()
    elif args.command in ("versions", "publish", "rollback", "gc"):
        result = index_lifecycle(args)
        print(json.dumps(result, indent=2, default=str))
        # versions and gc change nothing the views read (they read CURRENT, which gc never
        # removes), so they do not open catalog.duckdb at all; see refresh_views.
        if args.command in ("publish", "rollback"):
            refresh_views(args, settings, result)
    elif args.command == "bm25":
        connection = connect(args.catalog, settings=settings)
        try:
            print_relation(build_bm25_index(connection, args.symbol_repeats))
        finally:
            connection.close()
    elif args.command == "xtr":
        connection = connect(args.catalog, settings=settings)
        try:
            build_xtr_lens(connection, Path(args.catalog).expanduser().resolve(), sample=args.sample,
                           query_sample=args.queries, k=args.k, seed=args.seed)
        finally:
            connection.close()
    elif args.command == "sql":
        connection = connect(args.catalog, settings=settings)
        try:
            print_relation(run_script(connection, args.script, parse_assignments(args.param, "--param")))
        finally:
            connection.close()
    elif args.command == "shell":
        run_shell(connect(args.catalog, read_only=args.read_only, settings=settings))


def run_shell(connection: duckdb.DuckDBPyConnection) -> None:
    """A minimal SQL prompt: statements end with ';', results print as tables, Ctrl-D leaves."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    buffer: list[str] = []
    interactive = sys.stdin.isatty()
    try:
        while True:
            try:
                line = input(("codeintel> " if not buffer else "      ...> ") if interactive else "")
            except EOFError:
                break
            buffer.append(line)
            text = "\n".join(buffer).strip()
            if not text.endswith(";"):
                continue
            buffer.clear()
            try:
                for statement in duckdb.extract_statements(text):
                    with core_owner_threads(connection, sql_words(statement.query), core_owning_names(connection)):
                        print_relation(connection.sql(statement.query))
            except duckdb.Error as error:
                print(f"error: {describe_error(error)}", file=sys.stderr)
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())

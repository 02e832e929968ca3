"""The SQL files, driven from Python: macros, views in dependency order, scripts, and the thread rule.

* ``sql/macros/*.sql``: TEMP table macros, applied on every connection (they call Python
  UDFs, which live only on a connection that registered them).
* ``views/<name>.sql``: one persisted view per file, applied in the order sqlglot reads
  from the files themselves; relative reader paths are made absolute against the catalog
  so that a stock DuckDB client opens ``catalog.duckdb`` from any directory.
* ``sql/*.sql`` scripts: statements run one by one with their parameters bound as DuckDB
  variables by prepared statements, never spliced into SQL text.
* The thread rule: a statement that names a UDF owning its own thread pool (FAISS, the
  ONNX embedder), or a macro or view calling one, runs with DuckDB on one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import graphlib
import logging
import os
import re
import string
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.tokens import TokenType

from codeintel.errors import CatalogError, describe_error
from codeintel.layout import MACROS_DIR, PROJECT_DIR, SQL_DIR, VIEWS_DIR, current_store, read_store_manifest
from udfs import progress
from udfs.families import all_udf_specs

LOG = logging.getLogger("codeintel")

#: Table functions whose first argument is a file path or glob, resolved against the catalog.
FILE_READERS = frozenset(
    {"read_parquet", "parquet_scan", "read_json", "read_json_auto", "read_ndjson", "read_csv",
     "read_csv_auto", "read_text", "read_blob", "glob"}
)



# --------------------------------------------------------------------------- macros


def apply_macros(connection: duckdb.DuckDBPyConnection, names: Iterable[str] | None = None,
                 macros_dir: Path = MACROS_DIR) -> list[str]:
    """Create the TEMP macros of ``sql/macros/`` (one per file), each after the macros it calls.

    TEMP, so the persisted catalog stays stock-readable.  DuckDB binds a macro's body when
    the macro is created, so a macro calling another must come after it: :func:`macro_order`
    sorts the files by the macro names they use.  ``names`` limits this to those macros and
    the macros they call (a connection with only some UDF families); returns the names created.
    """
    files = read_macro_files(macros_dir)
    order = macro_order(files)
    if names is not None:
        wanted = macros_called(files, names)
        order = [name for name in order if name in wanted]
    for name in order:
        path = files[name].path
        for statement in files[name].statements:
            try:
                connection.execute(statement)
            except duckdb.Error as error:
                raise CatalogError(f"{relative_to_project(path)}: {error}") from error
    forget_core_owning_names(connection)
    return order


@dataclasses.dataclass(frozen=True)
class MacroFile:
    """A parsed ``sql/macros/<name>.sql``: its statements and the words they use."""

    name: str
    path: Path
    statements: tuple[str, ...]
    #: Every identifier and keyword of the file outside comments and strings, lower-cased.
    words: frozenset[str]
    #: TEMP views the file creates for its macro (``faiss_autotune_no_queries``).
    helper_views: frozenset[str]


def relative_to_project(path: Path) -> Path:
    return path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path


def read_macro_files(macros_dir: Path = MACROS_DIR) -> dict[str, MacroFile]:
    return {macro.name: macro for macro in map(parse_macro_file, sorted(macros_dir.glob("*.sql")))}


def parse_macro_file(path: Path) -> MacroFile:
    """One ``CREATE MACRO`` named after the file, and any TEMP views it alone reads; else CatalogError."""
    where = relative_to_project(path)
    statements = tuple(duckdb.extract_statements(path.read_text()))
    macros: list[str] = []
    views: set[str] = set()
    for statement in statements:
        kind, name = created_object(statement.query)
        if kind == "macro":
            macros.append(name)
        elif kind == "view":
            views.add(name)
        else:
            opening = " ".join(statement_words(statement.query)[:4]).upper()
            raise CatalogError(f"{where}: a macro file holds one CREATE MACRO and, at most, TEMP views it reads; "
                               f"found a statement {opening} ...")
    if macros != [path.stem]:
        found = ", ".join(macros) or "none"
        raise CatalogError(f"{where}: a macro file defines one macro named after the file ({path.stem}); "
                           f"it defines {found}")
    return MacroFile(
        name=path.stem,
        path=path,
        statements=tuple(statement.query for statement in statements),
        words=frozenset(sql_words(path.read_text())),
        helper_views=frozenset(views),
    )


#: ``CREATE [OR REPLACE] [TEMP | TEMPORARY] MACRO | FUNCTION | VIEW name``, as tokens.
CREATE_WORDS = ("create", "or", "replace", "temp", "temporary")


def statement_words(statement: str) -> list[str]:
    """The identifiers and keywords of a statement in order, lower-cased (:func:`sql_words`, as a list)."""
    return [
        "".join(WORD.match(statement, start).groups("")).lower()
        for start, kind in duckdb.tokenize(statement)
        if kind in (duckdb.token_type.identifier, duckdb.token_type.keyword)
    ]


def created_object(statement: str) -> tuple[str | None, str]:
    """What a statement creates, ``("macro" | "view", name)``, or ``(None, "")``."""
    words = statement_words(statement)
    if not words or words[0] != "create":
        return None, ""
    rest = list(words)
    while rest and rest[0] in CREATE_WORDS:
        rest.pop(0)
    if len(rest) >= 2 and rest[0] in ("macro", "function"):
        return "macro", rest[1]
    if len(rest) >= 2 and rest[0] == "view":
        return "view", rest[1]
    return None, ""


def macro_dependencies(files: Mapping[str, MacroFile]) -> dict[str, set[str]]:
    """For each macro file, the other macro files whose macro (or helper view) it names."""
    owners = {name: name for name in files}
    for name, macro in files.items():
        owners.update({view: name for view in macro.helper_views})
    return {name: {owners[word] for word in macro.words if word in owners} - {name}
            for name, macro in files.items()}


def macro_order(files: Mapping[str, MacroFile]) -> list[str]:
    """Macro names sorted so that each follows the macros it calls; a cycle raises CatalogError."""
    graph = macro_dependencies(files)
    sorter = graphlib.TopologicalSorter({name: sorted(graph[name]) for name in sorted(graph)})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        names = " -> ".join(str(relative_to_project(files[name].path)) for name in cycle)
        raise CatalogError(f"macros call each other in a cycle: {names}; DuckDB creates a macro only "
                           "after the macros it calls") from error


def macros_called(files: Mapping[str, MacroFile], names: Iterable[str]) -> set[str]:
    """``names`` and every macro they call, directly or not; an unknown name raises CatalogError."""
    graph = macro_dependencies(files)
    pending = list(names)
    unknown = sorted(name for name in pending if name not in files)
    if unknown:
        raise CatalogError(f"no macro file for {', '.join(unknown)}; known macros: {', '.join(sorted(files))}")
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(graph[name])
    return seen



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
    """The parsed view file; parsed once per file version, as every writing session applies every view."""
    stat = path.stat()
    return _parse_view_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _parse_view_file(path: Path, _mtime_ns: int, _size: int) -> ViewFile:
    # sqlglot parsing all 20 view files took ~0.15 s, paid twice by every ingest before this cache.
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


#: How every view file starts (parse_view_file checks it), so a TEMP copy of a view can be made.
CREATE_VIEW = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?VIEW\b", re.IGNORECASE)


def apply_views(connection: duckdb.DuckDBPyConnection, catalog: Path,
                views_dir: Path = VIEWS_DIR, *, temporary: bool = False) -> list[str]:
    """Create or replace every view whose source files exist; return the names applied.

    A view over files not written yet (no index built, say) is skipped with its
    dependents and applied by a later call, so ``connect`` works on a new catalog; a
    persisted view of that name reading another directory's files (the catalog was moved
    or copied) is dropped.  ``temporary`` makes TEMP views instead, which shadow the
    persisted ones on this connection only (a read-only session of a moved catalog).
    """
    views = read_view_files(views_dir)
    existing = [row[0] for row in connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
    facts = catalog_facts(catalog)
    applied: list[str] = []
    skipped: set[str] = set()
    foreign: dict[str, list[str]] | None = None  # read once, when a view is skipped
    for name in view_order(views, [e for e in existing if e not in views]):
        view = views[name]
        missing = [p for p in view.source_paths if not any_file_matches(catalog, p)]
        blocked = sorted(view.dependencies & skipped)
        if missing or blocked:
            skipped.add(name)
            LOG.debug("view %s not applied yet: %s", name, ", ".join(missing or blocked))
            if not temporary and foreign is None:
                foreign = foreign_view_paths(connection, catalog)
            if not temporary and name in foreign:
                connection.execute(f"DROP VIEW IF EXISTS {exp.to_identifier(name).sql('duckdb')}")
            continue
        sql = view.sql_for(catalog, facts)
        if temporary:
            sql = CREATE_VIEW.sub("CREATE OR REPLACE TEMP VIEW", sql, count=1)
        try:
            connection.execute(sql)
        except duckdb.Error as error:
            raise CatalogError(f"{view.path}: {error}") from error
        applied.append(name)
    forget_core_owning_names(connection)
    return applied


def foreign_view_paths(connection: duckdb.DuckDBPyConnection, catalog: Path) -> dict[str, list[str]]:
    """Persisted views reading files outside ``catalog``, with those paths: the catalog was moved or copied.

    Views are persisted with absolute paths so that a stock client started in any
    directory reads them; a moved catalog's views would then read the old place, and a
    copied one's the original's files, without a word.
    """
    rows = connection.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND NOT temporary "
        "AND database_name = current_database()").fetchall()
    foreign: dict[str, list[str]] = {}
    for name, sql in rows:
        outside = [path for path in reader_paths(sql)
                   if Path(path).is_absolute() and not Path(path).is_relative_to(catalog)]
        if outside:
            foreign[name] = outside
    return foreign


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



# --------------------------------------------------------------------------- scripts and the thread rule


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
            # A macro or view this script defines that names an owner calls one: the next statements
            # naming it follow the rule too.  Read from the statement itself: re-reading every
            # definition from DuckDB (duckdb_functions()) costs about 30 ms a time.
            if words & DEFINING_WORDS and words & owners:
                kind, name = created_object(statement)
                if kind is not None:
                    owners = owners | {name}
                    _CORE_OWNERS[connection] = owners
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


@functools.lru_cache(maxsize=4096)
def sql_words(text: str) -> frozenset[str]:
    """The identifiers and keywords of SQL text, lower-cased, as DuckDB's tokenizer reads them.

    Cached: core_owning_names tokenizes every macro and view body each time it reads them (once per
    connection, and again after apply_macros or apply_views), and the bodies rarely change.
    """
    # The tokenizer gives where each token starts; WORD reads the token from there.
    return frozenset({
        "".join(WORD.match(text, start).groups("")).lower()
        for start, kind in duckdb.tokenize(text)
        if kind in (duckdb.token_type.identifier, duckdb.token_type.keyword)
    })


#: Per connection, what :func:`core_owning_names` found: reading every macro and view
#: definition (``duckdb_functions()``) takes 12-14 ms, which every run_script and every shell
#: statement paid (5 scripts per ingest).  A macro or view defined through apply_macros,
#: apply_views, run_script or the shell updates or drops the entry; one defined another way
#: counts after :func:`forget_core_owning_names`.
_CORE_OWNERS: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, frozenset[str]] = weakref.WeakKeyDictionary()


def forget_core_owning_names(connection: duckdb.DuckDBPyConnection) -> None:
    """Read the macros and views again at the next :func:`core_owning_names` (after defining some)."""
    _CORE_OWNERS.pop(connection, None)


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
    owners = _CORE_OWNERS.get(connection)
    if owners is None:
        owners = names_calling(connection, frozenset(spec.name for spec in all_udf_specs() if spec.owns_cores))
        _CORE_OWNERS[connection] = owners
    return owners


def names_calling(connection: duckdb.DuckDBPyConnection, names: frozenset[str]) -> frozenset[str]:
    """``names`` and every macro and view of the connection that calls one of them, directly or not."""
    bodies = [(name.lower(), sql_words(body)) for name, body in
              connection.execute((SQL_DIR / "catalog_definitions.sql").read_text()).fetchall()]
    grown = set(names)
    while more := {name for name, words in bodies if name not in grown and words & grown}:
        grown |= more
    return frozenset(grown)


def core_owner_threads(connection: duckdb.DuckDBPyConnection, words: frozenset[str],
                       owners: frozenset[str]) -> contextlib.AbstractContextManager[None]:
    """DuckDB on one thread while a statement runs whose ``words`` (:func:`sql_words`) name one of ``owners``."""
    return duckdb_threads(connection, 1) if words & owners else contextlib.nullcontext()


#: Statements with these words may define a macro or view that calls a core-owning UDF.
DEFINING_WORDS = frozenset({"macro", "function", "view"})

def print_relation(relation: duckdb.DuckDBPyRelation | None, max_rows: int = 10_000) -> None:
    if relation is not None:
        relation.show(max_rows=max_rows, max_width=10_000)


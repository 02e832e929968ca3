"""Connect to a codeintel-sql catalog, and the command line.

:func:`open_catalog` (and :func:`connect`, its connection alone) prepares
``<catalog>/catalog.duckdb`` in one fixed order, written out below.  Everything else that
drives the SQL files lives in the ``codeintel`` package (views and scripts:
``codeintel.sqlfiles``; the chunk store: ``codeintel.store``; the demo's evaluation:
``codeintel.demo``), which never imports this file; ARCHITECTURE.md draws the import graph.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from codeintel import catalog_db, demo, serve, serve_quack, static_training, store
from codeintel.chunk_locations import apply_catalog_objects
from codeintel.corpus import DEMO_PACKAGES
from codeintel.errors import EXPLAINED_ERRORS, CatalogError, describe_error, error_line
from codeintel.layout import CATALOG_DB, SETTINGS_FILE, SQL_DIR, store_versions, upgrade_store_versions
from codeintel.session import Session
from codeintel.sqlfiles import (
    DEFINING_WORDS,
    apply_macros,
    apply_views,
    core_owner_threads,
    core_owning_names,
    foreign_view_paths,
    forget_core_owning_names,
    print_relation,
    quote_literal,
    run_script,
    sql_words,
)
from codeintel.store import DEFAULT_MAX_CHUNK_CHARS, DEFAULT_MAX_FILE_BYTES, IngestResult
from udfs import faiss_build, faiss_versions
from udfs import settings as settings_table
from udfs.context import CatalogContext
from udfs.families import all_udf_specs
from udfs.settings import Settings

LOG = logging.getLogger("codeintel")

#: Extensions loaded on every connection, from their PyPI packages when offline.
EXTENSIONS = ("fts", "vss")


# --------------------------------------------------------------------------- connect


def open_catalog(
    catalog_dir: str | os.PathLike[str],
    read_only: bool = False,
    settings: Mapping[str, Any] | None = None,
    ingesting: bool = False,
) -> Session:
    """A session on the catalog with every UDF, macro and view ready; use it as a context manager.

    A read-only session opens ``catalog.duckdb`` read-only and reuses the views a writer
    persisted.  A writing session works on a private copy, under the catalog's writer lock,
    and publishes it by atomic rename when it closes without error
    (:mod:`codeintel.catalog_db`): readers that hold the catalog open are never locked out
    and never see a half-made change.  ``settings`` override ``<catalog_dir>/settings.json``,
    which overrides the defaults (udfs/settings.py).  ``ingesting`` sessions embed a new
    store, so ``embed`` may differ from the current store's embedder.
    """
    catalog = Path(catalog_dir).expanduser().resolve()
    # Settings are checked before anything is made: a rejected --set leaves nothing behind.
    resolved = Settings.from_file(catalog / SETTINGS_FILE, settings)
    if read_only:
        require_database(catalog)
        return prepare(duckdb_connect(catalog / CATALOG_DB, read_only=True),
                       Session(None, CatalogContext(catalog, ingesting, resolved)))  # type: ignore[arg-type]
    session = Session(None, CatalogContext(catalog, ingesting, resolved))  # type: ignore[arg-type]
    try:
        session.copy = session.cleanup.enter_context(catalog_db.private_copy(catalog))
        return prepare(duckdb_connect(session.copy.path, read_only=False), session)
    except BaseException:
        session.cleanup.close()
        raise


def connect(
    catalog_dir: str | os.PathLike[str],
    read_only: bool = False,
    settings: Mapping[str, Any] | None = None,
    ingesting: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A connection on ``catalog.duckdb`` itself, prepared as :func:`open_catalog` prepares one.

    Read-write, it holds DuckDB's exclusive lock on the file while open (other processes can
    neither read nor write it): for a program that owns its catalog.  Commands writing
    beside readers use :func:`open_catalog`.
    """
    catalog = Path(catalog_dir).expanduser().resolve()
    resolved = Settings.from_file(catalog / SETTINGS_FILE, settings)
    if read_only:
        require_database(catalog)
    catalog.mkdir(parents=True, exist_ok=True)
    connection = duckdb_connect(catalog / CATALOG_DB, read_only=read_only)
    return prepare(connection, Session(connection, CatalogContext(catalog, ingesting, resolved))).connection


def require_database(catalog: Path) -> None:
    if not (catalog / CATALOG_DB).exists():
        raise CatalogError(
            f"no catalog at {catalog}: create one with `python bootstrap.py ingest REPO --catalog {catalog}`"
        )


def duckdb_connect(database: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    # Unsigned: the extensions are loaded by path from their PyPI packages (no repository is reachable).
    return duckdb.connect(str(database), read_only=read_only, config={"allow_unsigned_extensions": "true"})


def prepare(connection: duckdb.DuckDBPyConnection, session: Session) -> Session:
    """Prepare ``connection`` in the fixed order; close it (and the session's copy) on any failure."""
    session.connection = connection
    context = session.context
    try:
        # 1. Extensions (fts, vss), which the views and macros call.
        load_extensions(connection)
        # 2. DuckDB settings from ours.
        apply_settings(connection, context.settings)
        # 3. UDFs, family by family (udfs/families.py): the macros call them.
        for spec in all_udf_specs():
            spec.register(connection, context)
        # 4. TEMP table macros (sql/macros/), which the views and scripts call.
        apply_macros(connection)
        # 5. Persisted views (views/), in dependency order.  A read-only session reads those
        #    persisted, unless they read another directory (the catalog was moved or copied): then
        #    TEMP views over this catalog's files shadow them, on this connection.  Read-only is
        #    the current database's: `serve` ATTACHes the catalog READ_ONLY to an in-memory database.
        #    A writing session also brings the keyed chunk_locations table to the current store
        #    (codeintel/chunk_locations.py).  An ingesting session applies both once, after it
        #    publishes (codeintel.store.write_store).
        if not database_read_only(connection):
            # Store versions of an older layout get the file views/chunks.sql reads first.
            if upgraded := upgrade_store_versions(context.catalog_dir):
                LOG.info("store versions %s: added an empty deleted_ids.parquet (chunk parts)", ", ".join(upgraded))
            if not context.ingesting:
                apply_catalog_objects(connection, context.catalog_dir)
        elif foreign := foreign_view_paths(connection, context.catalog_dir):
            LOG.warning("the views in %s read files outside it (%s: the catalog was moved or copied); this "
                        "session reads %s instead. Stock DuckDB clients keep reading the old place until a "
                        "writing command runs on this catalog, e.g. `python bootstrap.py sql "
                        "sql/report_modules.sql --catalog %s`", context.catalog_dir,
                        next(iter(foreign.values()))[0], context.catalog_dir, context.catalog_dir)
            apply_views(connection, context.catalog_dir, temporary=True)
    except BaseException:
        session.abort()
        raise
    return session


def database_read_only(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's current database is read-only (opened or ATTACHed so)."""
    return bool(connection.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0])


def prepare_connection(connection: duckdb.DuckDBPyConnection, context: CatalogContext) -> duckdb.DuckDBPyConnection:
    """Prepare one more connection (``base.cursor()``) on a database that :func:`prepare` made ready.

    Extensions, settings and UDFs belong to the database instance, so the new connection has
    them already (registering a UDF twice fails); TEMP macros, and the TEMP views that shadow a
    moved catalog's views, belong to each connection: steps 4 and 5 again, on ``context``, so
    every connection shares its loaded index.  ``codeintel.serve`` prepares each client
    session so.  The caller has set the connection's current database (``USE``).
    """
    apply_macros(connection)
    if database_read_only(connection) and foreign_view_paths(connection, context.catalog_dir):
        apply_views(connection, context.catalog_dir, temporary=True)
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


def apply_settings(connection: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    connection.execute("SET threads = ?", [settings.threads or os.cpu_count() or 1])
    # DuckDB's bar redraws on a terminal; elsewhere (CI logs, pipes) it would print thousands
    # of lines, and the embedder's progress log says enough there.
    connection.execute("SET enable_progress_bar = ?", [sys.stdout.isatty()])


# --------------------------------------------------------------------------- Python entry points


def ingest(repo: str | os.PathLike[str], catalog_dir: str | os.PathLike[str], *,
           include: Iterable[str] = ("**",), max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
           max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
           settings: Mapping[str, Any] | None = None) -> IngestResult:
    """Chunk and embed a repository into a new store version (:func:`codeintel.store.ingest`).

    The repository, globs and settings are checked before the catalog is opened (or made).
    """
    resolved = Settings.from_file(Path(catalog_dir).expanduser().resolve() / SETTINGS_FILE, settings)
    plan = store.plan_ingest(repo, resolved, include=include, max_file_bytes=max_file_bytes,
                             max_chunk_chars=max_chunk_chars)
    with open_catalog(catalog_dir, settings=settings, ingesting=True) as session:
        return store.ingest(session, plan)


def import_chunks(source: str | os.PathLike[str], catalog_dir: str | os.PathLike[str], *,
                  settings: Mapping[str, Any] | None = None) -> IngestResult:
    """Publish a user's own Parquet chunks as a store version (:func:`codeintel.store.import_chunks`)."""
    with open_catalog(catalog_dir, settings=settings, ingesting=True) as session:
        return store.import_chunks(session, source)


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
    build.add_argument("--family", default="auto", choices=("auto", *faiss_build.FAMILIES))
    build.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="build option, e.g. nlist=256, pq_m=48, metric=cos, publish=false (repeatable)")
    build.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=None,
                       help="update the CURRENT index (remove_ids / add_with_ids into a new version) where its "
                       "family allows and drift is under max_drift, else rebuild, the manifest says why "
                       "(default: setting faiss_incremental, true); --no-incremental always rebuilds")

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
    sql_cmd.add_argument("--read-only", action="store_true",
                         help="open catalog.duckdb read-only (scripts that only read, or write files)")

    views = add_command("views", help="re-apply the views (after moving or copying a catalog: its views then "
                        "read its own files, for stock clients too)")
    with_catalog(views)

    add_command("settings", help="print every setting (name, type, default, what it does) as a Markdown "
                "table; set them in <catalog>/settings.json or with --set NAME=VALUE")

    shell = add_command("shell", help="interactive SQL prompt on a prepared connection")
    with_catalog(shell)
    shell.add_argument("--read-only", action="store_true")

    serve_cmd = add_command("serve", help="serve the catalog to SQL clients over the Postgres protocol (psql, "
                            "psycopg, SQLAlchemy, BI tools) and, with --quack, to DuckDB clients; read-only unless "
                            "--allow-writes (README, \"Serving\")")
    with_catalog(serve_cmd)
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve_cmd.add_argument("--port", type=int, default=5433, help="Postgres-protocol port (0: a free one, logged)")
    serve_cmd.add_argument("--password-file", help="file whose first line is the password (else "
                           "$CODEINTEL_SERVE_PASSWORD; neither: no password, loopback only)")
    serve_cmd.add_argument("--allow-writes", action="store_true",
                           help="open catalog.duckdb read-write (other writing commands wait for the server to stop)")
    serve_cmd.add_argument("--quack", action="store_true", help="also serve DuckDB clients over Quack")
    serve_cmd.add_argument("--quack-port", type=int, default=9494, help="Quack port (default 9494)")
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


def command_demo(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    include = [f"{package}/**" for package in DEMO_PACKAGES]
    result = command_ingest_run(stdlib, args.catalog, include, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_CHUNK_CHARS,
                                settings)
    LOG.info("demo store: %s", result.store)
    manifest = build_index(args.catalog, settings=settings)
    LOG.info("demo index: %s %s over %s chunks (%s)", manifest["family"], manifest["factory"], manifest["ntotal"],
             manifest["family_reason"])
    with open_catalog(args.catalog, settings=settings) as session:
        print_relation(run_script(session.connection, SQL_DIR / "report_modules.sql"))
        print_relation(run_script(session.connection, SQL_DIR / "report_demo_search.sql"))
        demo.evaluate_demo(session.connection, session.catalog, stdlib)


def build_index(catalog: str | os.PathLike[str], family: str = "auto", options: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Build and publish an index through ``sql/build_index.sql``; re-apply the index views; return the manifest.

    ``options`` are build options by name (``faiss_nlist`` is option ``nlist``), plus
    ``publish``; they are checked before anything is built, and an unknown one is refused
    with the valid names.
    """
    options = dict(options or {})
    valid = faiss_build.build_option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise CatalogError(f"build: unknown --option {', '.join(unknown)}; valid options: {', '.join(valid)}")
    publish = options.pop("publish", True)
    if not isinstance(publish, bool):
        raise CatalogError(f"build: --option publish must be true or false, got {publish!r}")
    # Options travel as the faiss_<name> settings, which faiss_build reads for every option it
    # is not passed, so every build option reaches the build, not only those sql/build_index.sql
    # names; checked here so that the error names --option.  An option overrides --set and settings.json.
    as_settings = {f"faiss_{name}": value for name, value in options.items()}
    Settings.resolve(as_settings, source="build --option")
    with open_catalog(catalog, settings={**(settings or {}), **as_settings}) as session:
        manifest = run_script(session.connection, SQL_DIR / "build_index.sql", {"family": family, "publish": publish})
        apply_catalog_objects(session.connection, session.catalog)
        return dict(manifest.fetchall()) if manifest is not None else {}


def index_lifecycle(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``versions``, ``publish``, ``rollback`` or ``gc``; say whether CURRENT moved, and from where to where."""
    catalog = Path(args.catalog).expanduser().resolve()
    if args.command == "versions":
        return faiss_versions.list_versions(catalog)
    if args.command == "gc":
        result = faiss_versions.gc(catalog, keep=args.keep)
        # gc serves the chunk store's staging directories too: an ingest killed with kill -9 left one.
        result["removed_store_staging"] = store_versions(catalog).remove_abandoned()
        return result
    if args.command == "publish":
        result = faiss_versions.publish(catalog, args.version)
    else:
        result = faiss_versions.rollback(catalog, to=args.to)
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
    catalog = Path(args.catalog).expanduser().resolve()
    try:
        with catalog_db.writer_lock(catalog, wait=False) as held:
            if not held:
                # A writer is at work; its session applies the views when it publishes.  Waiting for
                # it (a build can take minutes) would hold up a change that is already complete.
                LOG.info("%s: another command is writing the catalog; it applies the views when it ends",
                         args.command)
                return
        with open_catalog(catalog, settings=settings):
            pass  # a writing session applies the views and publishes them
    except (Exception, KeyboardInterrupt) as error:  # Ctrl-C here too: the change stands, so rc 0 stays true
        done = ("CURRENT was changed" if result["current"] != result["previous"] else "CURRENT was already right")
        LOG.warning("%s: %s (index version %s), but the views were not refreshed: %s. They read index/CURRENT "
                    "through its symlink, so they already see version %s; a view still missing is created by "
                    "the next read-write connect, or rerun `python bootstrap.py publish %s --catalog %s` once "
                    "catalog.duckdb is free (it changes nothing else)", args.command, done, result["current"],
                    error_line(error), result["current"], result["current"], args.catalog)


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
        suffix = "" if debug or isinstance(error, EXPLAINED_ERRORS) else \
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
        options = parse_assignments(args.option, "--option")
        # --incremental is --option incremental=true; both given must agree.
        if args.incremental is not None and options.setdefault("incremental", args.incremental) != args.incremental:
            raise CatalogError(f"build: --{'' if args.incremental else 'no-'}incremental contradicts --option "
                               f"incremental={json.dumps(options['incremental'])}; give one of them")
        manifest = build_index(args.catalog, args.family, options, settings)
        print(json.dumps(manifest, indent=2))
    elif args.command == "autotune":
        # Read-only: autotune writes tuning.json beside the index version, nothing in catalog.duckdb.
        with open_catalog(args.catalog, read_only=True, settings=settings) as session:
            print_relation(run_script(session.connection, SQL_DIR / "autotune.sql", {
                "k": args.k, "target_recall": args.target_recall,
                "queries": str(Path(args.queries).resolve()) if args.queries else None}))
    elif args.command in ("versions", "publish", "rollback", "gc"):
        result = index_lifecycle(args)
        print(json.dumps(result, indent=2, default=str))
        # versions and gc change nothing the views read (they read CURRENT, which gc never
        # removes), so they do not open catalog.duckdb at all; see refresh_views.
        if args.command in ("publish", "rollback"):
            refresh_views(args, settings, result)
    elif args.command == "bm25":
        with open_catalog(args.catalog, settings=settings) as session:
            print_relation(demo.build_bm25_index(session.connection, args.symbol_repeats))
    elif args.command == "xtr":
        with open_catalog(args.catalog, settings=settings) as session:
            demo.build_xtr_lens(session.connection, session.catalog, sample=args.sample,
                                query_sample=args.queries, k=args.k, seed=args.seed)
    elif args.command == "sql":
        with open_catalog(args.catalog, read_only=args.read_only, settings=settings) as session:
            print_relation(run_script(session.connection, args.script, parse_assignments(args.param, "--param")))
    elif args.command == "views":
        with open_catalog(args.catalog, settings=settings) as session:
            LOG.info("views: %s", ", ".join(apply_catalog_objects(session.connection, session.catalog)))
    elif args.command == "settings":
        print(settings_table.markdown_table())
    elif args.command == "shell":
        with open_catalog(args.catalog, read_only=args.read_only, settings=settings) as session:
            run_shell(session.connection)
    elif args.command == "serve":
        command_serve(args, settings)


def command_serve(args: argparse.Namespace, settings: Mapping[str, Any]) -> None:
    """Serve the catalog until SIGINT or SIGTERM (:mod:`codeintel.serve`); every session is prepared as here."""
    catalog = Path(args.catalog).expanduser().resolve()
    config = serve.ServeConfig(catalog, host=args.host, port=args.port, allow_writes=args.allow_writes,
                               password=serve.read_password(args.password_file),
                               quack_port=args.quack_port if args.quack else None, settings=dict(settings))
    context = CatalogContext(catalog, False, Settings.from_file(catalog / SETTINGS_FILE, settings))
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    serve.serve(config, context, lambda connection, shared: prepare(connection, Session(connection, shared)),
                prepare_connection, stop=stop, quack=serve_quack.QuackServer)


def run_shell(connection: duckdb.DuckDBPyConnection) -> None:
    """A minimal SQL prompt: statements end with ';', results print as tables, Ctrl-D leaves."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    buffer: list[str] = []
    interactive = sys.stdin.isatty()
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
                words = sql_words(statement.query)
                with core_owner_threads(connection, words, core_owning_names(connection)):
                    print_relation(connection.sql(statement.query))
                if words & DEFINING_WORDS:
                    forget_core_owning_names(connection)  # a macro or view of the user's may call one
        except duckdb.Error as error:
            print(f"error: {describe_error(error)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

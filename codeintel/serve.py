"""Serve a catalog to SQL clients: the Postgres wire protocol (buenavista) and Quack for DuckDB clients.

Every client session gets its own DuckDB connection, prepared as ``bootstrap.connect``
prepares one (UDFs, TEMP table macros, views), on one shared :class:`CatalogContext`, so
all sessions share one loaded FAISS index.  How the pieces fit:

* **Generations.**  The catalog is ATTACHed (READ_ONLY unless ``allow_writes``) as database
  ``catalog`` to a fresh in-memory DuckDB instance, a *generation*.  Writers publish
  ``catalog.duckdb`` by atomic rename (:mod:`codeintel.catalog_db`); a session that starts
  after the file changed (another inode) gets a new generation, while sessions on the old
  one finish there.  Not ``duckdb.connect(path)``: DuckDB caches database instances by their
  resolved path, so a second connect on the same path returns the old file's instance.
* **Safety.**  After a generation is prepared, DuckDB's ``enable_external_access`` is turned
  off with ``allowed_directories`` = the catalog (neither can be turned back on by SQL); every
  statement is checked (:func:`refusal`) before it runs: server-changing statements always,
  writes in read-only mode.  Clients' Postgres catalog queries meet a few shims
  (``PG_COMPAT_MACROS``, :func:`intercepted`).
* **Cores.**  DuckDB's ``threads`` is one setting per database instance, not per connection,
  so the thread rule is kept per generation (:class:`ThreadGate`): while any session runs a
  statement that calls a core-owning UDF, the instance runs on one thread.
* **Live index.**  The UDFs read ``index/CURRENT`` and ``store/CURRENT`` per call
  (``udfs.faiss_current``, ``udfs.hit_locations``) through the shared context: a published or
  rolled-back version reaches the next statement.

This module never imports ``bootstrap``: the CLI passes its preparing functions in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import os
import re
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from codeintel.catalog_db import writer_lock
from codeintel.errors import CatalogError
from codeintel.layout import CATALOG_DB
from codeintel.sqlfiles import core_owning_names, names_calling, quote_literal
from udfs.context import CatalogContext, pinned

LOG = logging.getLogger("codeintel.serve")

#: Environment variable holding the server's password (``--password-file`` wins).
PASSWORD_ENV = "CODEINTEL_SERVE_PASSWORD"
#: What the server says it is: SQLAlchemy and BI tools parse a Postgres version from it.
SERVER_VERSION = "14.0"
VERSION_STRING = f"PostgreSQL {SERVER_VERSION} (codeintel-sql serve, DuckDB {duckdb.__version__})"
#: The name the catalog is ATTACHed as: the file's stem, as a stock client opening it sees it.
DATABASE = Path(CATALOG_DB).stem

#: UDFs that write files in the catalog or change state every session shares (faiss_set_params
#: sets the search parameters of the one shared loaded index); refused in read-only mode, with
#: the macros and views that call them.
WRITING_UDFS = frozenset({"faiss_build", "fusion_save", "faiss_autotune", "xtr_build_lens", "catalog_output_path",
                          "faiss_set_params"})

#: Statement types a read-only session may run.  DuckDB itself refuses writes and DDL on the
#: READ_ONLY catalog and allows them on TEMP objects, so CREATE/INSERT/... stay allowed here.
READ_ONLY_TYPES = frozenset({
    "SELECT", "EXPLAIN", "PREPARE", "EXECUTE", "TRANSACTION", "CREATE", "CREATE_FUNC", "DROP", "INSERT", "UPDATE",
    "DELETE", "ALTER", "SET",
})
#: Refused even with ``allow_writes``: they would change the server (extensions, attached
#: databases, a Quack listener, checkpoints) under every session.
SERVER_TYPES = frozenset({"LOAD", "EXTENSION", "ATTACH", "DETACH", "PRAGMA", "CALL", "COPY_DATABASE"})


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What ``bootstrap.py serve`` was asked for."""

    catalog_dir: Path
    host: str = "127.0.0.1"
    #: 0 picks a free port; the log line "serving ... on HOST:PORT" names it.
    port: int = 5433
    allow_writes: bool = False
    #: None: no password (allowed only when the server binds a loopback address).
    password: str | None = None
    #: Also serve DuckDB clients over Quack on this port (None: no Quack).
    quack_port: int | None = None
    #: Settings overrides (``--set``), as for every command.
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def read_password(password_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The password from ``--password-file`` (first line), else from $CODEINTEL_SERVE_PASSWORD, else None."""
    if password_file:
        try:
            text = Path(password_file).read_text().splitlines()
        except OSError as error:
            raise CatalogError(f"serve: cannot read --password-file {password_file}: {error.strerror}; "
                               "give a readable file whose first line is the password") from error
        password = text[0].strip() if text else ""
        if not password:
            raise CatalogError(f"serve: --password-file {password_file} is empty; put the password on its first line")
        return password
    return environ.get(PASSWORD_ENV) or None


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_config(config: ServeConfig) -> None:
    """Refuse what would serve the catalog unsafely: no password on an address others reach."""
    if config.password is None and not is_loopback(config.host):
        raise CatalogError(f"serve: --host {config.host} is reachable from other machines, and no password is set; "
                           f"give --password-file FILE or set ${PASSWORD_ENV} (or bind 127.0.0.1)")


# --------------------------------------------------------------------------- generations


#: Prepares a generation's first connection as bootstrap.prepare does (extensions, settings, UDFs, macros, views).
PrepareBase = Callable[[duckdb.DuckDBPyConnection, CatalogContext], None]
#: Prepares one more connection on that database (bootstrap.prepare_connection: macros, TEMP views).
PrepareMore = Callable[[duckdb.DuckDBPyConnection, CatalogContext], Any]


class ThreadGate:
    """The thread rule, per database instance: one DuckDB thread while any session runs a core-owning statement.

    ``SET threads`` changes the whole instance, so two sessions each saving and restoring it
    (``sqlfiles.duckdb_threads``) would race and could leave it at 1; a count does not.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.active = 0
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def single(self, connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
        with self.lock:
            if self.active == 0:
                connection.execute("SET threads = 1")
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                if self.active == 0:
                    connection.execute("SET threads = ?", [self.threads])


def file_identity(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino, info.st_mtime_ns


@dataclasses.dataclass(eq=False)
class Generation:
    """One ATTACHed version of ``catalog.duckdb``: its prepared base connection and its sessions."""

    identity: tuple[int, int, int]
    base: duckdb.DuckDBPyConnection
    gate: ThreadGate
    #: Names whose statements run under the thread rule / are refused read-only.
    core_owners: frozenset[str]
    writers: frozenset[str]
    #: DuckDB settings (lower case), which a client may not SET: they are the instance's, every session's.
    setting_names: frozenset[str]
    sessions: int = 0
    retired: bool = False


#: Postgres functions and types that clients call on connect or in schema browsers and DuckDB
#: lacks: TEMP macros and types on each session.  psycopg's TypeInfo.fetch (SQLAlchemy's connect)
#: calls to_regtype, SQLAlchemy's inspector pg_get_serial_sequence and CAST(... AS REGCLASS).
PG_COMPAT_FUNCTIONS = {
    "to_regtype": "(name) AS (SELECT any_value(oid) FROM pg_catalog.pg_type WHERE typname = name)",
    "pg_get_serial_sequence": "(relation, column_name) AS NULL::VARCHAR",
    "pg_collation_is_visible": "(collation) AS true",
    # DuckDB's names its types int8, varchar, list...: SQLAlchemy and BI tools know Postgres's.
    "format_type": "(type_oid, typemod) AS (SELECT CASE t WHEN 'int8' THEN 'bigint' WHEN 'int4' THEN 'integer' "
                   "WHEN 'int2' THEN 'smallint' WHEN 'float8' THEN 'double precision' WHEN 'float4' THEN 'real' "
                   "WHEN 'bool' THEN 'boolean' WHEN 'varchar' THEN 'text' WHEN 'list' THEN 'json' "
                   "WHEN 'array' THEN 'json' WHEN 'struct' THEN 'json' WHEN 'map' THEN 'json' ELSE t END "
                   "FROM (SELECT pg_catalog.format_type(type_oid, typemod) AS t))",
    "pg_get_userbyid": "(role_oid) AS 'codeintel'",
    # Postgres's is variadic; DuckDB macros overload by arity, and json_object is variadic.
    "json_build_object": ", ".join(
        "({}) AS json_object({})".format(", ".join(f"a{i}" for i in range(n)),
                                         ", ".join(f"a{i}::VARCHAR" if i % 2 == 0 else f"a{i}" for i in range(n)))
        for n in range(2, 17, 2)),
}
#: Postgres catalog tables DuckDB's pg_catalog lacks, as empty TEMP views of the columns clients read.
PG_COMPAT_RELATIONS = {
    "pg_collation": "SELECT 0::BIGINT AS oid, ''::VARCHAR AS collname, 0::BIGINT AS collnamespace LIMIT 0",
}
PG_COMPAT_MACROS = tuple(
    [f"CREATE OR REPLACE TEMP MACRO {name}{body}" for name, body in PG_COMPAT_FUNCTIONS.items()]
    + [f"CREATE OR REPLACE TEMP VIEW {name} AS {body}" for name, body in PG_COMPAT_RELATIONS.items()]
    + [f"CREATE TEMP TYPE {name} AS VARCHAR" for name in ("regclass", "regtype", "regproc", "regnamespace")]
)
#: Postgres object-identifier casts (``oid::regtype``) in catalog queries: DuckDB's pg_catalog oids
#: compare as plain numbers, so the cast is dropped (buenavista does the same).
REG_CASTS = re.compile(r"::\s*(?:pg_catalog\.)?reg(?:type|class|proc|procedure|namespace|oper|role|collation)\b",
                       re.IGNORECASE)
#: psql's \\d queries: ``OPERATOR(pg_catalog.~)`` is DuckDB's ``~``; ``COLLATE pg_catalog.default`` is the default.
PSQL_OPERATORS = re.compile(r"OPERATOR\(pg_catalog\.([~=<>!]+)\)|COLLATE\s+pg_catalog\.default", re.IGNORECASE)
#: ``pg_catalog.<function>``: DuckDB looks a qualified name up in its own pg_catalog, which a
#: TEMP macro is not in, so the qualifier is dropped for the functions above.
PG_COMPAT_QUALIFIED = re.compile(r"\bpg_catalog\.(" + "|".join([*PG_COMPAT_FUNCTIONS, *PG_COMPAT_RELATIONS]) + r")\b",
                                 re.IGNORECASE)


class Catalog:
    """The served catalog: its shared context and the generation new sessions get."""

    def __init__(self, config: ServeConfig, context: CatalogContext, prepare_base: PrepareBase,
                 prepare_more: PrepareMore) -> None:
        self.config = config
        self.context = context
        self.prepare_base = prepare_base
        self.prepare_more = prepare_more
        self.path = context.catalog_dir / CATALOG_DB
        self.lock = threading.Lock()
        self.current: Generation | None = None
        self.generations_opened = 0

    def open_generation(self) -> Generation:
        identity = file_identity(self.path)
        base = duckdb.connect(":memory:", config={"allow_unsigned_extensions": "true"})
        try:
            mode = "" if self.config.allow_writes else " (READ_ONLY)"
            base.execute(f"ATTACH {quote_literal(str(self.path))} AS {DATABASE}{mode}")
            base.execute(f"USE {DATABASE}")
            self.prepare_base(base, self.context)
            threads = int(base.execute("SELECT current_setting('threads')").fetchone()[0])
            core_owners = core_owning_names(base)
            writers = names_calling(base, WRITING_UDFS)
            # search_path is left out: clients set it as a Postgres session variable, acknowledged and not run.
            setting_names = frozenset(name.lower() for (name,) in base.execute(
                "SELECT name FROM duckdb_settings()").fetchall()) - {"search_path"}
            # Last: from here on no statement reaches a file outside the catalog, and SQL cannot undo it.
            allowed = str(self.context.catalog_dir).rstrip("/") + "/"
            base.execute("SET allowed_directories = ?", [[allowed]])
            base.execute("SET enable_external_access = false")
        except BaseException:
            base.close()
            raise
        self.generations_opened += 1
        LOG.info("serve: opened %s (generation %d, %s)", self.path, self.generations_opened,
                 "read-write" if self.config.allow_writes else "read-only")
        return Generation(identity, base, ThreadGate(threads), core_owners, writers, setting_names)

    def acquire(self) -> tuple[Generation, duckdb.DuckDBPyConnection]:
        """A prepared connection for a new session, on the newest ``catalog.duckdb``."""
        with self.lock:
            current = self.current
            if current is None or (not self.config.allow_writes and file_identity(self.path) != current.identity):
                if current is not None:
                    current.retired = True
                    self._close_if_idle(current)
                current = self.current = self.open_generation()
            current.sessions += 1
        try:
            connection = current.base.cursor()
            connection.execute(f"USE {DATABASE}")
            self.prepare_more(connection, self.context)
            for statement in PG_COMPAT_MACROS:
                connection.execute(statement)
        except BaseException:
            self.release(current, None)
            raise
        return current, connection

    def release(self, generation: Generation, connection: duckdb.DuckDBPyConnection | None) -> None:
        if connection is not None:
            with contextlib.suppress(duckdb.Error):
                connection.close()
        with self.lock:
            generation.sessions -= 1
            self._close_if_idle(generation)

    def _close_if_idle(self, generation: Generation) -> None:
        # A session's cursor dies with its base connection, so a retired generation closes when its last session does.
        if generation.retired and generation.sessions == 0:
            generation.base.close()
            LOG.info("serve: closed a superseded generation of %s", self.path)

    def close(self) -> None:
        with self.lock:
            if self.current is not None:
                self.current.retired = True
                self._close_if_idle(self.current)
                self.current = None


# --------------------------------------------------------------------------- statements


class Refused(Exception):
    """A statement the server's mode does not allow; carries its SQLSTATE."""

    def __init__(self, message: str, sqlstate: str = "25006") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def set_target(statement: str) -> str:
    """What a SET statement sets, lower-cased: a setting's name, ``variable`` or ``use``."""
    words = statement.replace("=", " ").split()
    if not words:
        return ""
    if words[0].lower() == "use":
        return "use"
    rest = [word.lower() for word in words[1:]]
    while rest and rest[0] in ("session", "local", "global"):
        rest.pop(0)
    return rest[0] if rest else ""


#: Every identifier-like word of a statement, string literals and comments included.
NAME_WORD = re.compile(r"[a-z_][a-z0-9_$]*")


def name_words(sql: str) -> set[str]:
    """The words of ``sql`` that could name a function, macro or view, lower-cased.

    A superset of ``sqlfiles.sql_words`` (it also reads words inside strings and comments),
    so the thread rule and the read-only check can only fire more often, never less; about 20x
    cheaper on a statement carrying a 384-float vector literal, where sql_words (DuckDB's
    tokenizer, one regex match per token) took 1.1 ms of every served search.
    """
    return set(NAME_WORD.findall(sql.lower()))


def refusal(statements: list[Any], generation: Generation, allow_writes: bool) -> Refused | None:
    """Why the server refuses these statements (None: they may run)."""
    for statement in statements:
        kind = statement.type.name
        if kind in SERVER_TYPES:
            return Refused(f"{kind} statements are not allowed through codeintel-sql serve: they would change the "
                           "server under every session", "42501")
        if kind == "SET" and set_target(statement.query) in generation.setting_names:
            return Refused(f"SET {set_target(statement.query)}: DuckDB settings are fixed when the server starts and "
                           "shared by every session; start it with --set NAME=VALUE", "42501")
        if allow_writes:
            continue
        if kind not in READ_ONLY_TYPES:
            return Refused(f"the catalog is served read-only: a {kind} statement is not allowed; restart the server "
                           "with --allow-writes to write (TEMP tables, views and macros are allowed)")
        if named := sorted(name_words(statement.query) & generation.writers):
            return Refused(f"the catalog is served read-only: {', '.join(named)} writes catalog files or changes "
                           "every session's search; run it with `python bootstrap.py` on the catalog, or restart "
                           "the server with --allow-writes")
    return None


#: Client queries answered here: DuckDB has no such function or statement, or answers differently.
def intercepted(sql: str) -> tuple[str, str] | None:
    """(column, value) for a client's session-introspection query, else None."""
    text = " ".join(sql.strip().rstrip(";").split()).lower()
    answers = {
        "select version()": ("version", VERSION_STRING),
        "select pg_catalog.version()": ("version", VERSION_STRING),
        "show transaction isolation level": ("transaction_isolation", "read committed"),
        "show standard_conforming_strings": ("standard_conforming_strings", "on"),
        "show server_version": ("server_version", SERVER_VERSION),
        "show client_encoding": ("client_encoding", "UTF8"),
        "show datestyle": ("DateStyle", "ISO, MDY"),
        "show timezone": ("TimeZone", "UTC"),
        "show search_path": ("search_path", "main"),
        "select current_schema()": ("current_schema", "main"),
    }
    return answers.get(text)


# --------------------------------------------------------------------------- results as Postgres types


def pg_array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, float, decimal.Decimal)):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pg_text(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def json_text(value: Any) -> str:
    return json.dumps(value, default=str)


def array_text(value: list[Any]) -> str:
    return "{" + ",".join(pg_array_item(item) for item in value) + "}"


#: Arrow type -> (Postgres type oid, text encoder).
def pg_type(kind: pa.DataType) -> tuple[int, Callable[[Any], str]]:
    types = pa.types
    if types.is_boolean(kind):
        return 16, pg_text
    if types.is_int8(kind) or types.is_int16(kind) or types.is_uint8(kind):
        return 21, str
    if types.is_int32(kind) or types.is_uint16(kind):
        return 23, str
    if types.is_int64(kind) or types.is_uint32(kind):
        return 20, str
    if types.is_integer(kind) or types.is_decimal(kind):
        return 1700, str
    if types.is_float16(kind) or types.is_float32(kind):
        return 700, pg_text
    if types.is_floating(kind):
        return 701, pg_text
    if types.is_string(kind) or types.is_large_string(kind):
        return 25, str
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind):
        return 17, pg_text
    if types.is_date(kind):
        return 1082, pg_text
    if types.is_time(kind):
        return 1083, pg_text
    if types.is_timestamp(kind):
        return (1184 if kind.tz else 1114), pg_text
    if types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind):
        item = kind.value_type
        if types.is_boolean(item):
            return 1000, array_text
        if types.is_integer(item):
            return 1016, array_text
        if types.is_floating(item):
            return 1022, array_text
        if types.is_string(item) or types.is_large_string(item):
            return 1009, array_text
        return 114, json_text
    if types.is_struct(kind) or types.is_map(kind) or types.is_union(kind):
        return 114, json_text
    return 25, pg_text


class Result:
    """A statement's result as the wire protocol sends it: columns (name, oid, encoder) and text rows."""

    def __init__(self, reader: pa.RecordBatchReader | None = None, status: str = "",
                 single: tuple[str, str] | None = None) -> None:
        self.reader = reader
        self._status = status
        self.result_format: list[int] | None = None
        if single is not None:
            self.columns = [(single[0], 25, str)]
            self.batches: Iterator[list[list[Any]]] = iter([[[single[1]]]])
        elif reader is not None:
            self.columns = [(field.name, *pg_type(field.type)) for field in reader.schema]
            self.batches = (batch.to_pydict().values() for batch in reader)  # type: ignore[misc]
        else:
            self.columns = []
            self.batches = iter([])

    def has_results(self) -> bool:
        return bool(self.columns)

    def column_count(self) -> int:
        return len(self.columns)

    def rows(self) -> Iterator[list[bytes | None]]:
        encoders = [encoder for _, _, encoder in self.columns]
        for columns in self.batches:
            for row in zip(*columns, strict=True):
                yield [None if value is None else encoder(value).encode() for value, encoder in
                       zip(row, encoders, strict=True)]

    def status(self) -> str:
        return self._status


# --------------------------------------------------------------------------- sessions


SQLSTATES = {
    "ParserException": "42601", "SyntaxException": "42601", "CatalogException": "42P01",
    "BinderException": "42703", "PermissionException": "42501", "ConversionException": "22P02",
    "InvalidInputException": "22023", "OutOfRangeException": "22003", "ConstraintException": "23000",
    "TransactionException": "25P02", "InterruptException": "57014", "OutOfMemoryException": "53200",
}


def sqlstate(error: BaseException) -> str:
    if isinstance(error, Refused):
        return error.sqlstate
    for kind in type(error).__mro__:
        if kind.__name__ in SQLSTATES:
            return SQLSTATES[kind.__name__]
    return "XX000"


class ServedSession:
    """One client session: its own prepared connection on the current generation, opened after login."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.generation: Generation | None = None
        self.connection: duckdb.DuckDBPyConnection | None = None
        self.in_txn = False
        self.failed = False

    def open(self) -> None:
        self.generation, self.connection = self.catalog.acquire()

    def close(self) -> None:
        if self.generation is not None:
            generation, self.generation = self.generation, None
            self.catalog.release(generation, self.connection)
            self.connection = None

    def interrupt(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(duckdb.Error):
                self.connection.interrupt()

    def transaction_status(self) -> bytes:
        if not self.in_txn:
            return b"I"
        return b"E" if self.failed else b"T"

    def execute_sql(self, sql: str, params: list[Any] | None = None) -> Result:
        assert self.connection is not None and self.generation is not None, "session used before login"
        if not sql.strip():
            return Result(status="EMPTY")
        if (answer := intercepted(sql)) is not None:
            return Result(single=answer)
        if "::reg" in sql:
            sql = REG_CASTS.sub("", sql)
        if "pg_catalog." in sql:
            sql = PG_COMPAT_QUALIFIED.sub(lambda match: match.group(1), sql)
            sql = PSQL_OPERATORS.sub(lambda match: match.group(1) or "", sql)
        if (savepoint := self.savepoint(sql)) is not None:
            return savepoint
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error:
            self._mark_failed()
            raise
        kinds = [statement.type.name for statement in statements]
        first = statements[0].query.split(None, 1)[0].lower() if statements else ""
        if self.failed and first not in ("rollback", "abort"):
            raise Refused("current transaction is aborted, commands ignored until end of transaction block (ROLLBACK)",
                          "25P02")
        if (refused := refusal(statements, self.generation, self.catalog.config.allow_writes)) is not None:
            self._mark_failed()
            raise refused
        if kinds == ["SET"] and set_target(statements[0].query) not in ("variable", "use"):
            # A Postgres session variable (SET extra_float_digits = 3, SET DateStyle ...) that
            # DuckDB lacks: acknowledged, as clients expect, and not run.
            return Result(status="SET")
        try:
            if name_words(sql) & self.generation.core_owners:
                # Read whole inside the gate: the SET threads that ends it runs on this connection,
                # which would close a result still streaming.  Search results are small.
                # One index version for the whole statement, even if a publish lands mid-way.
                with self.generation.gate.single(self.connection), pinned(self.catalog.context):
                    self.connection.execute(sql, params or None)
                    table = self.connection.fetch_arrow_table() if self.connection.description else None
                reader = table.to_reader() if table is not None else None
            else:
                self.connection.execute(sql, params or None)
                reader = self.connection.fetch_record_batch() if self.connection.description else None
        except duckdb.Error:
            self._mark_failed()
            raise
        if kinds == ["TRANSACTION"]:
            self.in_txn = first in ("begin", "start")
            self.failed = False
        if reader is not None:
            return Result(reader, status="SELECT")
        return Result(status=first.upper() if kinds == ["TRANSACTION"] else TAGS.get(kinds[-1], kinds[-1]))

    def savepoint(self, sql: str) -> Result | None:
        """SAVEPOINT, RELEASE and ROLLBACK TO, which DuckDB lacks and psycopg sends (``conn.transaction()``
        inside a transaction, as SQLAlchemy's connect does).  Acknowledged; ROLLBACK TO a savepoint
        after an error rolls the whole DuckDB transaction back and begins another: a read-only
        session loses no data by it, only TEMP objects made since BEGIN."""
        words = sql.strip().rstrip(";").lower().split()
        if not words or words[0] not in ("savepoint", "release", "rollback") or not self.in_txn:
            return None
        if words[0] == "savepoint":
            return Result(status="SAVEPOINT")
        if words[0] == "release":
            return Result(status="RELEASE")
        if len(words) > 1 and words[1] == "to":
            if self.failed:
                assert self.connection is not None
                self.connection.execute("ROLLBACK")
                self.connection.execute("BEGIN")
                self.failed = False
            return Result(status="ROLLBACK")
        return None

    def _mark_failed(self) -> None:
        if self.in_txn:
            self.failed = True


#: The command tag a statement without rows completes with (psql prints it).
TAGS = {"INSERT": "INSERT 0 0", "CREATE_FUNC": "CREATE"}


# --------------------------------------------------------------------------- the Postgres wire protocol


def postgres_server(config: ServeConfig, catalog: Catalog) -> socketserver.ThreadingTCPServer:
    """A buenavista server whose sessions are :class:`ServedSession`\\ s; not started."""
    from buenavista import postgres as bv

    class Handler(bv.BuenaVistaHandler):
        """buenavista's protocol, with a session per client opened after login, typed parameters,
        errors with their SQLSTATE, refused logins logged, and a working cancel."""

        def handle(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            self.r = bv.BVBuffer(self.rfile)
            ctx = None
            try:
                ctx = self.handle_startup(self.server.conn)
                if ctx is not None:
                    self.server.ctxts[ctx.process_id] = ctx
                while ctx is not None:
                    code = self.r.read_byte()
                    if not code or code == bv.ClientCommand.TERMINATE:
                        break
                    length = self.r.read_uint32()
                    payload = self.r.read_bytes(length - 4) if length > 4 else b""
                    if not ctx.authenticated:
                        if code != bv.ClientCommand.PASSWORD_MESSAGE or not self.check_password(ctx, payload):
                            break
                    elif code == bv.ClientCommand.QUERY:
                        self.handle_query(ctx, payload)
                    elif code == bv.ClientCommand.PARSE:
                        self.handle_parse(ctx, payload)
                    elif code == bv.ClientCommand.BIND:
                        self.handle_bind(ctx, payload)
                    elif code == bv.ClientCommand.DESCRIBE:
                        self.handle_describe(ctx, payload)
                    elif code == bv.ClientCommand.EXECUTE:
                        self.handle_execute(ctx, payload)
                    elif code == bv.ClientCommand.CLOSE:
                        self.handle_close(ctx, payload)
                    elif code == bv.ClientCommand.SYNC:
                        ctx.sync()
                        self.send_ready_for_query(ctx)
                    elif code == bv.ClientCommand.FLUSH:
                        self.wfile.flush()
                    else:
                        raise ValueError(f"unknown message type {code!r}")
            except (ConnectionError, OSError):
                pass  # the client went away
            except Exception as error:  # a protocol error ends this session only
                LOG.warning("serve: session from %s ended: %s", self.client_address[0], error)
                with contextlib.suppress(OSError):
                    self.send_error(error)
            finally:
                if ctx is not None:
                    self.server.ctxts.pop(ctx.process_id, None)
                    ctx.session.close()

        def handle_startup(self, conn: Any) -> Any:
            length = self.r.read_uint32()
            if not length:
                return None
            code = self.r.read_uint32()
            if code in (80877103, 80877104):  # SSL or GSS encryption request: not offered
                self.wfile.write(b"N")
                return self.handle_startup(conn)
            if code == 80877102:  # cancel request: interrupt that session's running statement
                process_id, secret = self.r.read_uint32(), self.r.read_uint32()
                target = self.server.ctxts.get(process_id)
                if target is not None and target.secret_key == secret:
                    target.session.interrupt()
                return None
            if code != 196608:
                raise ValueError(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}; clients speak 3.0")
            fields = [item.decode() for item in self.r.read_bytes(length - 8).split(bv.NULL_BYTE)]
            params = dict(zip(fields[::2], fields[1::2], strict=False))
            ctx = bv.BVContext(ServedSession(catalog), None, params)
            if config.password is None:
                self.send_authentication_ok()
                self.after_login(ctx)
            else:
                self.send_authentication_md5(ctx)
            return ctx

        def check_password(self, ctx: Any, payload: bytes) -> bool:
            user = ctx.params.get("user", "")
            answer = payload.decode(errors="replace").rstrip("\x00")
            assert config.password is not None
            inner = hashlib.md5((config.password + user).encode()).hexdigest()
            expected = "md5" + hashlib.md5(inner.encode() + ctx.salt).hexdigest()
            if not hmac.compare_digest(answer, expected):
                LOG.warning("serve: refused login of user %r from %s: wrong password", user, self.client_address[0])
                self.send_error_fields("FATAL", "28P01", f'password authentication failed for user "{user}"')
                return False
            self.send_authentication_ok()
            self.after_login(ctx)
            return True

        def after_login(self, ctx: Any) -> None:
            LOG.info("serve: session for user %r from %s", ctx.params.get("user", ""), self.client_address[0])
            ctx.session.open()
            self.send_parameter_status({
                "server_version": SERVER_VERSION, "server_encoding": "UTF8", "client_encoding": "UTF8",
                "DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on",
                "standard_conforming_strings": "on", "application_name": ctx.params.get("application_name", ""),
            })
            self.send_backend_key_data(ctx)
            ctx.authenticated = True
            self.send_ready_for_query(ctx)

        def handle_query(self, ctx: Any, payload: bytes) -> None:
            sql = payload.decode().rstrip("\x00")
            try:
                result = ctx.session.execute_sql(sql)
            except Exception as error:
                self.send_error(error)
            else:
                self.send_result(result)
            self.send_ready_for_query(ctx)

        def send_result(self, result: Result, limit: int = 0) -> int | None:
            if result.status() == "EMPTY":
                self.wfile.write(struct.pack("!ci", bv.ServerResponse.EMPTY_QUERY_RESPONSE, 4))
                return None
            if not result.has_results():
                self.send_command_complete(f"{result.status()}\x00")
                return None
            self.send_row_description(result)
            count = self.send_data_rows(result, limit)
            if limit == 0 or count < limit:
                self.send_command_complete(f"SELECT {count}\x00")
                return None
            return count

        def handle_bind(self, ctx: Any, payload: bytes) -> None:
            buffer = bv.BVBuffer(io.BytesIO(payload))
            portal = read_cstring(buffer)
            statement = read_cstring(buffer)
            formats = [buffer.read_int16() for _ in range(buffer.read_int16())]
            count = buffer.read_int16()
            formats = formats * count if len(formats) == 1 else (formats or [0] * count)
            oids = ctx.stmts[statement][1]
            params = []
            for index in range(count):
                size = buffer.read_int32()
                raw = None if size < 0 else buffer.read_bytes(size)
                oid = oids[index] if index < len(oids) else 0
                params.append(None if raw is None else decode_parameter(raw, oid, formats[index]))
            result_formats = [buffer.read_int16() for _ in range(buffer.read_int16())]
            ctx.add_portal(portal, statement, params, result_formats)
            self.send_bind_complete()

        def handle_describe(self, ctx: Any, payload: bytes) -> None:
            kind, name = payload[:1], payload[1:].rstrip(b"\x00").decode()
            try:
                if kind == b"P":
                    statement, params, _ = ctx.portals[name]
                    result = ctx.session.execute_sql(ctx.stmts[statement][0], params)
                    ctx.result_cache[name] = result
                else:
                    sql, oids = ctx.stmts[name]
                    self.send_paramter_description([oid or 25 for oid in oids])
                    result = Result()  # no rows described before Bind: the portal's Describe gives them
            except Exception as error:
                self.send_error(error, ctx)
                return
            if result.has_results():
                self.send_row_description(result)
            else:
                self.wfile.write(struct.pack("!ci", bv.ServerResponse.NO_DATA, 4))

        def handle_execute(self, ctx: Any, payload: bytes) -> None:
            if ctx.has_error:
                return
            name = payload[:payload.index(b"\x00")].decode()
            limit = struct.unpack("!i", payload[len(name) + 1:len(name) + 5])[0]
            try:
                result = ctx.result_cache.pop(name, None)
                if result is None:
                    statement, params, _ = ctx.portals[name]
                    result = ctx.session.execute_sql(ctx.stmts[statement][0], params)
                if result.has_results():
                    if self.send_data_rows_only(result, limit):
                        ctx.result_cache[name] = result
                        self.wfile.write(struct.pack("!ci", bv.ServerResponse.PORTAL_SUSPENDED, 4))
                elif result.status() == "EMPTY":
                    self.wfile.write(struct.pack("!ci", bv.ServerResponse.EMPTY_QUERY_RESPONSE, 4))
                else:
                    self.send_command_complete(f"{result.status()}\x00")
            except Exception as error:
                self.send_error(error, ctx)

        def send_data_rows_only(self, result: Result, limit: int) -> bool:
            """Rows up to ``limit`` (0: all); True when the portal is suspended with rows left."""
            count = self.send_data_rows(result, limit)
            if limit == 0 or count < limit:
                self.send_command_complete(f"SELECT {count}\x00")
                return False
            return True

        def send_row_description(self, result: Result) -> None:  # type: ignore[override]
            out = io.BytesIO()
            for name, oid, _ in result.columns:
                out.write(name.encode() + b"\x00")
                out.write(struct.pack("!ihihih", 0, 0, oid, -1, -1, 0))  # always text format
            body = out.getvalue()
            self.wfile.write(struct.pack("!cih", bv.ServerResponse.ROW_DESCRIPTION, len(body) + 6,
                                         len(result.columns)) + body)

        def send_data_rows(self, result: Result, limit: int = 0) -> int:  # type: ignore[override]
            count = 0
            if not hasattr(result, "pending"):
                result.pending = result.rows()  # type: ignore[attr-defined]
            for row in result.pending:  # type: ignore[attr-defined]
                out = io.BytesIO()
                for value in row:
                    if value is None:
                        out.write(struct.pack("!i", -1))
                    else:
                        out.write(struct.pack("!i", len(value)) + value)
                body = out.getvalue()
                self.wfile.write(struct.pack("!cih", bv.ServerResponse.DATA_ROW, len(body) + 6, len(row)) + body)
                count += 1
                if limit > 0 and count >= limit:
                    break
            return count

        def send_error(self, error: Any, ctx: Any = None) -> None:  # type: ignore[override]
            message = error.args[0] if isinstance(error, BaseException) and error.args else str(error)
            if isinstance(error, BaseException) and not isinstance(error, (duckdb.Error, Refused)):
                LOG.exception("serve: unexpected error", exc_info=error)
            self.send_error_fields("ERROR", sqlstate(error) if isinstance(error, BaseException) else "XX000",
                                   str(message))
            if ctx is not None:
                ctx.mark_error()

        def send_error_fields(self, severity: str, code: str, message: str) -> None:
            body = b"".join(key + value.encode() + b"\x00" for key, value in
                            ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message))) + b"\x00"
            self.wfile.write(struct.pack("!ci", bv.ServerResponse.ERROR_RESPONSE, len(body) + 4) + body)

        def send_ready_for_query(self, ctx: Any) -> None:  # type: ignore[override]
            status = ctx.session.transaction_status() if ctx is not None else b"I"
            self.wfile.write(struct.pack("!cic", bv.ServerResponse.READY_FOR_QUERY, 5, status))
            self.wfile.flush()

    class Server(bv.BuenaVistaServer):
        daemon_threads = True
        # The check buenavista makes (loopback only) is replaced by check_config: any address
        # may connect to a server that has a password, only loopback to one that has none.

        def verify_request(self, request: Any, client_address: Any) -> bool:
            return True

    class Sessions(bv.Connection):
        pass

    server = Server((config.host, config.port), Sessions())
    server.RequestHandlerClass = Handler
    return server


def read_cstring(buffer: Any) -> str:
    out = bytearray()
    while (byte := buffer.read_byte()) not in (b"\x00", b""):
        out += byte
    return out.decode()


INT_OIDS = frozenset({20, 21, 23, 26})
FLOAT_OIDS = frozenset({700, 701})
#: int2[], int4[], int8[], float4[], float8[].
ARRAY_OIDS = frozenset({1005, 1007, 1016, 1021, 1022})


def decode_parameter(raw: bytes, oid: int, fmt: int) -> Any:
    """A bound parameter as the Python value DuckDB should see, from its type oid and format."""
    if fmt == 1:  # binary
        if oid == 16:
            return raw != b"\x00"
        if oid in INT_OIDS:
            return int.from_bytes(raw, "big", signed=True)
        if oid == 700:
            return struct.unpack("!f", raw)[0]
        if oid == 701:
            return struct.unpack("!d", raw)[0]
        if oid == 17:
            return raw
        return raw.decode()
    text = raw.decode()
    if oid in ARRAY_OIDS and text.startswith("{") and text.endswith("}"):
        # A vector as a parameter (psycopg sends a list of floats as float8[]): a list DuckDB casts.
        items = [item.strip() for item in text[1:-1].split(",")] if text != "{}" else []
        convert = float if oid in (1021, 1022) else int
        return [None if item.upper() == "NULL" else convert(item) for item in items]
    if oid in INT_OIDS:
        return int(text)
    if oid in FLOAT_OIDS:
        return float(text)
    if oid == 1700:
        return decimal.Decimal(text)
    if oid == 16:
        return text.lower() in ("t", "true", "1", "on", "yes")
    return text


# --------------------------------------------------------------------------- running it


def serve(config: ServeConfig, context: CatalogContext, prepare_base: PrepareBase, prepare_more: PrepareMore,
          ready: Callable[[tuple[str, int]], None] | None = None, stop: threading.Event | None = None,
          quack: Callable[[ServeConfig, Catalog], Any] | None = None) -> None:
    """Serve until ``stop`` is set (or the process is interrupted); the catalog is left as it was.

    ``quack`` makes the Quack server when ``config.quack_port`` is set
    (``codeintel.serve_quack.QuackServer``, which builds on this module).
    """
    check_config(config)
    catalog = Catalog(config, context, prepare_base, prepare_more)
    writer = contextlib.ExitStack()
    if config.allow_writes:
        # A read-write server writes catalog.duckdb in place: other writers (which publish a copy
        # by rename) wait for it to stop, or the server's writes would land in a replaced file.
        writer.enter_context(writer_lock(config.catalog_dir))
    with writer:
        catalog.release(*catalog.acquire())  # a catalog that cannot be prepared fails here, before listening
        server = postgres_server(config, catalog)
        quack_server = None
        try:
            if config.quack_port is not None:
                if quack is None:
                    raise CatalogError("serve: a Quack port was given but no Quack server to run on it")
                quack_server = quack(config, catalog)
                quack_server.start()
            host, port = server.server_address[:2]
            LOG.info("serve: serving %s on %s:%d (Postgres protocol; %s, %s)%s", config.catalog_dir, host, port,
                     "read-write" if config.allow_writes else "read-only",
                     "password required" if config.password else "no password, loopback only",
                     f"; Quack on port {quack_server.port}" if quack_server else "")
            if ready is not None:
                ready((host, port))
            thread = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
            thread.start()
            try:
                while not (stop or threading.Event()).wait(0.5):
                    pass
            finally:
                server.shutdown()
        finally:
            server.server_close()
            if quack_server is not None:
                quack_server.stop()
            catalog.close()
            LOG.info("serve: stopped")

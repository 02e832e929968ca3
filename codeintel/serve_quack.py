"""The catalog for DuckDB clients over Quack (``bootstrap.py serve --quack``), DuckDB 1.5.5's beta protocol.

Quack runs each remote query on a fresh server-side connection of the database instance
it serves, whose current database is the instance's default, and TEMP objects are
per connection: a TEMP macro such as ``faiss_search`` is invisible there.  So the Quack
instance is one of its own: an in-memory database (the default one) with the catalog
ATTACHed READ_ONLY, where the macros of ``sql/macros/`` are created as ordinary (in-memory,
never persisted) macros and every catalog view and table (``chunk_locations``) is mirrored by a
view of the same name.
Python UDFs belong to the instance, so remote connections see them; they are registered
with the server's shared context, so Quack and Postgres sessions share one loaded index.

Authentication and authorization are Quack's callbacks, here Python UDFs: the token is the
server's password (refusals are logged), and every query passes :func:`codeintel.serve.refusal`
first, as Postgres sessions do.  Quack's connections cannot be wrapped per statement, so
this instance keeps DuckDB at one thread (the thread rule for every statement).  Not live
for *views*: the mirror reads the catalog.duckdb of the server's start (index versions are
live, through the UDFs); restart the server to serve views a writer added since.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import duckdb

from codeintel.errors import CatalogError
from codeintel.serve import (
    DATABASE,
    WRITING_UDFS,
    Catalog,
    Generation,
    Refused,
    ServeConfig,
    ThreadGate,
    name_words,
    refusal,
)
from codeintel.sqlfiles import core_owning_names, macro_order, names_calling, quote_literal, read_macro_files

LOG = logging.getLogger("codeintel.serve")

#: Quack's own extension package and the one it needs, pinned at DuckDB's version (pyproject.toml).
QUACK_EXTENSIONS = ("httpfs", "quack")
#: Quack refuses shorter tokens.
MIN_TOKEN = 4
#: Quack functions a client must not call: they start, stop or list listeners on the server.
QUACK_FUNCTIONS = frozenset({"quack_serve", "quack_stop", "quack_server_list", "quack_clear_cache",
                             "quack_active_connections", "quack_query", "quack_query_by_name"})
#: Read-only Quack clients may run queries only: the in-memory default database is writable and
#: shared by every Quack client, so TEMP-like scratch objects are not offered there.
QUACK_READ_ONLY_TYPES = frozenset({"SELECT", "EXPLAIN", "TRANSACTION"})
TEMP_CREATE = re.compile(r"\bCREATE\s+(OR\s+REPLACE\s+)?TEMP(ORARY)?\s+", re.IGNORECASE)


def extension_path(name: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(f"serve --quack: the {name} extension package is missing; install "
                           f"duckdb-extension-{name}=={duckdb.__version__} (pip install -e .)")
    path = Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / \
        f"{name}.duckdb_extension"
    if not path.exists():
        raise CatalogError(f"serve --quack: {path} is missing; install duckdb-extension-{name}=={duckdb.__version__}")
    return path


class QuackServer:
    """One DuckDB instance serving the catalog over Quack on ``config.quack_port`` (loopback unless --host)."""

    def __init__(self, config: ServeConfig, catalog: Catalog) -> None:
        assert config.quack_port is not None
        self.config = config
        self.catalog = catalog
        self.port = config.quack_port
        self.token = config.password or secrets.token_urlsafe(18)
        if len(self.token) < MIN_TOKEN:
            raise CatalogError(f"serve --quack: the password is the Quack token, which must be at least {MIN_TOKEN} "
                               "characters; choose a longer one")
        self.base: duckdb.DuckDBPyConnection | None = None
        self.policy: Generation | None = None

    @property
    def uri(self) -> str:
        host = "localhost" if self.config.host in ("127.0.0.1", "localhost", "::1") else self.config.host
        return f"quack:{host}:{self.port}"

    def start(self) -> None:
        context = self.catalog.context
        base = duckdb.connect(":memory:", config={"allow_unsigned_extensions": "true"})
        try:
            for name in QUACK_EXTENSIONS:
                base.execute("LOAD " + quote_literal(str(extension_path(name))))
            path = context.catalog_dir / "catalog.duckdb"
            base.execute(f"ATTACH {quote_literal(str(path))} AS {DATABASE}"
                         f"{'' if self.config.allow_writes else ' (READ_ONLY)'}")
            base.execute(f"USE {DATABASE}")
            self.catalog.prepare_base(base, context)
            base.execute("USE memory")
            self.mirror(base)
            self.policy = Generation(
                identity=(0, 0, 0), base=base, gate=ThreadGate(1), core_owners=core_owning_names(base),
                writers=names_calling(base, WRITING_UDFS),
                setting_names=frozenset(name.lower() for (name,) in base.execute(
                    "SELECT name FROM duckdb_settings()").fetchall()))
            base.create_function("codeintel_quack_authenticate", self.authenticate, ["VARCHAR"] * 3, "BOOLEAN",
                                 side_effects=True)
            base.create_function("codeintel_quack_authorize", self.authorize, ["VARCHAR"] * 2, "BOOLEAN",
                                 side_effects=True)
            base.execute("SET GLOBAL quack_authentication_function = 'codeintel_quack_authenticate'")
            base.execute("SET GLOBAL quack_authorization_function = 'codeintel_quack_authorize'")
            # Quack's connections run on their own: no per-statement gate, so one thread for all.
            base.execute("SET threads = 1")
            base.execute("SELECT * FROM quack_serve(?, token := ?, disable_ssl := true, allow_other_hostname := ?)",
                         [self.uri, self.token, self.uri != f"quack:localhost:{self.port}"]).fetchall()
            allowed = str(context.catalog_dir).rstrip("/") + "/"
            base.execute("SET allowed_directories = ?", [[allowed]])
            base.execute("SET enable_external_access = false")
        except BaseException:
            base.close()
            raise
        self.base = base
        if self.config.password is None:
            # No password: the token is made here, and a client needs it (loopback only, see check_config).
            LOG.info("serve: Quack token (no password set): %s", self.token)

    def mirror(self, base: duckdb.DuckDBPyConnection) -> None:
        """The macros as ordinary macros, and a view per catalog view and table, in the default (in-memory)
        database."""
        files = read_macro_files()
        for name in macro_order(files):
            for statement in files[name].statements:
                base.execute(TEMP_CREATE.sub(lambda match: f"CREATE {match.group(1) or ''}", statement, count=1))
        views = base.execute("SELECT view_name FROM duckdb_views() WHERE database_name = $db AND schema_name = 'main' "
                             "AND NOT internal UNION ALL SELECT table_name FROM duckdb_tables() "
                             "WHERE database_name = $db AND schema_name = 'main' AND NOT internal",
                             {"db": DATABASE}).fetchall()
        for (view,) in views:
            quoted = '"' + view.replace('"', '""') + '"'
            base.execute(f"CREATE OR REPLACE VIEW memory.main.{quoted} AS SELECT * FROM {DATABASE}.main.{quoted}")

    def authenticate(self, session: str, client_token: str, server_token: str) -> bool:
        if client_token is not None and secrets.compare_digest(str(client_token), self.token):
            LOG.info("serve: Quack session %s", session)
            return True
        LOG.warning("serve: refused Quack login (session %s): wrong token", session)
        return False

    def authorize(self, session: str, query: str) -> bool:
        assert self.policy is not None
        reason = self.refusal(query)
        if reason is not None:
            LOG.warning("serve: refused Quack query (session %s): %s", session, reason)
            return False
        return True

    def refusal(self, query: str) -> str | None:
        assert self.policy is not None
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error:
            return None  # DuckDB reports the syntax error itself
        if named := sorted(name_words(query) & QUACK_FUNCTIONS):
            return f"{', '.join(named)} would change the server's listeners"
        refused: Refused | None = refusal(statements, self.policy, self.config.allow_writes)
        if refused is not None:
            return str(refused)
        if not self.config.allow_writes and (kinds := {s.type.name for s in statements} - QUACK_READ_ONLY_TYPES):
            return f"the catalog is served read-only: {', '.join(sorted(kinds))} statements are not allowed over Quack"
        return None

    def stop(self) -> None:
        if self.base is not None:
            try:
                self.base.execute("SELECT * FROM quack_stop(?)", [self.uri]).fetchall()
            except duckdb.Error as error:
                LOG.warning("serve: stopping Quack: %s", error)
            self.base.close()
            self.base = None

    def client_hint(self) -> dict[str, Any]:
        return {"uri": self.uri, "token": "the server password" if self.config.password else self.token}

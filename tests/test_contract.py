"""The project's contracts, each checked against a second, independent source.

* every UDF registry entry is a DuckDB function with the declared parameter, return types
  and side effects (``duckdb_functions()`` on a ``bootstrap`` connection);
* every macro of ``sql/macros/`` is present, one per file, named after it, and the files are
  applied after the macros they call;
* every ``udfs/`` module with a ``REGISTRY`` is a family of ``udfs/families.py``, and back;
* every ``.sql`` file parses with sqlglot and opens with a ``/* ... */`` description;
* every ``sql/report_*.sql`` runs on a fixture catalog with runs, pools and an XTR lens;
* the ``chunks`` view has the columns of ``udfs/store_schema.py``.
"""

from __future__ import annotations

import ast
import graphlib
import logging
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

import bootstrap
from codeintel import errors, layout, sqlfiles
from codeintel.session import Session
from tests.eval_support import pooled_catalog
from tests.test_xtr import write_hand_lens
from udfs import families, settings, store_schema
from udfs.context import CatalogContext

PROJECT = layout.PROJECT_DIR
SQL_FILES = sorted([*layout.SQL_DIR.glob("*.sql"), *layout.MACROS_DIR.glob("*.sql"), *layout.VIEWS_DIR.glob("*.sql")])

#: SQL files sqlglot cannot parse, with why; each is an xfail (strict: it fails once sqlglot can).
SQLGLOT_CANNOT_PARSE = {
    f"sql/macros/{name}.sql": "sqlglot 30 cannot parse a macro parameter default (`k := 10`), DuckDB-only "
                              "syntax this macro's SQL surface needs"
    for name in ("channel_bm25", "channel_faiss", "channel_hybrid", "faiss_autotune", "faiss_build", "faiss_search")
}

#: Statements sqlglot keeps as an opaque Command (it has no parser for them), by their first words.
SQLGLOT_COMMANDS = {"RESET VARIABLE": "sqlglot 30 has SET VARIABLE but no RESET VARIABLE"}


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT))


@pytest.fixture(scope="module")
def session(synthetic_catalog_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    catalog = tmp_path_factory.mktemp("contract") / "catalog"
    from tests.conftest import copy_catalog

    copy_catalog(synthetic_catalog_template, catalog)
    with bootstrap.open_catalog(catalog) as opened:
        yield opened


# --------------------------------------------------------------------------- UDF registries


def type_text(spelling: str) -> str:
    """One spelling per DuckDB type: DuckDB's own rendering of the parsed type."""
    return str(duckdb.sqltype(spelling))


def declared_type(spec_type: Any, context: CatalogContext) -> str:
    return type_text(spec_type(context) if callable(spec_type) else spec_type)


@pytest.mark.parametrize("spec", families.all_udf_specs(), ids=lambda spec: spec.name)
def test_registry_entry_is_a_duckdb_function_with_its_types(session, spec) -> None:
    rows = session.connection.execute(
        "SELECT parameter_types, return_type, has_side_effects FROM duckdb_functions() "
        "WHERE function_name = ? AND function_type = 'scalar'", [spec.name]).fetchall()
    assert len(rows) == 1, f"{spec.name}: expected one scalar function, duckdb_functions() has {len(rows)}"
    parameter_types, return_type, side_effects = rows[0]
    assert [type_text(t) for t in parameter_types] == [declared_type(p, session.context) for p in spec.parameters]
    assert type_text(return_type) == declared_type(spec.return_type, session.context)
    assert side_effects == spec.side_effects


def registry_modules() -> set[str]:
    """``udfs`` modules assigning a top-level ``REGISTRY``, read from the source, not imported."""
    found = set()
    for path in (PROJECT / "udfs").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            if any(isinstance(t, ast.Name) and t.id == "REGISTRY" for t in targets):
                found.add(f"udfs.{path.stem}")
    return found


def test_every_udf_family_is_registered() -> None:
    assert registry_modules() == set(families.FAMILIES)
    assert len(families.FAMILIES) == len(set(families.FAMILIES))
    for module in families.family_modules():
        assert module.REGISTRY, f"{module.__name__}: empty REGISTRY"


# --------------------------------------------------------------------------- macros


#: ``CREATE [OR REPLACE] [TEMP] MACRO name(...) AS [TABLE]``, read from the text alone.
CREATE_MACRO = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?MACRO\s+(\w+)\s*\(.*?\)\s*AS\s+(TABLE\b)?",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def macros_in_files() -> dict[str, tuple[Path, str]]:
    """Every macro the files create: name -> (file, 'table_macro' or 'macro')."""
    macros: dict[str, tuple[Path, str]] = {}
    for path in sorted(layout.MACROS_DIR.glob("*.sql")):
        found = CREATE_MACRO.findall(path.read_text())
        assert [name for name, _ in found] == [path.stem], f"{relative(path)}: one macro, named after the file"
        for name, table in found:
            macros[name] = (path, "table_macro" if table else "macro")
    return macros


def test_every_macro_is_present(session) -> None:
    present = dict(session.connection.execute(
        "SELECT function_name, function_type FROM duckdb_functions() "
        "WHERE function_type IN ('macro', 'table_macro') AND NOT internal").fetchall())
    for name, (path, kind) in macros_in_files().items():
        assert present.get(name) == kind, f"{relative(path)}: {kind} {name} missing from duckdb_functions()"


def test_macros_are_applied_after_the_macros_they_call() -> None:
    order = sqlfiles.macro_order(sqlfiles.read_macro_files())
    macros = macros_in_files()
    assert sorted(order) == sorted(macros)
    for name, (path, _) in macros.items():
        body = CREATE_MACRO.split(path.read_text(), maxsplit=1)[-1]
        for callee in macros:
            if callee != name and re.search(rf"\b{callee}\s*\(", body):
                assert order.index(callee) < order.index(name), f"{name} calls {callee}"


def write_macros(directory: Path, macros: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, sql in macros.items():
        (directory / f"{file_name}.sql").write_text(f"/* {file_name} */\n{sql}\n")
    return directory


def test_macro_order_follows_calls_whatever_the_file_names(tmp_path: Path) -> None:
    directory = write_macros(tmp_path, {
        "a_outer": "CREATE TEMP MACRO a_outer(x) AS TABLE SELECT z_inner(x) AS y;",
        "z_inner": "CREATE TEMP MACRO z_inner(x) AS x + 1;",
    })
    connection = duckdb.connect()
    assert sqlfiles.apply_macros(connection, macros_dir=directory) == ["z_inner", "a_outer"]
    assert connection.execute("SELECT y FROM a_outer(1)").fetchone() == (2,)


def test_macro_cycle_names_the_files(tmp_path: Path) -> None:
    directory = write_macros(tmp_path, {
        "m1": "CREATE TEMP MACRO m1(x) AS m2(x);",
        "m2": "CREATE TEMP MACRO m2(x) AS m1(x);",
    })
    with pytest.raises(errors.CatalogError, match=r"cycle: .*m1\.sql.*m2\.sql|cycle: .*m2\.sql.*m1\.sql"):
        sqlfiles.apply_macros(duckdb.connect(), macros_dir=directory)


@pytest.mark.parametrize("sql", [
    "CREATE TEMP MACRO other_name(x) AS x;",
    "CREATE TEMP MACRO misnamed(x) AS x; CREATE TEMP MACRO second(x) AS x;",
    "CREATE TEMP TABLE misnamed AS SELECT 1;",
])
def test_macro_file_must_hold_one_macro_named_after_it(tmp_path: Path, sql: str) -> None:
    directory = write_macros(tmp_path, {"misnamed": sql})
    with pytest.raises(errors.CatalogError, match=r"misnamed\.sql"):
        sqlfiles.apply_macros(duckdb.connect(), macros_dir=directory)


def test_named_macros_come_with_the_macros_they_call(tmp_path: Path) -> None:
    directory = write_macros(tmp_path, {
        "base": "CREATE TEMP MACRO base(x) AS x * 2;",
        "caller": "CREATE TEMP MACRO caller(x) AS base(x) + 1;",
        "unrelated": "CREATE TEMP MACRO unrelated(x) AS no_such_function(x);",
    })
    connection = duckdb.connect()
    assert sqlfiles.apply_macros(connection, ["caller"], macros_dir=directory) == ["base", "caller"]
    assert connection.execute("SELECT caller(3)").fetchone() == (7,)


# --------------------------------------------------------------------------- SQL files


def sql_file_params() -> list:
    params = []
    for path in SQL_FILES:
        reason = SQLGLOT_CANNOT_PARSE.get(relative(path))
        marks = [pytest.mark.xfail(strict=True, raises=sqlglot.errors.ParseError, reason=reason)] if reason else []
        params.append(pytest.param(path, marks=marks, id=relative(path)))
    return params


def test_xfail_list_names_existing_files() -> None:
    assert set(SQLGLOT_CANNOT_PARSE) <= {relative(path) for path in SQL_FILES}


@pytest.mark.parametrize("path", sql_file_params())
def test_sql_file_parses_with_sqlglot(path: Path) -> None:
    text = path.read_text()
    if path.parent == layout.VIEWS_DIR:
        text = string.Template(text).substitute(sqlfiles.VIEW_FACT_PLACEHOLDERS)
    previous = logging.getLogger("sqlglot").level
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # the Command fallback's warning
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb", error_level=sqlglot.ErrorLevel.RAISE) if s]
    finally:
        logging.getLogger("sqlglot").setLevel(previous)
    assert statements, f"{relative(path)}: no statement"
    for statement in statements:
        for command in statement.find_all(exp.Command):
            # A Command keeps its first word as ``this`` and the rest of the statement as text.
            rest = command.expression.name if command.expression else ""
            words = " ".join(f"{command.this} {rest}".split()).upper()
            assert any(words.startswith(known) for known in SQLGLOT_COMMANDS), (
                f"{relative(path)}: sqlglot could not parse {words[:80]!r}")


#: A macro's parameter list, up to ``AS``: where the defaults sqlglot cannot read are.
MACRO_PARAMETERS = re.compile(
    r"^(CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?MACRO\s+\w+\s*)\((.*?)\)(\s*AS\b)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


@pytest.mark.parametrize("name", sorted(SQLGLOT_CANNOT_PARSE))
def test_unparsed_macro_parses_but_for_its_parameter_defaults(name: str) -> None:
    """The xfails above are the defaults alone: the rest of the file parses."""
    def without_defaults(match: re.Match[str]) -> str:
        parameters = re.sub(r"\s*:=\s*('[^']*'|[^,]+)", "", match.group(2))
        return f"{match.group(1)}({parameters}){match.group(3)}"

    text, count = MACRO_PARAMETERS.subn(without_defaults, (PROJECT / name).read_text())
    assert count == 1, f"{name}: no macro parameter list found"
    assert len(sqlglot.parse(text, read="duckdb", error_level=sqlglot.ErrorLevel.RAISE)) >= 1


@pytest.mark.parametrize("path", SQL_FILES, ids=relative)
def test_sql_file_opens_with_a_description(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("/*"), f"{relative(path)}: open with a /* description */ header"
    description = text[2:text.index("*/")] if "*/" in text else ""
    assert len(description.split()) >= 5, f"{relative(path)}: the header says too little"


# --------------------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def report_catalog(eval_catalog_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evaluation catalog with a FAISS and a BM25 run (pools) and a hand-made XTR lens."""
    catalog = pooled_catalog(eval_catalog_template, tmp_path_factory.mktemp("reports") / "catalog", k=5)
    write_hand_lens(catalog)
    return catalog


@pytest.mark.parametrize("path", sorted(layout.SQL_DIR.glob("report_*.sql")), ids=lambda p: p.name)
def test_report_runs_on_a_fixture_catalog(report_catalog: Path, path: Path) -> None:
    connection = bootstrap.connect(report_catalog)
    try:
        result = sqlfiles.run_script(connection, path)
        assert result is not None, f"{path.name}: no result"
        assert result.fetchall(), f"{path.name}: no rows"
    finally:
        connection.close()


# --------------------------------------------------------------------------- chunk store


def test_chunks_view_has_the_store_schema(session) -> None:
    dimension = int(layout.read_store_manifest(layout.current_store(session.catalog))["dimension"])
    # DuckDB's reading of the Arrow schema, independent of the view's SQL.
    expected = duckdb.from_arrow(store_schema.chunk_schema(dimension).empty_table())
    described = session.connection.execute(
        "SELECT column_name, column_type FROM (DESCRIBE chunks)").fetchall()
    assert [(name, type_text(kind)) for name, kind in described] == [
        (name, str(kind)) for name, kind in zip(expected.columns, expected.types, strict=True)]
    assert described[-1] == (store_schema.EMBEDDING_COLUMN, f"FLOAT[{dimension}]")
    assert isinstance(store_schema.chunk_schema(dimension).field(store_schema.EMBEDDING_COLUMN).type,
                      pa.FixedSizeListType)


# --------------------------------------------------------------------------- the import graph


def project_modules() -> dict[str, Path]:
    """``udfs.x``, ``codeintel.x`` and ``bootstrap``, with their files."""
    modules = {"bootstrap": layout.PROJECT_DIR / "bootstrap.py"}
    for package in ("udfs", "codeintel"):
        for path in sorted((layout.PROJECT_DIR / package).glob("*.py")):
            if path.stem != "__init__":
                modules[f"{package}.{path.stem}"] = path
    return modules


def project_imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(project modules imported at module level, those imported inside functions or classes)."""
    tree = ast.parse(path.read_text())
    top_level = set(tree.body)
    module_level, nested = set(), set()
    for node in ast.walk(tree):
        names: set[str] = set()
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        found = names & set(modules)
        (module_level if node in top_level else nested).update(found)
    return module_level, nested


def test_the_import_graph_has_no_cycle_and_respects_the_layers() -> None:
    """udfs imports nothing above it, codeintel never imports bootstrap, and no import hides in a function."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        module_level, nested = project_imports(path, modules)
        assert not nested, f"{name} imports {sorted(nested)} inside a function (to dodge a cycle?)"
        graph[name] = module_level - {name}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle
    for name, imported in graph.items():
        if name.startswith("udfs."):
            assert not {m for m in imported if not m.startswith("udfs.")}, f"{name} imports {imported}"
        if name.startswith("codeintel."):
            assert "bootstrap" not in imported, f"{name} imports bootstrap"


def test_architecture_md_lists_every_module() -> None:
    text = (layout.PROJECT_DIR / "ARCHITECTURE.md").read_text()
    missing = [name for name in project_modules() if f"`{name}`" not in text]
    assert not missing, f"ARCHITECTURE.md lacks a line for {missing}"


def test_readme_settings_table_is_the_generated_one() -> None:
    """The README's table comes from udfs/settings.py (`python bootstrap.py settings`), so it cannot drift."""
    assert settings.markdown_table() in (layout.PROJECT_DIR / "README.md").read_text()

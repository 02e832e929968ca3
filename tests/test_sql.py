"""Runs the sqllogictest-style files under tests/sql/ (one pytest case per file).

Format, records separated by blank lines, lines starting with '#' ignored:
    require catalog synthetic       first record: connect to a copy of the synthetic catalog
                                    (default: a new, empty catalog)
    statement ok                    the SQL must succeed
    statement error                 the SQL must fail; after '----', a substring of the message
    query <types> [rowsort]         types: one letter per column, I integer, R real (4 decimals),
                                    T text, B boolean; after '----', tab-separated rows
    plan                            EXPLAIN of the SQL must contain each line after '----'
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pytest

import bootstrap
from tests.conftest import copy_catalog

SQL_TESTS = Path(__file__).parent / "sql"


@dataclasses.dataclass
class Record:
    header: list[str]
    sql: str
    expected: list[str]
    line: int


def parse_records(text: str) -> list[Record]:
    records: list[Record] = []
    for block_start, block in split_blocks(text):
        header = block[0].split()
        body = block[1:]
        if "----" in body:
            cut = body.index("----")
            sql, expected = body[:cut], body[cut + 1:]
        else:
            sql, expected = body, []
        records.append(Record(header, "\n".join(sql), expected, block_start))
    return records


def split_blocks(text: str) -> list[tuple[int, list[str]]]:
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            continue
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def render(value: object, column_type: str) -> str:
    if value is None:
        return "NULL"
    if column_type == "R":
        return f"{float(value):.4f}"
    if column_type == "B" or isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(render(item, "T") for item in value) + "]"
    return str(value)


def run_record(connection: duckdb.DuckDBPyConnection, record: Record, where: str) -> None:
    kind = record.header[0]
    if kind == "statement" and record.header[1] == "ok":
        connection.execute(record.sql)
    elif kind == "statement" and record.header[1] == "error":
        with pytest.raises(duckdb.Error) as raised:
            connection.execute(record.sql).fetchall()
        message = "\n".join(record.expected)
        assert message in str(raised.value), f"{where}: error {raised.value!s} lacks {message!r}"
    elif kind == "query":
        types = record.header[1]
        rows = connection.execute(record.sql).fetchall()
        actual = ["\t".join(render(v, t) for v, t in zip(row, types, strict=True)) for row in rows]
        expected = list(record.expected)
        if "rowsort" in record.header:
            actual, expected = sorted(actual), sorted(expected)
        assert actual == expected, f"{where}: query result differs"
    elif kind == "plan":
        plan = "\n".join(row[1] for row in connection.execute("EXPLAIN " + record.sql).fetchall())
        for fragment in record.expected:
            assert fragment in plan, f"{where}: plan lacks {fragment!r}:\n{plan}"
    else:
        raise ValueError(f"{where}: unknown record {' '.join(record.header)!r}")


@pytest.mark.parametrize(
    "test_file", sorted(SQL_TESTS.rglob("*.test")), ids=lambda p: str(p.relative_to(SQL_TESTS))
)
def test_sql_file(test_file: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    records = parse_records(test_file.read_text())
    catalog = tmp_path / "catalog"
    if records and records[0].header[:2] == ["require", "catalog"]:
        requirement = records.pop(0).header[2]
        if requirement != "synthetic":
            raise ValueError(f"{test_file}: unknown catalog {requirement!r}")
        copy_catalog(request.getfixturevalue("synthetic_catalog_template"), catalog)
    connection = bootstrap.connect(catalog)
    try:
        for record in records:
            run_record(connection, record, f"{test_file.name}:{record.line}")
    finally:
        connection.close()

"""Evaluation support: where run files go, what a run was made from, docstring query sets.

The evaluation itself is SQL (``sql/load_queries.sql``, ``sql/write_pool.sql``, the channel
macros in ``sql/macros/eval.sql`` and the ``v_eval_*`` / ``v_coverage_*`` views); these UDFs
do what SQL cannot:

* ``catalog_output_path(relative_path, overwrite) -> VARCHAR``: the absolute path of a file
  under the catalog, its directory created, so ``COPY ... TO`` can write there; with
  ``overwrite`` false an existing file is an error (pools and run records are never replaced).
* ``eval_catalog_versions() -> STRUCT(store_version, store_fingerprint, faiss_version,
  faiss_tuning)``: what a run or an index is made from: the current chunk-store version and
  fingerprint, the published FAISS version and the ``parameters`` of its tuning.json, read
  from the files without loading anything (NULL where there is none).
* ``python_docstrings(content) -> STRUCT(symbol, def_line, end_line, summary)[]``: every
  function and method of a Python source with a docstring, its qualified name, the lines of
  its ``def`` and of its end, and the first sentence of its docstring (the docstring-to-function
  query set of ``sql/export_docstring_queries.sql``).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from udfs.context import CatalogContext
from udfs.faiss_index import TUNING_FILE, current_version
from udfs.registry import UdfError, UdfSpec

# A sentence ends at . ! or ? followed by white space or the end of the paragraph.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_DOCSTRING_TYPE = pa.list_(
    pa.struct([("symbol", pa.string()), ("def_line", pa.int32()), ("end_line", pa.int32()), ("summary", pa.string())])
)


def catalog_output_path(catalog_dir: Path, relative_path: str, overwrite: bool) -> str:
    """``catalog_dir / relative_path`` with its parent created; refuses paths leaving the catalog."""
    relative = Path(relative_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UdfError(
            f"catalog_output_path: relative_path must be a path inside the catalog such as "
            f"'pools/<run_id>.parquet', got {relative_path!r}"
        )
    target = catalog_dir / relative
    if not overwrite and target.exists():
        raise UdfError(
            f"catalog_output_path: {target} exists and overwrite is false; runs never replace each "
            "other's files, so choose another run_id (or leave it unset for a fresh one)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(target)


def catalog_versions(catalog_dir: Path) -> dict[str, str | None]:
    store = catalog_dir / "store" / "CURRENT"
    store_version = Path(os.readlink(store)).name if store.is_symlink() else None
    fingerprint = _read_json(store / "store.json").get("fingerprint") if store_version else None
    faiss_version = current_version(catalog_dir)
    tuning = _read_json(catalog_dir / "index" / "CURRENT" / TUNING_FILE) if faiss_version else {}
    return {"store_version": store_version, "store_fingerprint": fingerprint,
            "faiss_version": faiss_version, "faiss_tuning": tuning.get("parameters") or None}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise UdfError(f"eval_catalog_versions: {path} is not valid JSON ({error}); fix or rewrite it") from error


def first_sentence(docstring: str) -> str:
    """The docstring's first sentence (of its first paragraph), white space collapsed."""
    paragraph = re.split(r"\n\s*\n", docstring.strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text


def docstring_functions(source: str) -> list[dict[str, Any]]:
    """Functions and methods of ``source`` that have a docstring; [] when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
        return []
    return [
        {"symbol": name, "def_line": node.lineno, "end_line": node.end_lineno or node.lineno,
         "summary": first_sentence(docstring)}
        for name, node in _qualified_functions(tree.body, "")
        if (docstring := ast.get_docstring(node)) and docstring.strip()
    ]


def _qualified_functions(
    body: Sequence[ast.stmt], prefix: str
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _qualified_functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _qualified_functions(node.body, f"{prefix}{node.name}.")


# --------------------------------------------------------------------------- UDFs


def _catalog_output_path_udf(context: CatalogContext, relative_path: str, overwrite: bool) -> str:
    return catalog_output_path(context.catalog_dir, relative_path, overwrite)


def _catalog_versions_udf(context: CatalogContext) -> dict[str, str | None]:
    return catalog_versions(context.catalog_dir)


def _python_docstrings_udf(context: CatalogContext, contents: pa.ChunkedArray) -> pa.Array:
    rows = [None if content is None else docstring_functions(content) for content in contents.to_pylist()]
    return pa.array(rows, _DOCSTRING_TYPE)


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="catalog_output_path",
        function=_catalog_output_path_udf,
        parameters=("VARCHAR", "BOOLEAN"),
        return_type="VARCHAR",
        kind="native",
        side_effects=True,
        doc="catalog_output_path(relative_path, overwrite): absolute path under the catalog, parent "
        "directory created; an existing file is an error unless overwrite.",
    ),
    UdfSpec(
        name="eval_catalog_versions",
        function=_catalog_versions_udf,
        parameters=(),
        return_type="STRUCT(store_version VARCHAR, store_fingerprint VARCHAR, faiss_version VARCHAR, "
        "faiss_tuning VARCHAR)",
        kind="native",
        side_effects=True,
        doc="Current store version and fingerprint, published FAISS version and its tuning.json "
        "parameters (NULL where there is none).",
    ),
    UdfSpec(
        name="python_docstrings",
        function=_python_docstrings_udf,
        parameters=("VARCHAR",),
        return_type="STRUCT(symbol VARCHAR, def_line INTEGER, end_line INTEGER, summary VARCHAR)[]",
        null_handling="special",
        doc="python_docstrings(content): functions and methods with a docstring: qualified name, "
        "def line, end line, first sentence of the docstring.",
    ),
)

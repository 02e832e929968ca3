"""Evaluation support: where run files go, what a run was made from, docstring query sets.

The evaluation itself is SQL (``sql/load_queries.sql``, ``sql/write_pool.sql``, the channel
macros ``sql/macros/channel_*.sql`` and the ``v_eval_*`` / ``v_coverage_*`` views); these UDFs
do what SQL cannot:

* ``catalog_output_path(relative_path, overwrite) -> VARCHAR``: the absolute path of a file
  under the catalog, its directory created, so ``COPY ... TO`` can write there; with
  ``overwrite`` false an existing file is an error (pools and run records are never replaced).
* ``eval_catalog_versions() -> STRUCT(store_version, store_fingerprint, faiss_version,
  faiss_tuning)``: what a run or an index is made from: the current chunk-store version and
  fingerprint, the published FAISS version and the ``parameters`` of its tuning.json, read
  from the files without loading anything (NULL where there is none).
* ``fusion_save(profile JSON) -> VARCHAR``: writes the hybrid channel's fusion profile, measured
  by ``sql/tune_fusion.sql``, as ``fusion.json`` in the published FAISS index version's
  directory (temp file + ``os.replace``), with ``created_at`` added; returns its path.
* ``fusion_profile() -> STRUCT(faiss_weight, bm25_weight, rrf_k, depth, source)``: what
  ``sql/write_pool.sql`` fuses a hybrid run with by default: the published index version's
  fusion.json (source ``'fusion.json'``), else channel_hybrid's defaults (source ``'default'``).
  A profile lives in one index version, like tuning.json: a rebuilt index has none until
  ``sql/tune_fusion.sql`` measures it again, because weights measured on one index mean
  nothing for another.
* ``python_docstrings(content) -> STRUCT(symbol, def_line, end_line, summary)[]``: every
  function and method of a Python source with a docstring, its qualified name, the lines of
  its ``def`` and of its end, and the first sentence of its docstring (the docstring-to-function
  query set of ``sql/export_docstring_queries.sql``).
"""

from __future__ import annotations

import ast
import datetime
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from udfs import store_schema
from udfs.context import CatalogContext
from udfs.faiss_tuning import read_profile
from udfs.faiss_versions import TUNING_FILE, current_version
from udfs.registry import UdfError, UdfSpec
from udfs.versioned_dir import write_json_atomic

# A sentence ends at . ! or ? followed by white space or the end of the paragraph.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
FUSION_FILE = "fusion.json"
FUSION_FORMAT = 1
#: channel_hybrid's own defaults (sql/macros/channel_hybrid.sql): what a hybrid run fuses with when the
#: published index version has no fusion.json.
FUSION_DEFAULTS: dict[str, Any] = {"faiss_weight": 1.0, "bm25_weight": 1.0, "rrf_k": 60.0, "depth": 100}
_FUSION_PROFILE_TYPE = (
    "STRUCT(faiss_weight DOUBLE, bm25_weight DOUBLE, rrf_k DOUBLE, depth INTEGER, source VARCHAR)"
)
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
    store = store_schema.current_link(catalog_dir)
    store_version = Path(os.readlink(store)).name if store.is_symlink() else None
    fingerprint = _read_json(store / store_schema.STORE_MANIFEST).get("fingerprint") if store_version else None
    faiss_version = current_version(catalog_dir)
    # Through faiss_tuning: a profile written by older code reports today's knob names.
    tuning = read_profile(catalog_dir / "index" / "CURRENT" / TUNING_FILE) if faiss_version else {}
    return {"store_version": store_version, "store_fingerprint": fingerprint,
            "faiss_version": faiss_version, "faiss_tuning": tuning.get("parameters") or None}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise UdfError(f"eval_catalog_versions: {path} is not valid JSON ({error}); fix or rewrite it") from error


def _fusion_fix(catalog_dir: Path) -> str:
    return (f"re-run sql/tune_fusion.sql (python bootstrap.py sql sql/tune_fusion.sql --catalog {catalog_dir}) "
            "or delete the file to fuse with the defaults")


def _fusion_problem(profile: Any) -> str | None:
    """What is wrong with a profile's fused parameters, or None; the same rules as channel_hybrid's."""
    if not isinstance(profile, dict):
        return f"must hold a JSON object, not {type(profile).__name__}"

    def number(name: str) -> bool:
        value = profile.get(name)
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    for name in ("faiss_weight", "bm25_weight", "rrf_k"):
        if not number(name):
            return f"needs {name}, a finite number of at least 0, got {profile.get(name)!r}"
    if profile["faiss_weight"] + profile["bm25_weight"] == 0:
        return "has faiss_weight and bm25_weight both 0"
    depth = profile.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth < 2**31:  # SQL INTEGER
        return f"needs depth, an integer of at least 1, got {depth!r}"
    measured_on = profile.get("measured_on", {})
    if not isinstance(measured_on, dict):
        return f"needs measured_on to be an object, got {measured_on!r}"
    return None


def save_fusion_profile(catalog_dir: Path, profile_text: str) -> str:
    """Write ``profile_text`` as fusion.json of the published index version; return its path.

    CURRENT is read once: the version checked against the profile's ``measured_on`` is the one
    whose directory receives the file, whatever a concurrent publish does meanwhile.
    """
    try:
        profile = json.loads(profile_text)
    except json.JSONDecodeError as error:
        raise UdfError(f"fusion_save: profile is not valid JSON ({error}); pass json_object(...)") from error
    problem = _fusion_problem(profile)
    if problem:
        raise UdfError(f"fusion_save: profile {problem}; sql/tune_fusion.sql builds a valid one")
    measured_version = profile.get("measured_on", {}).get("index_version")
    if not measured_version:
        raise UdfError("fusion_save: profile lacks measured_on.index_version (the FAISS version it was measured "
                       "on, eval_catalog_versions().faiss_version); sql/tune_fusion.sql records it")
    version = current_version(catalog_dir)
    if version is None:
        raise UdfError(f"fusion_save: {catalog_dir} has no published FAISS index; build one with "
                       f"`python bootstrap.py build --catalog {catalog_dir}`, then re-run sql/tune_fusion.sql")
    if version != measured_version:
        raise UdfError(f"fusion_save: profile was measured on index version {measured_version}, but "
                       f"index/CURRENT now points at {version} (published meanwhile); re-run sql/tune_fusion.sql "
                       "to measure the published index")
    path = catalog_dir / "index" / "versions" / version / FUSION_FILE
    if not path.parent.is_dir():
        raise UdfError(f"fusion_save: index/CURRENT points at {version}, which has no directory "
                       f"{path.parent}; publish a complete version (python bootstrap.py rollback or build)")
    created_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(path, {"format": FUSION_FORMAT, **profile, "created_at": created_at})
    return str(path)


def read_fusion_profile(catalog_dir: Path) -> dict[str, Any]:
    """The published index version's fusion.json as fusion_profile() returns it, else the defaults."""
    version = current_version(catalog_dir)
    path = catalog_dir / "index" / "versions" / version / FUSION_FILE if version else None
    if path is None or not path.is_file():
        return {**FUSION_DEFAULTS, "source": "default"}
    try:
        profile = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UdfError(f"fusion_profile: {path} is not valid JSON ({error}); {_fusion_fix(catalog_dir)}") from error
    problem = _fusion_problem(profile)
    if problem:
        raise UdfError(f"fusion_profile: {path} {problem}; {_fusion_fix(catalog_dir)}")
    measured_version = profile.get("measured_on", {}).get("index_version")
    # A file copied in from another version: its weights were measured on another index.
    if measured_version is not None and measured_version != version:
        raise UdfError(f"fusion_profile: {path} was measured on index version {measured_version}, not on "
                       f"{version}; {_fusion_fix(catalog_dir)}")
    return {"faiss_weight": float(profile["faiss_weight"]), "bm25_weight": float(profile["bm25_weight"]),
            "rrf_k": float(profile["rrf_k"]), "depth": profile["depth"], "source": FUSION_FILE}


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


def _fusion_save_udf(context: CatalogContext, profile: str) -> str:
    return save_fusion_profile(context.catalog_dir, profile)


def _fusion_profile_udf(context: CatalogContext) -> dict[str, Any]:
    return read_fusion_profile(context.catalog_dir)


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
        name="fusion_save",
        function=_fusion_save_udf,
        parameters=("JSON",),
        return_type="VARCHAR",
        kind="native",
        side_effects=True,
        doc="fusion_save(profile): write the hybrid fusion profile (sql/tune_fusion.sql) as fusion.json of the "
        "published index version, atomically; returns its path.",
    ),
    UdfSpec(
        name="fusion_profile",
        function=_fusion_profile_udf,
        parameters=(),
        return_type=_FUSION_PROFILE_TYPE,
        kind="native",
        # It reads a file that tune_fusion.sql rewrites: never folded into a constant.
        side_effects=True,
        doc="The hybrid channel's fusion parameters: the published index version's fusion.json, else "
        "channel_hybrid's defaults (source 'default').",
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

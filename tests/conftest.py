"""Shared fixtures: one seeded synthetic chunk store, and catalogs made from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bootstrap

SYNTHETIC_SEED = 20261125


def synthetic_chunks(n: int = 2000, dim: int = 384, clusters: int = 16, seed: int = SYNTHETIC_SEED) -> pa.Table:
    """A chunk-store table with clustered unit-norm embeddings and believable code metadata.

    Chunks are spread over ``pkg_<a..d>/mod_<i>.py`` files, tile each file in order, and
    carry symbols ``fn_<id>``; embeddings are cluster centres plus noise, normalised.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.unique(rng.integers(1, 2**62, size=2 * n, dtype=np.int64))[:n]
    rng.shuffle(ids)
    files_per_package = max(1, n // 200)
    uris, starts, ends, start_lines, end_lines, contents, symbols = [], [], [], [], [], [], []
    cursor: dict[str, tuple[int, int]] = {}
    for row in range(n):
        uri = f"pkg_{'abcd'[row % 4]}/mod_{(row // 4) % files_per_package}.py"
        content = f"def fn_{row}(value):\n    return value * {row}\n"
        byte, line = cursor.get(uri, (0, 1))
        uris.append(uri)
        starts.append(byte)
        ends.append(byte + len(content))
        start_lines.append(line)
        end_lines.append(line + 1)
        contents.append(content)
        symbols.append([f"fn_{row}"])
        cursor[uri] = (byte + len(content), line + 2)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "uri": uris,
        "start_byte": pa.array(starts, pa.int64()),
        "end_byte": pa.array(ends, pa.int64()),
        "start_line": pa.array(start_lines, pa.int32()),
        "end_line": pa.array(end_lines, pa.int32()),
        "language": ["python"] * n,
        "kind": ["function_definition"] * n,
        "symbols": pa.array(symbols, pa.list_(pa.string())),
        "content": contents,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
    })


@pytest.fixture(scope="session")
def synthetic_table() -> pa.Table:
    return synthetic_chunks()


@pytest.fixture(scope="session")
def synthetic_catalog_template(tmp_path_factory: pytest.TempPathFactory, synthetic_table: pa.Table) -> Path:
    """A catalog holding the synthetic store, built once per session; copy it before writing."""
    root = tmp_path_factory.mktemp("synthetic")
    source = root / "synthetic_chunks.parquet"
    pq.write_table(synthetic_table, source)
    catalog = root / "catalog"
    catalog.mkdir()
    # The synthetic vectors are 384-wide, as MiniLM's: tests that embed query text use it.
    (catalog / "settings.json").write_text(json.dumps({"embed_model": "minilm"}))
    bootstrap.import_chunks(source, catalog)
    return catalog


@pytest.fixture
def synthetic_catalog(synthetic_catalog_template: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic catalog, free to modify."""
    return copy_catalog(synthetic_catalog_template, tmp_path / "catalog")


def copy_catalog(source: Path, destination: Path) -> Path:
    # Relative symlinks (store/CURRENT) stay valid in the copy; views are re-pointed on connect.
    shutil.copytree(source, destination, symlinks=True)
    return destination


#: Queries of the evaluation catalog: query i asks for chunk i of the synthetic store.
EVAL_QUERY_COUNT = 40


@pytest.fixture(scope="session")
def eval_catalog_template(synthetic_catalog_template: Path, synthetic_table: pa.Table,
                          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic catalog with a flat FAISS index, the BM25 index and a judged query set.

    Query ``q<i>`` has text ``fn_<i> value`` and an embedding near chunk i's; chunk i is
    judged grade 2 and chunk i + 1 grade 1.  Built once per session; copy it before writing.
    """
    from tests.eval_support import perturbed
    from udfs import faiss_index

    root = tmp_path_factory.mktemp("eval")
    catalog = copy_catalog(synthetic_catalog_template, root / "catalog")
    faiss_index.build_index(catalog, "flat")
    ids = synthetic_table.column("id").to_pylist()
    embeddings = synthetic_table.column("embedding").to_pylist()
    rng = np.random.default_rng(SYNTHETIC_SEED)
    queries = [{"query_id": f"q{i}", "text": f"fn_{i} value", "embedding": perturbed(embeddings[i], rng, 0.05)}
               for i in range(EVAL_QUERY_COUNT)]
    qrels = [{"query_id": f"q{i}", "chunk_id": ids[i + offset], "grade": 2 - offset}
             for i in range(EVAL_QUERY_COUNT) for offset in (0, 1)]
    index_and_load_queries(catalog, root / "query_set", queries, qrels)
    return catalog


def index_and_load_queries(catalog: Path, folder: Path, queries: list[dict], qrels: list[dict]) -> None:
    """Build the BM25 index of ``catalog`` and load a judged query set (files written under ``folder``)."""
    from tests.eval_support import load_query_set

    connection = bootstrap.connect(catalog)
    try:
        bootstrap.build_bm25_index(connection)
        load_query_set(connection, folder, queries, qrels)
    finally:
        connection.close()


@pytest.fixture
def eval_catalog(eval_catalog_template: Path, tmp_path: Path) -> Path:
    """A private copy of the evaluation catalog, free to modify."""
    return copy_catalog(eval_catalog_template, tmp_path / "catalog")

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
from codeintel import demo

# The generator lives in codeintel.synthetic (the benchmarks draw their sets from it too);
# tests import it from here as well.
from codeintel.synthetic import SYNTHETIC_SEED, synthetic_chunks  # noqa: F401


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
    from udfs import faiss_build

    root = tmp_path_factory.mktemp("eval")
    catalog = copy_catalog(synthetic_catalog_template, root / "catalog")
    faiss_build.build_index(catalog, "flat")
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
        demo.build_bm25_index(connection)
        load_query_set(connection, folder, queries, qrels)
    finally:
        connection.close()


@pytest.fixture
def eval_catalog(eval_catalog_template: Path, tmp_path: Path) -> Path:
    """A private copy of the evaluation catalog, free to modify."""
    return copy_catalog(eval_catalog_template, tmp_path / "catalog")

"""The benchmarks' data: synthetic vector sets, the demo store's real embeddings, stdlib code.

Synthetic sets come from :mod:`codeintel.synthetic` (the tests' generator) and are cached
under ``<results>/data/``, each imported once as its own catalog under ``<results>/catalogs/``;
a later run with the same size, clusters and seed reuses both.  Real sets: the demo store
(``demo_catalog/``, made by ``bootstrap.py demo``) and pieces of this Python's standard library.
"""

from __future__ import annotations

import ast
import gc
import json
import shutil
import sysconfig
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import adapters
from bench.common import DEMO_CATALOG, DIM, RESULTS, K, log
from codeintel import synthetic
from codeintel.corpus import blank_docstrings
from udfs import ignore

#: Held-out query vectors drawn with every synthetic set (the rows after the store's).
QUERY_POOL = 10_000


def exact_topk(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k ids with numpy (blocks keep the score matrix near 256 MB), and
    each query's k-th best score."""
    query_block = 256
    vector_block = max(1, (256 << 20) // (4 * query_block))
    result = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float32)
    for qs in range(0, len(queries), query_block):
        q = np.ascontiguousarray(queries[qs : qs + query_block], dtype=np.float32)
        best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(q), 0), dtype=np.int64)
        for vs in range(0, len(vectors), vector_block):
            scores = q @ np.asarray(vectors[vs : vs + vector_block], dtype=np.float32).T
            kk = min(k, scores.shape[1])
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
            best_rows = np.concatenate([best_rows, top + vs], axis=1)
            keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
        result[qs : qs + len(q)] = ids[best_rows]
        kth[qs : qs + len(q)] = best_scores[:, -1]
    return result, kth


class Dataset:
    """A store (ids, vectors), its catalog, query vectors and their exact top-k."""

    def __init__(self, name: str, description: str, directory: Path, catalog: Path, real: bool) -> None:
        self.name = name
        self.description = description
        self.directory = directory
        self.catalog = catalog
        self.real = real
        self.ids: np.ndarray = np.load(directory / "ids.npy")
        self.vectors: np.ndarray = np.load(directory / "vectors.npy", mmap_mode="r")
        self.query_pool: np.ndarray = np.load(directory / "queries.npy")

    @property
    def n(self) -> int:
        return len(self.ids)

    def queries(self, count: int) -> np.ndarray:
        return np.ascontiguousarray(self.query_pool[:count], dtype=np.float32)

    def truth(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k ids of the first ``count`` pool queries and each one's k-th best score
        (cached in truth.npy and truth_kth.npy)."""
        count = min(count, len(self.query_pool))
        paths = self.directory / "truth.npy", self.directory / "truth_kth.npy"
        if all(p.exists() for p in paths) and len(np.load(paths[0], mmap_mode="r")) >= count:
            return np.load(paths[0])[:count], np.load(paths[1])[:count]
        log(f"{self.name}: exact numpy top-{K} for {count} queries over {self.n} vectors")
        started = time.perf_counter()
        ids, kth = exact_topk(self.queries(count), self.vectors, self.ids)
        log(f"  {count / (time.perf_counter() - started):.0f} queries/s")
        np.save(paths[0], ids)
        np.save(paths[1], kth)
        return ids, kth

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_order"):
            self._order = np.argsort(self.ids)
            self._sorted = self.ids[self._order]
        positions = np.minimum(np.searchsorted(self._sorted, chunk_ids), len(self._sorted) - 1)
        return self._order[positions]

    def recall(self, labels: np.ndarray) -> float:
        """Recall@k of ``labels`` (ids for the first len(labels) pool queries, -1 padded).

        A returned id counts when it is in the exact top-k, or when its exact score ties the
        k-th best (duplicate chunks in the demo store have identical embeddings, so which of
        them makes the top-k is arbitrary)."""
        nq = len(labels)
        truth, kth = self.truth(nq)
        exact = (labels[:, :, None] == truth[:, None, :]).any(axis=2)
        valid = labels >= 0
        rows = self.rows_of(np.where(valid, labels, self.ids[0]))
        found = self.ids[rows] == labels
        candidates = np.asarray(self.vectors[np.sort(np.unique(rows.ravel()))])
        lookup = np.searchsorted(np.sort(np.unique(rows.ravel())), rows)
        scores = np.einsum("nkd,nd->nk", candidates[lookup], self.queries(nq))
        tied = valid & found & ~exact & (scores >= kth[:, None] - 1e-5)
        return float(np.minimum((exact | tied).sum(axis=1), K).mean() / K)

    def store_table(self) -> pa.Table:
        return pa.table(
            {
                "id": pa.array(self.ids, pa.int64()),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(self.vectors).ravel(), pa.float32()), DIM),
            }
        )


def ensure_catalog(source_parquet: Path, catalog: Path) -> None:
    """Import ``source_parquet`` as the store of ``catalog`` unless it already has one."""
    if adapters.current_store(catalog) is None:
        log(f"importing {source_parquet} into {catalog}")
        adapters.import_chunks(source_parquet, catalog)


def write_arrays(directory: Path, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> None:
    np.save(directory / "ids.npy", ids)
    np.save(directory / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(directory / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))


def demo_embeddings() -> np.ndarray:
    """The demo store's embeddings, (rows, d) float32; exits with the command that makes the store."""
    store = adapters.current_store(DEMO_CATALOG)
    if store is None:
        raise SystemExit("the real-spectrum set needs the demo store: run `.venv/bin/python bootstrap.py demo` first")
    return np.stack(
        adapters.read_live_chunks(store, ["embedding"]).column(0).to_numpy(zero_copy_only=False)
    ).astype(np.float32)


def real_spectrum_vectors(count: int, clusters: int, seed: int) -> tuple[np.ndarray, str]:
    """``count`` unit vectors in ``clusters`` clusters whose centres and offsets are drawn with the
    mean and covariance of real embeddings (the demo store's MiniLM vectors), and a description.

    Isotropic noise (``synthetic_chunks``) is product quantization's worst case; real embeddings
    concentrate in a few dozen directions, and this set does too."""
    drawn = synthetic.spectrum_vectors(demo_embeddings(), count, clusters, seed)
    return drawn.vectors, (
        f"centres and offsets drawn with the mean and covariance of the demo store's {drawn.reference_rows} "
        f"MiniLM embeddings (participation ratio {drawn.participation:.0f} of {DIM} dimensions)"
    )


def synthetic_dataset(n: int, clusters: int, seed: int, noise: str = "isotropic", results: Path = RESULTS) -> Dataset:
    """``synthetic_chunks(n + QUERY_POOL)``: the first n rows are the store, the rest the queries;
    with ``noise='real-spectrum'`` the embeddings come from :func:`real_spectrum_vectors`."""
    name = f"synthetic_{n}" if noise == "isotropic" else f"spectrum_{n}"
    directory = results / "data" / f"{name}_d{DIM}_c{clusters}_s{seed}"
    catalog = results / "catalogs" / directory.name
    source = directory / "chunks.parquet"
    noise_note = directory / "noise.txt"
    if not (directory / "queries.npy").exists():
        log(f"generating {n} + {QUERY_POOL} synthetic vectors ({clusters} clusters, {noise} noise, seed {seed})")
        directory.mkdir(parents=True, exist_ok=True)
        table = synthetic.synthetic_chunks(n + QUERY_POOL, DIM, clusters, seed)
        noise_note.write_text("isotropic noise")
        if noise == "real-spectrum":
            vectors, note = real_spectrum_vectors(n + QUERY_POOL, clusters, seed)
            noise_note.write_text(note)
            table = synthetic.with_embeddings(table, vectors)
            del vectors
        store = table.slice(0, n)
        pq.write_table(store, source)
        embedding = synthetic.embedding_matrix(table)
        write_arrays(directory, store.column("id").to_numpy(), embedding[:n], embedding[n:])
        del table, store, embedding
        gc.collect()
    ensure_catalog(source, catalog)
    description = (
        f"synthetic: {n:,} clustered unit-norm vectors, d={DIM}, {clusters} clusters "
        f"(codeintel/synthetic.py synthetic_chunks, seed {seed}"
        + f"; {noise_note.read_text() if noise_note.exists() else 'isotropic noise'}"
        + "); queries: held-out vectors of the same generator"
    )
    return Dataset(name, description, directory, catalog, real=False)


def demo_dataset(results: Path = RESULTS) -> Dataset | None:
    """The demo store (real MiniLM embeddings of stdlib code); queries are embedded symbol names."""
    store = adapters.current_store(DEMO_CATALOG)
    if store is None:
        log("no demo store: run `.venv/bin/python bootstrap.py demo` first; skipping the demo dataset")
        return None
    directory = results / "data" / "demo"
    catalog = results / "catalogs" / "demo"
    fingerprint = adapters.read_store_manifest(store)["fingerprint"]
    marker = directory / "fingerprint.txt"
    if not marker.exists() or marker.read_text() != fingerprint:
        log(f"copying the demo store {store} and embedding query texts")
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(catalog, ignore_errors=True)
        directory.mkdir(parents=True)
        pq.write_table(adapters.read_live_chunks(store, adapters.CHUNK_COLUMNS), directory / "chunks.parquet")
        ensure_catalog(directory / "chunks.parquet", catalog)
        connection = adapters.connect(catalog)
        try:
            table = connection.execute(
                "SELECT id, embedding FROM read_parquet(?) ORDER BY id", [str(directory / "chunks.parquet")]
            ).to_arrow_table()
            # Query texts a person might type: symbol names with underscores as spaces.
            texts = connection.execute(
                "SELECT DISTINCT trim(replace(s, '_', ' ')) AS text "
                "FROM (SELECT unnest(symbols) AS s FROM read_parquet(?)) WHERE length(trim(replace(s, '_', ' '))) > 2 "
                "ORDER BY hash(text) LIMIT ?",
                [str(directory / "chunks.parquet"), QUERY_POOL],
            ).to_arrow_table()
            connection.register("texts_arrow", texts)
            queries = connection.execute("SELECT embed(text) AS e FROM texts_arrow").to_arrow_table()
        finally:
            connection.close()
        vectors = synthetic.embedding_matrix(table)
        q = queries.column("e").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
        write_arrays(directory, table.column("id").to_numpy(), vectors, q)
        (directory / "query_texts.json").write_text(json.dumps(texts.column("text").to_pylist()))
        marker.write_text(fingerprint)
    ensure_catalog(directory / "chunks.parquet", catalog)
    dataset = Dataset("demo", "", directory, catalog, real=True)
    dataset.description = (
        f"demo store: {dataset.n} real chunks of Python standard-library packages (MiniLM-L6 int8, d={DIM}); "
        f"queries: {len(dataset.query_pool)} embedded symbol names (tiny: every index is exact Flat)"
    )
    return dataset


def synthetic_catalog_with_fresh_queries(directory: Path, n: int, fresh: int, clusters: int,
                                         seed: int) -> tuple[Path, np.ndarray]:
    """``directory/catalog`` holding the first n rows of ``synthetic_chunks(n + fresh)`` (made
    once) and the other ``fresh`` rows' vectors: queries from the same clusters the store never saw."""
    fresh_path = directory / "fresh_queries.npy"
    catalog = directory / "catalog"
    if not fresh_path.exists():
        log(f"generating {n} + {fresh} synthetic vectors ({clusters} clusters, seed {seed})")
        directory.mkdir(parents=True, exist_ok=True)
        table = synthetic.synthetic_chunks(n + fresh, DIM, clusters, seed)
        pq.write_table(table.slice(0, n), directory / "chunks.parquet")
        np.save(fresh_path, np.ascontiguousarray(synthetic.embedding_matrix(table)[n:], dtype=np.float32))
        del table
        gc.collect()
    if adapters.current_store(catalog) is None:
        log(f"importing the store into {catalog}")
        adapters.import_chunks(directory / "chunks.parquet", catalog)
    return catalog, np.load(fresh_path)


# --------------------------------------------------------------------------- standard-library code


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stripped_copy(stdlib: Path, destination: Path, packages: tuple[str, ...] = adapters.DEMO_PACKAGES) -> Path:
    """``packages`` (by default the demo's) copied to ``destination`` with their docstrings blanked out."""
    shutil.rmtree(destination, ignore_errors=True)
    for package in packages:
        shutil.copytree(stdlib / package, destination / package,
                        ignore=shutil.ignore_patterns(*(pattern.rstrip("/") for pattern in ignore.DEFAULT_EXCLUDE)))
    for path in destination.rglob("*.py"):
        stripped = blank_docstrings(path.read_text(encoding="utf-8"))
        ast.parse(stripped)  # still valid Python
        path.write_text(stripped, encoding="utf-8")
    return destination


def stdlib_code_pieces(piece_chars: int) -> list[str]:
    """Every stdlib .py file cut at line ends into pieces of about ``piece_chars``."""
    pieces = []
    for path in sorted(stdlib_root().rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few test fixtures are deliberately undecodable
        piece: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            piece.append(line)
            size += len(line)
            if size >= piece_chars:
                pieces.append("".join(piece))
                piece, size = [], 0
        if piece and not "".join(piece).isspace():
            pieces.append("".join(piece))
    return pieces

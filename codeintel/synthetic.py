"""Seeded synthetic chunk stores and embedding-like vectors, shared by the tests and the benchmarks.

One generator serves both, so a benchmark's "synthetic set" is the tests' store at another
size, and a change to the store's columns (``udfs/store_schema.py``) reaches both at once.
Everything here is a pure function of its arguments and seed: the benchmarks cache what it
returns on disk and rely on the same call giving the same rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from udfs.store_schema import EMBEDDING_COLUMN, chunk_schema

SYNTHETIC_SEED = 20261125


@dataclasses.dataclass(frozen=True)
class ClusterShape:
    """How clustered vectors are drawn: cluster centres, then each vector near one of them."""

    clusters: int = 16
    #: Standard deviation of the isotropic offset from the centre, per dimension.
    noise: float = 0.35


def clustered_unit_vectors(rng: np.random.Generator, n: int, dim: int,
                           shape: ClusterShape = ClusterShape()) -> np.ndarray:
    """(n, dim) float32 unit vectors: Gaussian cluster centres plus isotropic noise, normalised.

    Draws from ``rng`` in a fixed order (centres, labels, noise), so a caller that goes on
    drawing from it (``synthetic_chunks`` draws ids next) stays reproducible.
    """
    centres = rng.standard_normal((shape.clusters, dim)).astype(np.float32)
    labels = rng.integers(0, shape.clusters, n)
    vectors = centres[labels] + shape.noise * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def synthetic_chunks(n: int = 2000, dim: int = 384, clusters: int = 16, seed: int = SYNTHETIC_SEED) -> pa.Table:
    """A chunk-store table (``chunk_schema(dim)``) with clustered unit-norm embeddings and believable code metadata.

    Chunks are spread over ``pkg_<a..d>/mod_<i>.py`` files, tile each file in order, and
    carry symbols ``fn_<id>``; embeddings are cluster centres plus noise, normalised.
    """
    rng = np.random.default_rng(seed)
    vectors = clustered_unit_vectors(rng, n, dim, ClusterShape(clusters=clusters))
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
    return pa.Table.from_pydict({
        "id": ids,
        "uri": uris,
        "start_byte": starts,
        "end_byte": ends,
        "start_line": start_lines,
        "end_line": end_lines,
        "language": ["python"] * n,
        "kind": ["function_definition"] * n,
        "symbols": symbols,
        "content": contents,
        EMBEDDING_COLUMN: embedding_array(vectors),
    }, schema=chunk_schema(dim))


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) vectors as the store's embedding column type, FixedSizeList(float32, d)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The embedding column of a chunk table as one (n, d) float32 array."""
    column = table.column(EMBEDDING_COLUMN).combine_chunks()
    # Stores read back through DuckDB may carry a variable-length list: its width is the rows'.
    width = column.type.list_size if pa.types.is_fixed_size_list(column.type) else -1
    return column.flatten().to_numpy().reshape(len(column), width)


def with_embeddings(table: pa.Table, vectors: np.ndarray) -> pa.Table:
    """``table`` with its embeddings replaced by ``vectors`` (same row count and width)."""
    index = table.schema.get_field_index(EMBEDDING_COLUMN)
    column = embedding_array(vectors).cast(table.schema.field(index).type)
    return table.set_column(index, EMBEDDING_COLUMN, column)


@dataclasses.dataclass(frozen=True)
class SpectrumVectors:
    """Vectors drawn with the spectrum of real embeddings, and how concentrated that spectrum is."""

    vectors: np.ndarray
    #: Participation ratio of the reference covariance: about how many directions carry its variance.
    participation: float
    reference_rows: int


def spectrum_vectors(reference: np.ndarray, count: int, clusters: int, seed: int,
                     block_rows: int = 100_000) -> SpectrumVectors:
    """``count`` unit vectors in ``clusters`` clusters whose centres and offsets are drawn with the
    mean and covariance of ``reference`` (real embeddings, (rows, d)).

    Isotropic noise (``synthetic_chunks``) is product quantization's worst case; real embeddings
    concentrate in a few dozen directions, and vectors drawn from their covariance do too.
    """
    reference = np.asarray(reference, dtype=np.float32)
    dim = reference.shape[1]
    eigenvalues, directions = np.linalg.eigh(np.cov((reference - reference.mean(axis=0)).T))
    eigenvalues = np.clip(eigenvalues, 0, None)
    factor = (directions * np.sqrt(eigenvalues)).astype(np.float32)  # factor @ factor.T = covariance
    rng = np.random.default_rng(seed)
    centres = reference.mean(axis=0) + 0.8 * rng.standard_normal((clusters, dim), dtype=np.float32) @ factor.T
    vectors = np.empty((count, dim), np.float32)
    # Blocks bound the memory of the (rows, d) noise draw at a million vectors.
    for start in range(0, count, block_rows):
        rows = min(block_rows, count - start)
        block = centres[rng.integers(0, clusters, rows)]
        block += 0.6 * rng.standard_normal((rows, dim), dtype=np.float32) @ factor.T
        vectors[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    participation = float(eigenvalues.sum() ** 2 / (eigenvalues**2).sum())
    return SpectrumVectors(vectors, participation, len(reference))

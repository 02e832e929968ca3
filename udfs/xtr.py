"""The XTR oracle lens: late-interaction (MaxSim) and exact Flat rankings over a dev split of chunks.

A diagnostic for the evaluation: of what a token-level scorer over the same encoder ranks first,
how much does each retrieval channel return, side by side with the same question asked of exact
search on the sentence embeddings.  Neither oracle knows what is relevant (the qrels do), so
agreement with them is not ground truth.

Surface:

* SQL: ``sql/build_xtr.sql`` (``python bootstrap.py xtr --catalog DIR``) chooses the dev split
  (its header says which chunks and why) and calls ``xtr_build_lens(dev_split, queries, k,
  parameters)``, the UDF here, which writes the files below and returns a summary STRUCT; the views
  ``v_xtr_recall_per_query`` and ``v_xtr_recall_per_run`` and ``sql/report_xtr.sql`` read them.
* Python: :func:`build_lens` with a :class:`TokenEncoder`, and the two numpy kernels
  :func:`late_interaction_scores` and :func:`ranked_top_k`.

Files under ``<catalog>/xtr/`` (zstd Parquet, every one replaced on each build):

* ``dev_split.parquet``: chunk_id, pooled, judged, sampled (why the chunk is in the split), token_count
* ``token_vectors.parquet``: chunk_id, token_position, token, vector FixedSizeList(float16, d): the
  encoder's last hidden state per token, L2-normalised, ``[CLS]`` and ``[SEP]`` kept, padding dropped
  (``SentenceEmbedder.embed_tokens``), rows grouped by chunk in encoding order
* ``query_token_vectors.parquet``: the same for the lens queries, with query_id for chunk_id
* ``oracle.parquet``: query_id, rank, chunk_id, score: each query's top k of the dev split by late
  interaction, score = sum over the query's tokens of the largest inner product with a chunk token
* ``flat_oracle.parquet``: the same columns by the inner product of the sentence embeddings (the
  store's and the queries table's; cosine for the normalised vectors the embedder writes, and the
  default FAISS metric), brute force over the same dev split
* ``lens.parquet``: one row: when, from which store and embedder, k, the build's parameters, the
  sizes, and the note that this is a diagnostic

The late-interaction scores are computed from the float16 vectors the files hold (upcast to
float32), so anyone can recompute a score from the files; float16 keeps 11 significant bits, an
error below 2.5e-4 per component of a unit vector.  DuckDB 1.5.5 reads float16 Parquet columns as
FLOAT, so stock clients need nothing else.  Ties in either ranking go to the smaller chunk id.

A build writes every file to ``xtr/.tmp-<id>/`` first and renames them into ``xtr/`` only when all
are complete (``os.replace``, ``lens.parquet`` last): a failed build leaves the previous lens as it
was, and a reader sees each file whole, old or new.

Cost: one encoder pass over the dev split's chunks (the embedding pass of ingest, restricted to
them) and one matmul per mini-batch of chunks against all query tokens; memory holds the query
tokens, one mini-batch and the [queries x dev chunks] score matrix, never the split's token vectors.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tokenizers

from udfs.context import CatalogContext
from udfs.embedding import (
    SentenceEmbedder,
    contextual_choice,
    embedder_identity,
    get_contextual_embedder,
    load_tokenizer,
)
from udfs.evaluation import catalog_versions
from udfs.registry import UdfError, UdfSpec, combined

logger = logging.getLogger("codeintel.xtr")

LENS_DIR = "xtr"
DEV_SPLIT_FILE = "dev_split.parquet"
TOKEN_VECTORS_FILE = "token_vectors.parquet"
QUERY_TOKEN_VECTORS_FILE = "query_token_vectors.parquet"
ORACLE_FILE = "oracle.parquet"
FLAT_ORACLE_FILE = "flat_oracle.parquet"
LENS_FILE = "lens.parquet"
DEFAULT_K = 100
NOTE = ("diagnostic: agreement with the XTR (late-interaction) and exact Flat oracles over the dev split, "
        "not ground truth; relevance is in the qrels")

#: Floats in one query-tokens x chunk-tokens similarity block (64 MiB): a mini-batch of 32 chunks
#: has up to 8,192 tokens, so about 2,000 query tokens (100 queries) are scored per matmul.
SIMILARITY_BLOCK_FLOATS = 16 * 1024 * 1024
#: Queries ranked per argsort: bounds the int64 index copy of the score rows.
SORT_BLOCK_ROWS = 256
PROGRESS_INTERVAL_S = 5.0

ORACLE_SCHEMA = pa.schema([("query_id", pa.string()), ("rank", pa.int32()), ("chunk_id", pa.int64()),
                           ("score", pa.float64())])
DEV_SPLIT_SCHEMA = pa.schema([("chunk_id", pa.int64()), ("pooled", pa.bool_()), ("judged", pa.bool_()),
                              ("sampled", pa.bool_()), ("token_count", pa.int32())])
LENS_SCHEMA = pa.schema([
    ("built_at", pa.timestamp("us")), ("store_version", pa.string()), ("store_fingerprint", pa.string()),
    ("embedder", pa.string()), ("k", pa.int32()), ("parameters", pa.string()), ("dev_chunks", pa.int64()),
    ("pooled_chunks", pa.int64()), ("judged_chunks", pa.int64()), ("sampled_chunks", pa.int64()),
    ("dev_tokens", pa.int64()), ("queries", pa.int64()), ("xtr_queries", pa.int64()), ("note", pa.string()),
])


def token_vectors_schema(key: str, key_type: pa.DataType, dimension: int) -> pa.Schema:
    """``key, token_position, token, vector FixedSizeList(float16, dimension)``."""
    return pa.schema([(key, key_type), ("token_position", pa.int32()), ("token", pa.string()),
                      ("vector", pa.list_(pa.float16(), dimension))])


# --------------------------------------------------------------------------- scoring kernels


def late_interaction_scores(query_vectors: np.ndarray, query_starts: np.ndarray,
                            doc_vectors: np.ndarray, doc_starts: np.ndarray) -> np.ndarray:
    """MaxSim of every query against every document, float32 ``[queries, documents]``.

    Token vectors of all queries (all documents) are stacked row-wise; ``*_starts`` hold the
    first row of each text, ascending, and every text has at least one row.  Score = sum over
    the query's tokens of the largest inner product with one of the document's tokens.  One
    matmul per block of query-token rows (at most :data:`SIMILARITY_BLOCK_FLOATS` similarities),
    then ``maximum.reduceat`` over each document's columns and ``add.reduceat`` over each
    query's rows.
    """
    doc_token_count = doc_vectors.shape[0]
    token_best = np.empty((query_vectors.shape[0], len(doc_starts)), dtype=np.float32)
    rows_per_block = max(1, SIMILARITY_BLOCK_FLOATS // max(doc_token_count, 1))
    for start in range(0, query_vectors.shape[0], rows_per_block):
        similarities = query_vectors[start:start + rows_per_block] @ doc_vectors.T
        token_best[start:start + rows_per_block] = np.maximum.reduceat(similarities, doc_starts, axis=1)
    return np.add.reduceat(token_best, query_starts, axis=0)


def ranked_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest scores, best first, ``[rows, min(k, columns)]``.

    The sort is stable, so equal scores keep column order: columns in ascending chunk id break
    ties towards the smaller id, whatever the platform.
    """
    depth = min(k, scores.shape[1])
    order = np.empty((scores.shape[0], depth), dtype=np.int64)
    for start in range(0, scores.shape[0], SORT_BLOCK_ROWS):
        block = scores[start:start + SORT_BLOCK_ROWS]
        order[start:start + len(block)] = np.argsort(-block, axis=1, kind="stable")[:, :depth]
    return order


# --------------------------------------------------------------------------- encoding


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """Token vectors of some texts: ``rows`` index the encoded sequence, vectors are stacked per text."""

    rows: np.ndarray
    tokens: list[list[str]]
    vectors: np.ndarray  # float16 [tokens of all rows, d]
    starts: np.ndarray  # first vector row of each text

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(tokens) for tokens in self.tokens], dtype=np.int64)


class TokenEncoder:
    """Per-token vectors from the catalog's sentence model, with the token strings they belong to.

    The tokenizer is the embedder's own configuration (tokenizer.json, truncation to
    ``embed_max_tokens``), so the k-th token string labels the k-th vector ``embed_tokens`` returns.
    """

    def __init__(self, embedder: SentenceEmbedder, tokenizer: tokenizers.Tokenizer) -> None:
        self.embedder = embedder
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: Sequence[str]) -> Iterator[EncodedBatch]:
        """Mini-batches of texts of similar token count (little padding), vectors rounded to float16."""
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(encoding.ids) for encoding in encodings], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.embedder.batch_size):
            rows = order[start:start + self.embedder.batch_size]
            vectors = self.embedder.embed_tokens([texts[row] for row in rows])
            counts = np.array([matrix.shape[0] for matrix in vectors], dtype=np.int64)
            if not np.array_equal(counts, lengths[rows]):
                raise UdfError(
                    "xtr_build_lens: the embedder returned a different token count than its tokenizer "
                    f"({self.embedder.tokenizer_path}) gives; set embed_tokenizer to the model's own tokenizer.json"
                )
            yield EncodedBatch(
                rows=rows,
                tokens=[encodings[row].tokens for row in rows],
                vectors=np.concatenate(vectors).astype(np.float16),
                starts=np.concatenate(([0], np.cumsum(counts)[:-1])),
            )


def token_encoder(context: CatalogContext) -> TokenEncoder:
    """The connection's token encoder, on its contextual (ONNX) model, built on first use and cached.

    A static ``embed_model`` has no per-token context, so the lens then uses the packaged MiniLM.
    """

    def build() -> TokenEncoder:
        choice = contextual_choice(context)
        return TokenEncoder(get_contextual_embedder(context), load_tokenizer(choice.tokenizer, choice.max_tokens))

    return context.resource("xtr.token_encoder", build)


def token_table(schema: pa.Schema, keys: Sequence[Any], batch: EncodedBatch) -> pa.Table:
    """One row per token of the batch's texts; ``keys`` are the texts' chunk or query ids, in batch order."""
    counts = batch.counts
    return pa.table({
        schema.names[0]: pa.array(np.repeat(np.asarray(keys), counts), schema.field(0).type),
        "token_position": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
        "token": pa.array([token for tokens in batch.tokens for token in tokens], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(batch.vectors.ravel()), batch.vectors.shape[1]),
    }, schema=schema)


# --------------------------------------------------------------------------- the lens


@dataclasses.dataclass(frozen=True)
class DevSplit:
    """The chunks both oracles rank, in ascending chunk id, with why each is there."""

    chunk_ids: np.ndarray  # int64, ascending, unique
    contents: list[str]
    embeddings: np.ndarray  # float32 [chunks, d]
    pooled: np.ndarray
    judged: np.ndarray
    sampled: np.ndarray


@dataclasses.dataclass(frozen=True)
class LensQueries:
    """The queries the lens ranks for; one without text has a Flat ranking only."""

    query_ids: list[str]
    texts: list[str | None]
    embeddings: np.ndarray  # float32 [queries, d]


def build_lens(catalog_dir: Path, encoder: TokenEncoder, dev_split: DevSplit, queries: LensQueries, k: int,
               description: Mapping[str, Any]) -> dict[str, Any]:
    """Encode the dev split and the queries, rank both oracles, write ``<catalog_dir>/xtr/``; return a summary.

    ``description`` holds what ``lens.parquet`` records besides the sizes: store_version,
    store_fingerprint, embedder and parameters (a JSON text).
    """
    started = time.monotonic()
    check_lens_inputs(dev_split, queries, k)
    lens_dir = catalog_dir / LENS_DIR
    lens_dir.mkdir(parents=True, exist_ok=True)
    staging = lens_dir / f".tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        with_text = [row for row, text in enumerate(queries.texts) if text is not None]
        query_vectors, query_starts = encode_queries(encoder, queries, with_text, staging / QUERY_TOKEN_VECTORS_FILE)
        xtr_scores, token_counts = score_dev_split(encoder, dev_split, query_vectors, query_starts,
                                                   staging / TOKEN_VECTORS_FILE)
        query_ids = np.asarray(queries.query_ids, dtype=object)
        write_oracle(staging / ORACLE_FILE, query_ids[with_text], dev_split.chunk_ids, xtr_scores, k)
        write_oracle(staging / FLAT_ORACLE_FILE, query_ids, dev_split.chunk_ids,
                     queries.embeddings @ dev_split.embeddings.T, k)
        pq.write_table(pa.table({
            "chunk_id": dev_split.chunk_ids, "pooled": dev_split.pooled, "judged": dev_split.judged,
            "sampled": dev_split.sampled, "token_count": token_counts.astype(np.int32),
        }, schema=DEV_SPLIT_SCHEMA), staging / DEV_SPLIT_FILE, compression="zstd")
        summary = {
            "dev_chunks": len(dev_split.chunk_ids), "dev_tokens": int(token_counts.sum()),
            "queries": len(queries.query_ids), "xtr_queries": len(with_text), "k": k,
        }
        lens_row = {
            "built_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
            **{name: description.get(name) for name in ("store_version", "store_fingerprint", "embedder",
                                                         "parameters")},
            "pooled_chunks": int(dev_split.pooled.sum()), "judged_chunks": int(dev_split.judged.sum()),
            "sampled_chunks": int(dev_split.sampled.sum()), "note": NOTE, **summary,
        }
        pq.write_table(pa.Table.from_pylist([lens_row], schema=LENS_SCHEMA), staging / LENS_FILE,
                       compression="zstd")
        # lens.parquet last: it is what a reader checks first, and it names the build.
        for name in (DEV_SPLIT_FILE, TOKEN_VECTORS_FILE, QUERY_TOKEN_VECTORS_FILE, ORACLE_FILE, FLAT_ORACLE_FILE,
                     LENS_FILE):
            os.replace(staging / name, lens_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if len(with_text) < len(queries.query_ids):
        logger.warning("xtr: %d of %d queries have no text; they have a Flat oracle ranking only",
                       len(queries.query_ids) - len(with_text), len(queries.query_ids))
    summary.update(lens_dir=str(lens_dir), seconds=time.monotonic() - started)
    logger.info("xtr: lens over %d chunks (%d tokens) for %d queries in %.1f s -> %s", summary["dev_chunks"],
                summary["dev_tokens"], summary["queries"], summary["seconds"], lens_dir)
    return summary


def check_lens_inputs(dev_split: DevSplit, queries: LensQueries, k: int) -> None:
    """Refuse what cannot make a lens, before any model run or file write."""
    if len(dev_split.chunk_ids) == 0:
        raise UdfError("xtr_build_lens: dev_split is empty; pool some runs (sql/write_pool.sql), load judged "
                       "queries, or sample chunks (sample > 0) so the split has chunks to rank")
    if np.any(np.diff(dev_split.chunk_ids) <= 0):
        raise UdfError("xtr_build_lens: dev_split must list each chunk_id once, in ascending order; "
                       "aggregate it with list(... ORDER BY chunk_id) over distinct chunks")
    if not queries.query_ids:
        raise UdfError("xtr_build_lens: queries is empty; load a query set with sql/load_queries.sql first")
    if k < 1:
        raise UdfError(f"xtr_build_lens: k must be at least 1, got {k}; the default is {DEFAULT_K}")
    if dev_split.embeddings.shape[1] != queries.embeddings.shape[1]:
        raise UdfError(
            f"xtr_build_lens: the queries' embeddings have dimension {queries.embeddings.shape[1]} but the "
            f"chunks' have {dev_split.embeddings.shape[1]}; reload the queries with sql/load_queries.sql"
        )


def encode_queries(encoder: TokenEncoder, queries: LensQueries, with_text: list[int],
                   path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Token vectors of the queries that have text, written to ``path``: (float32 rows, first row per query)."""
    texts = [queries.texts[row] for row in with_text]
    ids = [queries.query_ids[row] for row in with_text]
    schema = token_vectors_schema("query_id", pa.string(), encoder.dim)
    per_query: list[np.ndarray | None] = [None] * len(texts)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in encoder.encode(texts):
            writer.write_table(token_table(schema, [ids[row] for row in batch.rows], batch))
            for row, start, count in zip(batch.rows, batch.starts, batch.counts, strict=True):
                per_query[row] = batch.vectors[start:start + count]
    if not texts:
        return np.empty((0, encoder.dim), dtype=np.float32), np.empty(0, dtype=np.int64)
    counts = np.array([len(vectors) for vectors in per_query], dtype=np.int64)
    return np.concatenate(per_query).astype(np.float32), np.concatenate(([0], np.cumsum(counts)[:-1]))


def score_dev_split(encoder: TokenEncoder, dev_split: DevSplit, query_vectors: np.ndarray,
                    query_starts: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Encode the dev split batch by batch, writing its token vectors to ``path`` and scoring each batch
    against every query: (late-interaction scores ``[queries, chunks]``, token count per chunk)."""
    chunk_count = len(dev_split.chunk_ids)
    scores = np.empty((len(query_starts), chunk_count), dtype=np.float32)
    token_counts = np.zeros(chunk_count, dtype=np.int64)
    schema = token_vectors_schema("chunk_id", pa.int64(), encoder.dim)
    encoded, last_logged = 0, time.monotonic()
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in encoder.encode(dev_split.contents):
            writer.write_table(token_table(schema, dev_split.chunk_ids[batch.rows], batch))
            token_counts[batch.rows] = batch.counts
            if len(query_starts):
                scores[:, batch.rows] = late_interaction_scores(query_vectors, query_starts,
                                                                batch.vectors.astype(np.float32), batch.starts)
            encoded += len(batch.rows)
            if time.monotonic() - last_logged >= PROGRESS_INTERVAL_S:
                last_logged = time.monotonic()
                logger.info("xtr: encoded %d of %d dev-split chunks", encoded, chunk_count)
    return scores, token_counts


def write_oracle(path: Path, query_ids: np.ndarray, chunk_ids: np.ndarray, scores: np.ndarray, k: int) -> None:
    """Each query's top ``k`` chunks by ``scores`` (``[queries, chunks]``) as oracle rows."""
    order = ranked_top_k(scores, k)
    depth = order.shape[1]
    table = pa.table({
        "query_id": pa.array(np.repeat(query_ids, depth).tolist(), pa.string()),
        "rank": pa.array(np.tile(np.arange(1, depth + 1, dtype=np.int32), len(query_ids))),
        "chunk_id": pa.array(chunk_ids[order].ravel()),
        "score": pa.array(np.take_along_axis(scores, order, axis=1).astype(np.float64).ravel()),
    }, schema=ORACLE_SCHEMA)
    pq.write_table(table, path, compression="zstd")


# --------------------------------------------------------------------------- UDF

DEV_SPLIT_TYPE = ("STRUCT(chunk_id BIGINT, pooled BOOLEAN, judged BOOLEAN, sampled BOOLEAN, content VARCHAR, "
                  "embedding FLOAT[])[]")
QUERIES_TYPE = "STRUCT(query_id VARCHAR, text VARCHAR, embedding FLOAT[])[]"
SUMMARY_FIELDS = (("dev_chunks", pa.int64()), ("dev_tokens", pa.int64()), ("queries", pa.int64()),
                  ("xtr_queries", pa.int64()), ("k", pa.int32()), ("lens_dir", pa.string()),
                  ("seconds", pa.float64()))
SUMMARY_TYPE = ("STRUCT(dev_chunks BIGINT, dev_tokens BIGINT, queries BIGINT, xtr_queries BIGINT, k INTEGER, "
                "lens_dir VARCHAR, seconds DOUBLE)")


def _single_list(argument: pa.Array | pa.ChunkedArray) -> pa.StructArray:
    """The struct rows of a one-row list argument; no rows for a NULL list (``list()`` over no rows)."""
    array = combined(argument)
    if len(array) != 1:
        raise UdfError("xtr_build_lens: call it once, with lists aggregated over the whole split and query set "
                       "(see sql/build_xtr.sql), not once per row")
    return pa.array([], array.type.value_type) if array.null_count else array.flatten()


def _float_matrix(column: pa.Array, what: str) -> np.ndarray:
    """A FLOAT[] column as float32 ``[rows, d]``; every row present and of one length."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if column.null_count or len(set(lengths.tolist())) > 1:
        raise UdfError(f"xtr_build_lens: every {what} embedding must be present and of one dimension; "
                       "reload the queries with sql/load_queries.sql or re-ingest the store")
    dimension = int(lengths[0]) if len(lengths) else 0
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), dimension)


def _build_lens_udf(context: CatalogContext, dev_split: pa.Array, queries: pa.Array, k: pa.Array,
                    parameters: pa.Array) -> pa.Array:
    chunks = _single_list(dev_split)
    query_rows = _single_list(queries)
    split = DevSplit(
        chunk_ids=chunks.field("chunk_id").to_numpy(zero_copy_only=False).astype(np.int64),
        contents=[content or "" for content in chunks.field("content").to_pylist()],
        embeddings=_float_matrix(chunks.field("embedding"), "chunk"),
        **{flag: chunks.field(flag).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
           for flag in ("pooled", "judged", "sampled")},
    )
    lens_queries = LensQueries(
        query_ids=query_rows.field("query_id").to_pylist(),
        texts=query_rows.field("text").to_pylist(),
        embeddings=_float_matrix(query_rows.field("embedding"), "query"),
    )
    depth = k.to_pylist()[0]
    depth = DEFAULT_K if depth is None else int(depth)
    # Checked here too, so bad input fails before the model loads.
    check_lens_inputs(split, lens_queries, depth)
    versions = catalog_versions(context.catalog_dir)
    description = {"store_version": versions["store_version"], "store_fingerprint": versions["store_fingerprint"],
                   # The model that made the lens's token vectors (the Flat oracle reads the store's).
                   "embedder": embedder_identity(context, contextual_choice(context)).label,
                   "parameters": parameters.to_pylist()[0]}
    summary = build_lens(context.catalog_dir, token_encoder(context), split, lens_queries, depth, description)
    return pa.array([summary], pa.struct(SUMMARY_FIELDS))


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="xtr_build_lens",
        function=_build_lens_udf,
        parameters=(DEV_SPLIT_TYPE, QUERIES_TYPE, "INTEGER", "VARCHAR"),
        return_type=SUMMARY_TYPE,
        kind="arrow",
        # NULL lists (an empty split or query set) must reach the function and get its error.
        null_handling="special",
        side_effects=True,
        owns_cores=True,
        doc="xtr_build_lens(dev_split, queries, k, parameters): encode the dev split's chunk tokens, write the "
        "XTR and Flat oracle top-k and the token vectors under xtr/ (see sql/build_xtr.sql); returns a summary.",
    ),
)


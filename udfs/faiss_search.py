"""FAISS as SQL: the UDFs over the published index of the catalog.

* ``faiss_topk(q FLOAT[], k INTEGER) -> STRUCT(rank INTEGER, chunk_id BIGINT, score FLOAT)[]``:
  approximate (or, for Flat, exact) top-k; one ``index.search`` per DuckDB chunk of query
  rows.  ``score`` is a similarity, higher is better: the inner product for 'ip' and 'cos'
  indexes, the negated squared L2 distance for 'l2'.  ``rank`` starts at 1.  A NULL query or
  k gives NULL.  Every row gets min(k, ntotal) hits: k above the index size returns every
  vector there is, and where an ANN index finds fewer (an HNSW graph reaching too few nodes,
  too few probed IVF lists) that row is ranked by exact search over the stored vectors
  instead, with exact scores (counted in ``faiss_topk_exact_fallback_queries_total``).  An
  empty query, or a zero query on an 'ip' or 'cos' index (every score 0: no ranking at all),
  is an error.  FLOAT[384] arrays (``embed()``) are accepted: DuckDB casts ARRAY to LIST.
* ``exact_rerank(q, candidate_ids BIGINT[], k, metric)``: exact scores of the candidates from
  the stored vectors (metric 'ip', 'cos' or 'l2'; NULL: the published index's own metric, read
  from the loaded index, which is what ``faiss_search(k_factor := ...)`` passes), top k of
  them; unknown or repeated ids are dropped (unknown ones counted in
  ``faiss_rerank_unknown_ids_total``).
* ``faiss_search_hits(q, k DOUBLE, k_factor DOUBLE)``: the hits list behind the ``faiss_search``
  table macro (sql/macros/faiss_search.sql), a native (one row per call) UDF: the macro's
  argument checks, then faiss_topk's search of the one query, or with k_factor above 1
  exact_rerank of ceil(k * k_factor) candidates, each hit with its chunk's uri, bytes and lines
  (:mod:`udfs.hit_locations`).  One UDF call, so the macro binds no CASE arms and joins nothing
  per statement.
* One query (``faiss_search_hits``, a one-row ``faiss_topk``) takes ``_one_query_hits``: the
  same checks, search and exact fallback without the batch's Arrow kernels, and
  ``LoadedIndex.search`` gives a one-row search one OpenMP thread (no team to wake).  Its hits
  equal the batched path's, to the bit on a Flat index (tests/test_single_query.py).
* ``faiss_set_params('nprobe=32')``: apply search parameters (nprobe, efSearch,
  refine_k_factor: :mod:`udfs.faiss_params`) to the loaded index of this connection (until
  CURRENT changes); returns the resulting parameters.
* ``faiss_index_info()``: the loaded version's facts as a STRUCT (the table macro of the
  same name gives it as a row).

``faiss_build`` is :mod:`udfs.faiss_build`'s; ``faiss_autotune`` is :mod:`udfs.autotune`'s.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from udfs.context import CatalogContext
from udfs.faiss_current import load_current
from udfs.faiss_loaded import METRICS, LoadedIndex
from udfs.hit_locations import LOCATED_FIELD_TYPES, current_locations
from udfs.metrics import REFINE_KEPT_RATIO, REFINE_SECONDS, RERANK_UNKNOWN_IDS, TOPK_EXACT_FALLBACK
from udfs.registry import UdfError, UdfSpec, combined

HITS_TYPE = "STRUCT(rank INTEGER, chunk_id BIGINT, score FLOAT)[]"
#: faiss_search's hits: faiss_topk's fields, then where each chunk is (udfs/hit_locations.py).
LOCATED_HITS_TYPE = (
    "STRUCT(rank INTEGER, chunk_id BIGINT, score FLOAT, "
    + ", ".join(f"{name} {sql_type}" for name, sql_type in LOCATED_FIELD_TYPES) + ")[]"
)
_HITS_ARROW_TYPE = pa.list_(pa.struct([("rank", pa.int32()), ("chunk_id", pa.int64()), ("score", pa.float32())]))
_COS, _L2 = METRICS.index("cos"), METRICS.index("l2")
# Candidates scored per gather from vectors.npy: bounds the temporary copy (64k x d floats)
# however large k * k_factor and the chunk are.
_SCORE_BLOCK = 65_536
# Scores held at once by the exact fallback of faiss_topk (queries x stored vectors): 64 MiB
# of float32, so a batch of short rows over a large store is scored a few queries at a time.
_FALLBACK_SCORES = 1 << 24


def _query_matrix(queries: pa.ListArray, dimension: int, function: str) -> tuple[np.ndarray, np.ndarray]:
    """A numpy view over the non-NULL query lists, shape (present rows, d), and the mask of those rows."""
    present = queries.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(queries).fill_null(dimension).to_numpy()
    if (lengths == 0).any():
        row = np.flatnonzero(lengths == 0)[0]
        raise UdfError(
            f"{function}: q in row {row + 1} of this batch is empty; pass a query vector of {dimension} floats "
            "such as embed('text')"
        )
    wrong = np.flatnonzero(lengths != dimension)
    if wrong.size:
        raise UdfError(f"{function}: q has dimension {lengths[wrong[0]]}, the index expects {dimension}")
    # flatten() skips NULL lists and honours slicing; without NULL elements this is zero-copy.
    matrix = queries.flatten().to_numpy(zero_copy_only=False).reshape(-1, dimension)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        row = np.flatnonzero(present)[np.flatnonzero(~finite)[0]]
        raise UdfError(
            f"{function}: q in row {row + 1} of this batch contains NaN, infinity or NULL elements; "
            "pass finite floats"
        )
    return matrix, present


def _refuse_zero_queries(matrix: np.ndarray, present: np.ndarray, directionless: np.ndarray, function: str) -> None:
    """A zero query scores every vector 0 under 'ip' and 'cos', so any ranking would be arbitrary.

    ``directionless`` marks the present rows whose metric is 'ip' or 'cos'; under 'l2' a zero
    query is a real question (the vectors nearest the origin) and passes.
    """
    zero = directionless & ~matrix.any(axis=1)
    if zero.any():
        row = np.flatnonzero(present)[np.flatnonzero(zero)[0]]
        raise UdfError(
            f"{function}: q in row {row + 1} of this batch is the zero vector, which scores every chunk 0 "
            "under the 'ip' and 'cos' metrics; pass a nonzero query vector (embed() of a text with words in it)"
        )


def _exact_topk(loaded: LoadedIndex, queries: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``ks[i]`` (at most ntotal) stored vectors for each query row, by the index's metric.

    Returns flat (chunk ids, scores), row after row, best first, equal scores by ascending id:
    the ranking a Flat index gives.  Scores match ``loaded.search``'s: inner product, cosine,
    or negated squared L2 distance.
    """
    ntotal = loaded.ntotal
    if loaded.metric == "cos":
        queries = _unit_rows(queries)
    group = max(1, _FALLBACK_SCORES // max(ntotal, 1))
    found_ids, found_scores = [], []
    for start in range(0, len(queries), group):
        batch = queries[start : start + group]
        scores = np.empty((len(batch), ntotal), dtype=np.float32)
        for first in range(0, ntotal, _SCORE_BLOCK):
            block = np.asarray(loaded.vectors[first : first + _SCORE_BLOCK], dtype=np.float32)
            part = batch @ block.T
            if loaded.metric == "cos":
                norms = np.linalg.norm(block, axis=1)
                part /= np.where(norms > 0, norms, 1)
            elif loaded.metric == "l2":
                part = 2 * part - np.einsum("ij,ij->i", block, block) - np.einsum("ij,ij->i", batch, batch)[:, None]
            scores[:, first : first + len(block)] = part
        batch_k = ks[start : start + group]
        widest = int(batch_k.max())
        if widest < ntotal:
            top = np.argpartition(-scores, widest - 1, axis=1)[:, :widest]
        else:
            top = np.broadcast_to(np.arange(ntotal), scores.shape)
        top_scores = np.take_along_axis(scores, top, axis=1)
        top_ids = loaded.ids[top]
        order = np.lexsort((top_ids, -top_scores), axis=1)
        keep = np.arange(widest) < batch_k[:, None]
        found_ids.append(np.take_along_axis(top_ids, order, axis=1)[keep])
        found_scores.append(np.take_along_axis(top_scores, order, axis=1)[keep])
    return np.concatenate(found_ids), np.concatenate(found_scores)


def _k_values(ks: pa.Array, function: str) -> tuple[np.ndarray, np.ndarray]:
    present = ks.is_valid().to_numpy(zero_copy_only=False)
    values = ks.fill_null(1).to_numpy().astype(np.int64)
    if (values < 1).any():
        raise UdfError(f"{function}: k must be at least 1, got {values[values < 1][0]}")
    return values, present


def _hits_array(
    present: np.ndarray, counts: np.ndarray, ranks: np.ndarray, ids: np.ndarray, scores: np.ndarray
) -> pa.Array:
    """``STRUCT(rank, chunk_id, score)[]`` from flat numpy columns; ``counts`` per present row, else NULL."""
    sizes = np.zeros(len(present), dtype=np.int64)
    sizes[present] = counts
    offsets = np.zeros(len(present) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    hits = pa.StructArray.from_arrays(
        [pa.array(ranks, pa.int32()), pa.array(ids, pa.int64()), pa.array(scores, pa.float32())],
        fields=list(_HITS_ARROW_TYPE.value_type),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), hits, mask=pa.array(~present))


def _one_query_hits(loaded: LoadedIndex, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss_topk for one query vector (1-D float32; NULL elements as NaN): (chunk ids, scores), best first.

    The same checks, search and exact fallback as the batched path, without its per-batch
    Arrow compute kernels and masks: for one row those cost more than the search itself
    (0.45 ms of the 0.55 ms the batched body took for a Flat search of 3,500 vectors).
    """
    if vector.size == 0:
        raise UdfError(
            f"faiss_topk: q in row 1 of this batch is empty; pass a query vector of {loaded.dimension} floats "
            "such as embed('text')"
        )
    if vector.size != loaded.dimension:
        raise UdfError(f"faiss_topk: q has dimension {vector.size}, the index expects {loaded.dimension}")
    if not np.isfinite(vector).all():
        raise UdfError(
            "faiss_topk: q in row 1 of this batch contains NaN, infinity or NULL elements; pass finite floats"
        )
    if k < 1:
        raise UdfError(f"faiss_topk: k must be at least 1, got {k}")
    matrix = vector.reshape(1, -1)
    if loaded.metric != "l2" and not vector.any():
        _refuse_zero_queries(matrix, np.ones(1, dtype=bool), np.ones(1, dtype=bool), "faiss_topk")
    k_search = min(k, loaded.ntotal)
    if loaded.max_k is not None and k_search > loaded.max_k:
        raise UdfError(
            f"faiss_topk: k={k_search} exceeds the GPU limit of {loaded.max_k}; lower k or turn use_gpu off"
        )
    scores, labels = loaded.search(matrix, k_search)
    found = labels[0] != -1
    ids, hit_scores = labels[0][found], scores[0][found]
    if len(ids) < k_search:
        # As in the batched path: a short ANN answer is replaced by an exact search.
        TOPK_EXACT_FALLBACK.labels(family=loaded.family).inc()
        ids, hit_scores = _exact_topk(loaded, matrix, np.array([k_search]))
    return ids, hit_scores


def _topk_one(loaded: LoadedIndex, query: pa.Array, k: int) -> pa.Array:
    """faiss_topk for a batch of one non-NULL row (a one-row ``faiss_topk`` statement)."""
    ids, scores = _one_query_hits(loaded, query.flatten().to_numpy(zero_copy_only=False), k)
    ranks = np.arange(1, len(ids) + 1, dtype=np.int32)
    return _hits_array(np.ones(1, dtype=bool), np.array([len(ids)]), ranks, ids, scores)


def faiss_topk(context: CatalogContext, q: pa.ChunkedArray, k: pa.ChunkedArray) -> pa.Array:
    loaded = load_current(context)
    queries, ks = combined(q), combined(k)
    if len(queries) == 1 and queries.null_count == 0 and ks.null_count == 0:
        return _topk_one(loaded, queries, int(ks[0].as_py()))
    matrix, q_present = _query_matrix(queries, loaded.dimension, "faiss_topk")
    k_values, k_present = _k_values(ks, "faiss_topk")
    present = q_present & k_present
    if not k_present.all():
        matrix = matrix[k_present[q_present]]
    row_k = k_values[present]
    if loaded.metric != "l2":
        _refuse_zero_queries(matrix, present, np.ones(len(matrix), dtype=bool), "faiss_topk")
    if not present.any():
        return pa.nulls(len(present), _HITS_ARROW_TYPE)
    # One search at the largest k of the chunk, trimmed per row below.
    k_search = int(min(row_k.max(), loaded.ntotal))
    if loaded.max_k is not None and k_search > loaded.max_k:
        raise UdfError(
            f"faiss_topk: k={k_search} exceeds the GPU limit of {loaded.max_k}; lower k or turn use_gpu off"
        )
    scores, labels = loaded.search(matrix, k_search)
    keep = (labels != -1) & (np.arange(k_search) < row_k[:, None])
    counts = keep.sum(axis=1)
    # An ANN index may find fewer than k even though the store holds them (HNSW: 192 of 320
    # for k = 320); a short answer would look complete, so those rows get an exact search.
    wanted = np.minimum(row_k, loaded.ntotal)
    short = np.flatnonzero(counts < wanted)
    if not short.size:
        ranks = np.cumsum(keep, axis=1, dtype=np.int32)[keep]
        return _hits_array(present, counts, ranks, labels[keep], scores[keep])
    TOPK_EXACT_FALLBACK.labels(family=loaded.family).inc(len(short))
    keep[short] = False
    exact_ids, exact_scores = _exact_topk(loaded, matrix[short], wanted[short])
    counts[short] = wanted[short]
    # Both parts are row after row, best first; a stable sort by row interleaves them.
    rows = np.concatenate([np.nonzero(keep)[0], np.repeat(short, wanted[short])])
    order = np.argsort(rows, kind="stable")
    ids = np.concatenate([labels[keep], exact_ids])[order]
    hit_scores = np.concatenate([scores[keep], exact_scores])[order]
    ranks = (np.arange(len(rows)) - _run_starts(rows[order]) + 1).astype(np.int32)
    return _hits_array(present, counts, ranks, ids, hit_scores)


def _metric_codes(metrics: pa.Array, index_metric: str) -> np.ndarray:
    """Per row, the position in METRICS of the metric to score by; NULL rows take the index's own."""
    unknown = sorted(set(pc.unique(metrics).to_pylist()) - {None, *METRICS})
    if unknown:
        allowed = ", ".join(map(repr, METRICS))
        raise UdfError(f"exact_rerank: metric must be one of {allowed}, got {unknown[0]!r}")
    return pc.index_in(metrics, value_set=pa.array(METRICS)).fill_null(METRICS.index(index_metric)).to_numpy()


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero, as faiss.normalize_L2 leaves them."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1)


def _exact_scores(
    vectors: np.ndarray, rows: np.ndarray, row_queries: np.ndarray, owners: np.ndarray, codes: np.ndarray
) -> np.ndarray:
    """Similarity of each candidate (vector row ``rows[i]``) to the query of its row ``owners[i]``."""
    scores = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _SCORE_BLOCK):
        block = slice(start, start + _SCORE_BLOCK)
        candidates = np.asarray(vectors[rows[block]], dtype=np.float32)
        queries = row_queries[owners[block]]
        metric = codes[owners[block]]
        cos, l2 = metric == _COS, metric == _L2
        if cos.any():
            candidates[cos] = _unit_rows(candidates[cos])
        block_scores = np.einsum("ij,ij->i", candidates, queries)
        if l2.any():
            difference = candidates[l2] - queries[l2]
            block_scores[l2] = -np.einsum("ij,ij->i", difference, difference)
        scores[block] = block_scores
    return scores


def _run_starts(sorted_owners: np.ndarray) -> np.ndarray:
    """For each element of a sorted owner array, the index where its owner's run begins."""
    return np.searchsorted(sorted_owners, sorted_owners, side="left")


def exact_rerank(
    context: CatalogContext,
    q: pa.ChunkedArray,
    candidate_ids: pa.ChunkedArray,
    k: pa.ChunkedArray,
    metric: pa.ChunkedArray,
) -> pa.Array:
    started = time.perf_counter()
    loaded = load_current(context)
    candidates = combined(candidate_ids)
    codes = _metric_codes(combined(metric), loaded.metric)
    matrix, q_present = _query_matrix(combined(q), loaded.dimension, "exact_rerank")
    k_values, k_present = _k_values(combined(k), "exact_rerank")
    present = q_present & k_present & candidates.is_valid().to_numpy(zero_copy_only=False)

    row_queries = np.zeros((len(present), loaded.dimension), dtype=np.float32)
    row_queries[q_present] = matrix
    _refuse_zero_queries(matrix, q_present, (codes != _L2)[q_present], "exact_rerank")
    row_queries[codes == _COS] = _unit_rows(row_queries[codes == _COS])

    # One entry per candidate: owning row, chunk id, position in its list.  flatten() skips NULL
    # lists, whose length counts as 0 here (list_parent_indices would not skip their values).
    # NULL ids become 0, which is never a chunk id, so they drop out with the unknown ones.
    lengths = pc.list_value_length(candidates).fill_null(0).to_numpy()
    owners = np.repeat(np.arange(len(present)), lengths)
    chunk_ids = candidates.flatten().fill_null(0).to_numpy()
    positions = np.arange(len(owners)) - _run_starts(owners)
    vector_rows, found = loaded.rows_of(chunk_ids)
    usable = present[owners]
    unknown = int((usable & ~found).sum())
    if unknown:
        RERANK_UNKNOWN_IDS.inc(unknown)
    keep = np.flatnonzero(usable & found)
    # A repeated id in one list counts once, at its first position.
    by_id = keep[np.lexsort((positions[keep], chunk_ids[keep], owners[keep]))]
    repeated = np.zeros(len(by_id), dtype=bool)
    repeated[1:] = (owners[by_id[1:]] == owners[by_id[:-1]]) & (chunk_ids[by_id[1:]] == chunk_ids[by_id[:-1]])
    keep = by_id[~repeated]
    owners, chunk_ids, positions, vector_rows = (
        owners[keep],
        chunk_ids[keep],
        positions[keep],
        vector_rows[keep],
    )

    scores = _exact_scores(loaded.vectors, vector_rows, row_queries, owners, codes)
    # Best first within each row; equal scores by ascending id so results are deterministic.
    order = np.lexsort((chunk_ids, -scores, owners))
    owners, chunk_ids, positions, scores = owners[order], chunk_ids[order], positions[order], scores[order]
    ranks = np.arange(len(owners)) - _run_starts(owners) + 1
    row_k = k_values[owners]
    selected = ranks <= row_k

    ann_top_k = positions < row_k
    if ann_top_k.any():
        REFINE_KEPT_RATIO.observe(float((selected & ann_top_k).sum() / ann_top_k.sum()))
    REFINE_SECONDS.observe(time.perf_counter() - started)
    counts = np.bincount(owners[selected], minlength=len(present))[present]
    return _hits_array(present, counts, ranks[selected], chunk_ids[selected], scores[selected])


# The largest k, and k * k_factor, that faiss_topk's INTEGER k holds.
_MAX_K = 2_147_483_647


def _shown(value: float) -> str:
    """An argument as the refusal shows it: integral values without a decimal point, as passed."""
    if math.isnan(value):
        return "NULL"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_search_arguments(k: float, k_factor: float) -> None:
    """faiss_search's argument checks, in the macro's order and words; NULL (NaN here) fails each.

    They run on DOUBLE values, before any INTEGER cast or product could overflow.  Plain floats,
    not numpy: one query's checks are on the path of every single-query statement.
    """
    checks = (
        ("k", k, not k >= 1, "be at least 1", ""),
        ("k", k, not k <= _MAX_K, f"be at most {_MAX_K}",
         "; ask for fewer hits (k above the store size already returns every chunk)"),
        ("k_factor", k_factor, not k_factor >= 1, "be at least 1", ""),
    )
    for name, value, bad, rule, hint in checks:
        if bad:
            raise UdfError(f"faiss_search: {name} must {rule}, got {_shown(value)}{hint}")
    if not k * k_factor <= _MAX_K:
        raise UdfError(
            f"faiss_search: k * k_factor must be at most {_MAX_K} candidates, got "
            f"{_shown(k)} * {_shown(k_factor)}; lower k or k_factor"
        )


def _query_vector(q: list[float | None]) -> np.ndarray:
    """A native UDF's FLOAT[] argument as float32, NULL elements as NaN (refused as non-finite)."""
    try:
        return np.array(q, dtype=np.float32)
    except TypeError:  # a NULL element: None does not convert
        return np.array([np.nan if value is None else value for value in q], dtype=np.float32)


def faiss_search_hits(
    context: CatalogContext, q: list[float | None] | None, k: float | None, k_factor: float | None
) -> list[tuple[Any, ...]] | None:
    """The hits behind the ``faiss_search`` table macro, one query per call (a native UDF):
    the macro's checks, faiss_topk, and with k_factor above 1, exact_rerank of ceil(k * k_factor)
    candidates; each hit with where its chunk is in the current store (udfs/hit_locations.py).
    NULL q gives NULL (no rows).

    Native, not arrow: a one-query statement is what analysts, dashboard tiles and report loops
    send, and DuckDB's arrow call path alone costs more than the search there (arrow UDF
    statement 1.0 ms, native 0.5 ms, index.search of one vector 0.3 ms at 200k:
    bench/bench_latency.py).  A ``LATERAL faiss_search`` batch therefore searches one query at a
    time (DuckDB's worker threads run those calls side by side, FAISS releasing the GIL);
    ``unnest(faiss_topk(...))`` is the batched form.  One query searches on one OpenMP thread
    (LoadedIndex.search), so this UDF does not own the cores and its statements keep DuckDB's
    threads (no thread rule).
    """
    k = math.nan if k is None else float(k)
    k_factor = math.nan if k_factor is None else float(k_factor)
    _check_search_arguments(k, k_factor)
    if q is None:
        return None
    if len(q) == 0:
        raise UdfError("faiss_search: q is empty; pass a query vector such as embed('text')")
    vector = _query_vector(q)
    loaded = load_current(context)
    # CAST(k AS INTEGER) as DuckDB does it: to the nearest integer, halves away from zero.
    row_k = math.floor(k + 0.5)
    if k_factor == 1:
        ids, scores = _one_query_hits(loaded, vector, row_k)
    else:
        ann_ids, _ = _one_query_hits(loaded, vector, math.ceil(k * k_factor))
        reranked = exact_rerank(
            context,
            pa.array([vector], pa.list_(pa.float32())),
            pa.array([ann_ids], pa.list_(pa.int64())),
            pa.array([row_k], pa.int32()),
            pa.nulls(1, pa.string()),
        ).flatten()
        ids = reranked.field("chunk_id").to_numpy()
        scores = reranked.field("score").to_numpy()
    locations = current_locations(context, "faiss_search").locate(ids)
    return list(zip(range(1, len(ids) + 1), ids.tolist(), scores.tolist(), *locations, strict=True))


def _faiss_set_params(context: CatalogContext, params: str) -> str:
    return load_current(context).set_parameters(params, "faiss_set_params")


def _faiss_index_info(context: CatalogContext) -> dict[str, Any]:
    loaded = load_current(context)
    return {
        "version": loaded.version,
        "family": loaded.family,
        "factory": loaded.manifest["factory"],
        "ntotal": loaded.ntotal,
        "dimension": loaded.dimension,
        "metric": loaded.metric,
        "device": loaded.device,
        "parameters": loaded.parameters(),
        "store_fingerprint": loaded.manifest["store"]["fingerprint"],
        "built_at": loaded.manifest["built_at"],
    }


# faiss_topk, faiss_search_hits and exact_rerank read the published index yet do not declare
# side_effects: on constant arguments (a literal, embed('text'), getvariable) DuckDB then folds the
# call while planning, on the calling thread, where a volatile call waits for a worker thread:
# 0.11-0.15 ms of a 1.4 ms faiss_search statement, 0.4-0.5 ms of a one-row faiss_topk (same-process
# A/B at 200k vectors, BENCHMARKS.md).
# The price: a PREPAREd statement whose query is constant keeps the answer of PREPARE across a
# publish; a parameter ($1, embed($1)) is evaluated at every EXECUTE (tests/test_faiss_sql.py).
REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="faiss_topk",
        function=faiss_topk,
        parameters=("FLOAT[]", "INTEGER"),
        return_type=HITS_TYPE,
        null_handling="special",
        owns_cores=True,
        doc="Top-k chunks of the published index per query vector (rank from 1, higher score is better).",
    ),
    UdfSpec(
        name="faiss_search_hits",
        function=faiss_search_hits,
        parameters=("FLOAT[]", "DOUBLE", "DOUBLE"),
        return_type=LOCATED_HITS_TYPE,
        kind="native",
        null_handling="special",
        doc="The hits of the faiss_search macro, one query per call: faiss_topk(q, k), or with k_factor > 1 "
        "exact_rerank of ceil(k * k_factor) candidates, each with its chunk's uri, bytes and lines; checks k and "
        "k_factor.",
    ),
    UdfSpec(
        name="exact_rerank",
        function=exact_rerank,
        parameters=("FLOAT[]", "BIGINT[]", "INTEGER", "VARCHAR"),
        return_type=HITS_TYPE,
        null_handling="special",
        owns_cores=True,
        doc="Exact top-k of candidate chunk ids by metric 'ip', 'cos' or 'l2' (NULL: the index's) over the "
        "stored vectors.",
    ),
    UdfSpec(
        name="faiss_set_params",
        function=_faiss_set_params,
        parameters=("VARCHAR",),
        return_type="VARCHAR",
        kind="native",
        side_effects=True,
        doc="Set search parameters on the loaded index ('nprobe=32', 'efSearch=128', 'refine_k_factor=8').",
    ),
    UdfSpec(
        name="faiss_index_info",
        function=_faiss_index_info,
        parameters=(),
        return_type=(
            "STRUCT(version VARCHAR, family VARCHAR, factory VARCHAR, ntotal BIGINT, dimension INTEGER, "
            "metric VARCHAR, "
            "device VARCHAR, parameters VARCHAR, store_fingerprint VARCHAR, built_at VARCHAR)"
        ),
        kind="native",
        side_effects=True,  # reads the published index
        doc="Facts about the published index as loaded by this connection.",
    ),
)

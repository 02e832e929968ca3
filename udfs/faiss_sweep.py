"""The autotune sweep: measure an index's operating points, pick one, save it as its tuning profile.

:func:`tune` on a :class:`~udfs.faiss_loaded.LoadedIndex`; the SQL ``faiss_autotune`` UDF
(:mod:`udfs.autotune`), ``bootstrap.py autotune`` and setting ``autotune_on_start``
(:mod:`udfs.faiss_current`) call it.  The profile's format is :mod:`udfs.faiss_tuning`'s.

A sweep, in order:

1. Queries: the user's vectors, or a seeded sample of the index's own vectors (``vectors.npy``)
   perturbed with noise of half their norm and rescaled to it, so that a query is near, but
   usually not nearest to, the chunk it came from.  More than ``query_count`` rows (or more
   than the oracle budget allows on a large store) are sampled, seeded.  The fingerprint
   ignores row order, so the same set from an unordered SQL scan fingerprints the same.
2. Oracle: the exact top-k of every query over ``vectors.npy`` with the index's metric
   (``faiss.contrib.exhaustive_search.knn_ground_truth``: IndexFlat block by block), so
   recall is measured against the vectors the index holds, not against another copy.
3. Grid: ``faiss.ParameterSpace.initialize`` on the index gives the family's ranges (nprobe for
   IVF, efSearch for HNSW, refine_k_factor for the RFlat refine, their product for ivf_pq_refine);
   the build's default value is added where FAISS's ranges lack it, so the untuned point is
   always measured.  ``ParameterSpace.explore`` with an ``IntersectionCriterion`` (recall@k)
   and ``n_experiments = 0`` measures every combination (FAISS's pruning would skip points
   it predicts to be off the Pareto front; the profile keeps them all).  It runs once per
   batch of :data:`BATCH_QUERIES` queries, which gives the batched latency distribution;
   single-query latency is timed per call on up to :data:`SINGLE_QUERY_SAMPLE` queries.
   Timings use the serving thread count (setting ``faiss_threads``).
4. Pick: ``faiss.OperatingPoints`` over (recall, total batched time) keeps the Pareto front;
   the pick is its fastest point reaching the target, else its best recall (said in the note).
   Recall carries a 95 % Wilson interval at n = number of queries: per-query recall lies in
   [0, 1], so its variance is at most p(1 - p) and the interval is conservative.
5. Profile: ``tuning.json`` (:func:`udfs.faiss_tuning.save_profile`) and ``tuning.png`` beside it in the
   version directory; the picked parameters stay applied to the index that was tuned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from udfs import progress
from udfs.faiss_loaded import LoadedIndex
from udfs.faiss_params import faiss_name, format_parameters, our_name, ours_from_faiss, parse
from udfs.faiss_tuning import save_profile
from udfs.registry import UdfError
from udfs.settings import field_default

logger = logging.getLogger("codeintel.autotune")

#: What tune() aims for unless told: the autotune_on_start settings' defaults.
DEFAULT_K: int = field_default("autotune_k")
DEFAULT_TARGET_RECALL: float = field_default("autotune_target_recall")
DEFAULT_QUERY_COUNT = 1000
DEFAULT_SEED = 0

PLOT_FILE = "tuning.png"
#: The search-time knobs tuned, innermost first: the order ``LoadedIndex.parameters()`` reads
#: them, so a picked point's string equals the index's after it is applied.  FAISS also offers
#: "ht" for IVF-PQ, a polysemous Hamming threshold; our PQ codes are built without polysemous
#: training ("np"), so it could only lose recall.
TUNED_KNOBS = ("nprobe", "efSearch", "refine_k_factor")
#: Queries per search call in the batched measurement: 1000 tuning queries give 16 batches for
#: a p95, and 64 rows already amortise the per-call overhead.
BATCH_QUERIES = 64
#: Queries timed one call each per grid point: enough for a p95, bounded on slow points.
SINGLE_QUERY_SAMPLE = 256
#: Noise norm over vector norm for the held-out queries: about the spread between chunks of one
#: cluster in the synthetic stores, so neighbours other than the source compete.
QUERY_NOISE = 0.5
#: The oracle scores every query against every vector; above this many pairs it uses fewer queries.
ORACLE_MAX_PAIRS = 4_000_000_000
MIN_ORACLE_QUERIES = 100
ORACLE_BLOCK_ROWS = 65_536
CONFIDENCE = 0.95
CONFIDENCE_Z = 1.959963984540054

@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One measured combination of search parameters; latencies are per query, in milliseconds."""

    parameters: str
    recall_at_k: float
    recall_low: float
    recall_high: float
    single_mean_ms: float
    single_p95_ms: float
    batch_mean_ms: float
    batch_p95_ms: float
    pareto: bool
    build_default: bool
    meets_target: bool
    picked: bool


@dataclasses.dataclass(frozen=True)
class TuningResult:
    grid: tuple[GridPoint, ...]
    picked: GridPoint
    target_met: bool
    note: str
    profile: dict[str, Any]
    profile_path: Path
    plot_path: Path


# --------------------------------------------------------------------------- queries


def held_out_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` stored vectors, seeded, each moved by noise of :data:`QUERY_NOISE` times its norm."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=count, replace=False))  # sorted: sequential reads of a mmap
    base = np.asarray(vectors[rows], dtype=np.float32)
    norms = np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= QUERY_NOISE * norms / np.linalg.norm(noise, axis=1, keepdims=True)
    moved = base + noise
    return moved * (norms / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), np.finfo(np.float32).tiny))


def _row_digests(matrix: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in matrix]


def query_fingerprint(matrix: np.ndarray) -> str:
    """A hash of the query set that ignores row order (SQL scans return rows in any order)."""
    digest = hashlib.blake2b(f"float32x{matrix.shape[1]}".encode(), digest_size=8)
    for row_digest in sorted(_row_digests(np.ascontiguousarray(matrix, dtype=np.float32))):
        digest.update(row_digest)
    return digest.hexdigest()


def _sample_supplied(matrix: np.ndarray, count: int, seed: int) -> np.ndarray:
    """At most ``count`` rows, the same ones for the same set in any row order."""
    canonical = matrix[np.argsort(np.array(_row_digests(matrix), dtype=object), kind="stable")]
    if len(canonical) <= count:
        return canonical
    return canonical[np.sort(np.random.default_rng(seed).choice(len(canonical), size=count, replace=False))]


def _check_supplied(queries: np.ndarray, dimension: int, function: str) -> np.ndarray:
    matrix = np.ascontiguousarray(queries, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dimension or len(matrix) == 0:
        raise UdfError(
            f"{function}: queries must be query vectors of dimension {dimension} (the index's), got an array "
            f"of shape {queries.shape}; pass embeddings made like the store's"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise UdfError(
            f"{function}: queries row {int(np.flatnonzero(~finite)[0]) + 1} contains NaN or infinity; "
            "pass finite query vectors"
        )
    return matrix


# --------------------------------------------------------------------------- oracle and grid


def _index_space(loaded: LoadedIndex, vectors: np.ndarray) -> np.ndarray:
    """Vectors as the index compares them: unit length for 'cos' (LoadedIndex.search does the same)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if loaded.metric == "cos":
        vectors = vectors.copy()
        faiss.normalize_L2(vectors)
    return vectors


def exact_neighbours(loaded: LoadedIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Chunk ids of the exact top-k of index-space ``queries`` over the version's vectors.npy."""
    if loaded.family == "flat":  # the index is itself exact Flat search over these vectors
        return loaded.index.search(queries, k)[1]

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, loaded.ntotal, ORACLE_BLOCK_ROWS):
            yield _index_space(loaded, loaded.vectors[start : start + ORACLE_BLOCK_ROWS])

    metric = faiss.METRIC_L2 if loaded.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    # The oracle is one large job, unlike a serving search: give it every core.
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        _, rows = knn_ground_truth(queries, blocks(), k, metric, ngpu=0 if loaded.device == "cpu" else -1)
    finally:
        faiss.omp_set_num_threads(loaded.lone_search_threads)
    return loaded.ids[rows]


def _searchable(index: faiss.Index) -> faiss.Index:
    """The index under its IndexIDMap2: ParameterSpace.initialize does not look through id maps."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexIDMap):
        node = faiss.downcast_index(node.index)
    return node


def parameter_space(loaded: LoadedIndex, function: str) -> faiss.ParameterSpace:
    """FAISS's ranges for this index's family, restricted to :data:`TUNED_KNOBS`, build defaults added."""
    space_type = faiss.ParameterSpace if loaded.device == "cpu" else faiss.GpuParameterSpace
    family_space = space_type()
    family_space.initialize(_searchable(loaded.index))
    defaults = _build_defaults(loaded, function)
    space = space_type()
    space.verbose = 0  # FAISS would print every experiment to stdout
    space.n_experiments = 0  # measure every combination: no Pareto pruning
    for name, family_values in parameter_ranges(family_space).items():
        if name not in TUNED_KNOBS:
            continue
        values = set(family_values) | ({defaults[name]} if name in defaults else set())
        if name == "nprobe" and loaded.max_k is not None:
            values = {value for value in values if value <= loaded.max_k}
        tuned_range = space.add_range(faiss_name(name))  # a reference into space: fill it before adding another
        for value in sorted(values):
            tuned_range.values.push_back(value)
    if loaded.family != "flat" and space.parameter_ranges.size() == 0:
        raise UdfError(
            f"{function}: FAISS's ParameterSpace finds no search parameter on this {loaded.family} index "
            f"({loaded.manifest['factory']}) on {loaded.device}; tune it on CPU (setting faiss_use_gpu=false)"
        )
    return space


def parameter_ranges(space: faiss.ParameterSpace) -> dict[str, list[float]]:
    """A ParameterSpace's ranges as plain values, under our knob names."""
    ranges = {}
    for position in range(space.parameter_ranges.size()):
        # at() hands back a copy that owns its values: keep it bound while reading them.
        parameter_range = space.parameter_ranges.at(position)
        values = parameter_range.values
        ranges[our_name(parameter_range.name)] = [values.at(i) for i in range(values.size())]
    return ranges


def _build_defaults(loaded: LoadedIndex, function: str) -> dict[str, float]:
    """The search parameters the build wrote into the index (the untuned point)."""
    built_with = loaded.manifest["search_parameters"]
    return dict(parse(built_with, function)) if built_with else {}


def _point_values(space: faiss.ParameterSpace, combination: int, function: str) -> dict[str, float]:
    """A combination's values in :data:`TUNED_KNOBS` order ({} for Flat, whose one combination is named '')."""
    name = ours_from_faiss(space.combination_name(combination))
    named = dict(parse(name, function)) if name else {}
    return {knob: named[knob] for knob in TUNED_KNOBS if knob in named}


def _batched_sweep(
    loaded: LoadedIndex, space: faiss.ParameterSpace, queries: np.ndarray, truth: np.ndarray, k: int,
    function: str = "autotune",
) -> tuple[np.ndarray, np.ndarray]:
    """``ParameterSpace.explore`` per batch: recall hits per combination, seconds per (batch, combination)."""
    combinations = space.n_combinations()
    starts = range(0, len(queries), BATCH_QUERIES)
    hits = np.zeros(combinations, dtype=np.int64)
    seconds = np.zeros((len(starts), combinations))
    with progress.stage(f"{function}: batched sweep of {combinations} points", total=len(starts),
                        unit="query batches") as step:
        for batch, start in enumerate(starts):
            rows = slice(start, start + BATCH_QUERIES)
            criterion = faiss.IntersectionCriterion(len(queries[rows]), k)
            criterion.set_groundtruth(None, truth[rows])
            # Keep the OperatingPoints object: all_pts is a view into it.
            operating_points = space.explore(loaded.index, queries[rows], criterion)
            for position in range(operating_points.all_pts.size()):
                point = operating_points.all_pts.at(position)
                # perf is hits / (rows * k); counting hits keeps the merged recall exact.
                hits[point.cno] += round(point.perf * len(queries[rows]) * k)
                seconds[batch, point.cno] = point.t
            step.advance()
    return hits, seconds


def _single_query_seconds(
    loaded: LoadedIndex, space: faiss.ParameterSpace, queries: np.ndarray, k: int, function: str = "autotune"
) -> np.ndarray:
    """Wall time of one ``index.search`` call per query, shape (combinations, queries)."""
    seconds = np.zeros((space.n_combinations(), len(queries)))
    with progress.stage(f"{function}: single-query timing", total=space.n_combinations(), unit="points") as step:
        for combination in range(space.n_combinations()):
            space.set_index_parameters(loaded.index, combination)
            for row in range(len(queries)):
                started = time.perf_counter()
                loaded.index.search(queries[row : row + 1], k)
                seconds[combination, row] = time.perf_counter() - started
            step.advance()
    return seconds


def _pick(
    space: faiss.ParameterSpace, recall: np.ndarray, total_seconds: np.ndarray, target_recall: float
) -> tuple[int, bool, set[int]]:
    """(picked combination, whether it reaches the target, Pareto-optimal combinations) by faiss.OperatingPoints."""
    points = faiss.OperatingPoints()
    for combination in range(space.n_combinations()):
        points.add(float(recall[combination]), float(total_seconds[combination]),
                   space.combination_name(combination), combination)
    # optimal_pts[0] is FAISS's "do nothing" point (recall 0 in no time); the rest ascend in recall and time.
    front = [(points.optimal_pts.at(i).cno, points.optimal_pts.at(i).perf) for i in range(1, points.optimal_pts.size())]
    pareto = {combination for combination, _ in front}
    reaching = [combination for combination, perf in front if perf >= target_recall]
    if reaching:
        return reaching[0], True, pareto
    if front:
        return front[-1][0], False, pareto
    return int(np.argmin(total_seconds)), False, pareto  # every point has recall 0: at least be fast


def wilson_interval(proportion: float, trials: int, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    denominator = 1 + z * z / trials
    centre = (proportion + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(proportion * (1 - proportion) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------- tune


def _check_arguments(
    loaded: LoadedIndex, k: Any, target_recall: Any, query_count: Any, seed: Any, function: str
) -> None:
    if not isinstance(k, int) or not 1 <= k <= loaded.ntotal or (loaded.max_k is not None and k > loaded.max_k):
        limit = loaded.ntotal if loaded.max_k is None else min(loaded.ntotal, loaded.max_k)
        raise UdfError(f"{function}: k must be an integer from 1 to {limit} (the index's limit), got {k!r}; e.g. 10")
    if not isinstance(target_recall, float | int) or not 0 < target_recall <= 1:
        raise UdfError(f"{function}: target_recall must be a number in (0, 1], got {target_recall!r}; e.g. 0.95")
    if not isinstance(query_count, int) or query_count < 1:
        raise UdfError(f"{function}: query_count must be at least 1, got {query_count!r}; e.g. 1000")
    if not isinstance(seed, int) or seed < 0:
        raise UdfError(f"{function}: seed must be a non-negative integer, got {seed!r}; e.g. 0")


def _query_set(
    loaded: LoadedIndex, queries: np.ndarray | None, query_source: str, query_count: int, seed: int, function: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """The queries a sweep uses (raw, not yet in index space) and their description for the profile."""
    count = min(query_count, max(MIN_ORACLE_QUERIES, ORACLE_MAX_PAIRS // loaded.ntotal))
    if count < query_count:
        logger.info("%s: %d vectors: the oracle uses %d queries, not %d", function, loaded.ntotal, count, query_count)
    if queries is None:
        offered = loaded.ntotal
        matrix = held_out_queries(loaded.vectors, min(count, loaded.ntotal), seed)
        source = f"held-out sample of vectors.npy, noise {QUERY_NOISE:g} x norm, rescaled"
    else:
        supplied = _check_supplied(queries, loaded.dimension, function)
        offered = len(supplied)
        matrix = _sample_supplied(supplied, count, seed)
        source = query_source
    described = {"source": source, "count": len(matrix), "offered": offered, "seed": seed,
                 "fingerprint": query_fingerprint(matrix)}
    return matrix, described


def tune(
    loaded: LoadedIndex,
    *,
    k: int = DEFAULT_K,
    target_recall: float = DEFAULT_TARGET_RECALL,
    queries: np.ndarray | None = None,
    query_source: str = "supplied by the caller",
    query_count: int = DEFAULT_QUERY_COUNT,
    seed: int = DEFAULT_SEED,
    function: str = "autotune",
) -> TuningResult:
    """Sweep ``loaded``'s search parameters, pick, write tuning.json and tuning.png, leave the pick applied.

    ``queries`` (n, d) are the user's query vectors; ``None`` samples held-out ones.  Searches
    running on ``loaded`` meanwhile see the parameters being measured (on GPU they wait).
    """
    _check_arguments(loaded, k, target_recall, query_count, seed, function)
    started = time.perf_counter()
    raw_queries, query_description = _query_set(loaded, queries, query_source, query_count, seed, function)
    queries_in_index_space = _index_space(loaded, raw_queries)
    space = parameter_space(loaded, function)
    with loaded.search_lock or contextlib.nullcontext():
        with progress.stage(f"{function}: exact neighbours of {len(raw_queries)} queries over {loaded.ntotal} vectors"):
            truth = exact_neighbours(loaded, queries_in_index_space, k)
        faiss.omp_set_num_threads(loaded.lone_search_threads)
        space.set_index_parameters(loaded.index, space.n_combinations() - 1)  # warm up on the widest search
        loaded.index.search(queries_in_index_space[:BATCH_QUERIES], k)
        hits, batch_seconds = _batched_sweep(loaded, space, queries_in_index_space, truth, k, function)
        single_seconds = _single_query_seconds(loaded, space, queries_in_index_space[:SINGLE_QUERY_SAMPLE], k,
                                               function)
        recall = hits / (len(raw_queries) * k)
        picked, target_met, pareto = _pick(space, recall, batch_seconds.sum(axis=0), target_recall)
        space.set_index_parameters(loaded.index, picked)

    grid = _grid(loaded, space, recall, batch_seconds, single_seconds, pareto, picked, target_recall,
                 len(raw_queries), function)
    chosen = grid[picked]
    note = _note(loaded, chosen, target_met, k, target_recall, len(grid))
    tune_seconds = round(time.perf_counter() - started, 3)
    plot_path = loaded.directory / PLOT_FILE
    write_plot(plot_path, grid, chosen, k, target_recall, f"{loaded.manifest['factory']}, {loaded.ntotal} vectors")
    profile, profile_path = save_profile(loaded, {
        "target_met": target_met,
        "note": note,
        "parameter_space": parameter_ranges(space),
        "untuned_parameters": loaded.manifest["search_parameters"],
        "k": k,
        "target_recall": target_recall,
        "picked": dataclasses.asdict(chosen),
        "grid": [dataclasses.asdict(point) for point in grid],
        "oracle": _oracle_description(loaded, len(raw_queries)),
        "queries": query_description,
        "timing": {
            "threads": loaded.lone_search_threads,
            "device": loaded.device,
            "batch_queries": BATCH_QUERIES,
            "single_query_sample": int(single_seconds.shape[1]),
            "picked_by": "least total batched search time among the Pareto points reaching the target "
            "(faiss.OperatingPoints)",
        },
        "plot": PLOT_FILE,
        "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tune_seconds": tune_seconds,
        "libraries": {"faiss": faiss.__version__, "numpy": np.__version__, "duckdb": duckdb.__version__,
                      "matplotlib": importlib.metadata.version("matplotlib")},
    })
    logger.info("%s: index version %s: %s (%.1f s)", function, loaded.version, note, tune_seconds)
    return TuningResult(tuple(grid), chosen, target_met, note, profile, profile_path, plot_path)


def _grid(
    loaded: LoadedIndex,
    space: faiss.ParameterSpace,
    recall: np.ndarray,
    batch_seconds: np.ndarray,
    single_seconds: np.ndarray,
    pareto: set[int],
    picked: int,
    target_recall: float,
    queries: int,
    function: str,
) -> list[GridPoint]:
    defaults = _build_defaults(loaded, function)
    batch_rows = np.minimum(BATCH_QUERIES, queries - BATCH_QUERIES * np.arange(batch_seconds.shape[0]))
    batch_ms_per_query = 1000 * batch_seconds / batch_rows[:, None]
    grid = []
    for combination in range(space.n_combinations()):
        values = _point_values(space, combination, function)
        point_recall = float(recall[combination])
        low, high = (1.0, 1.0) if loaded.family == "flat" else wilson_interval(point_recall, queries)
        grid.append(
            GridPoint(
                parameters=format_parameters(values),
                recall_at_k=point_recall,
                recall_low=low,
                recall_high=high,
                single_mean_ms=float(1000 * single_seconds[combination].mean()),
                single_p95_ms=float(1000 * np.percentile(single_seconds[combination], 95)),
                batch_mean_ms=float(1000 * batch_seconds[:, combination].sum() / queries),
                batch_p95_ms=float(np.percentile(batch_ms_per_query[:, combination], 95)),
                pareto=combination in pareto,
                build_default=values == defaults,
                meets_target=point_recall >= target_recall,
                picked=combination == picked,
            )
        )
    return grid


def _note(loaded: LoadedIndex, chosen: GridPoint, target_met: bool, k: int, target_recall: float, points: int) -> str:
    if loaded.family == "flat":
        return "Flat search is exact: nothing to tune (recall is 1 by construction); the profile records its latency"
    if target_met:
        return (
            f"picked {chosen.parameters}: the fastest of {points} points with recall@{k} >= {target_recall:g} "
            f"({chosen.recall_at_k:.4f}, 95% CI {chosen.recall_low:.4f}-{chosen.recall_high:.4f})"
        )
    return (
        f"target recall@{k} >= {target_recall:g} NOT reached by any of the {points} points; picked the best "
        f"recall instead: {chosen.parameters} ({chosen.recall_at_k:.4f}, 95% CI {chosen.recall_low:.4f}-"
        f"{chosen.recall_high:.4f}); lower the target or rebuild with more lists/links"
    )


def _oracle_description(loaded: LoadedIndex, queries: int) -> dict[str, Any]:
    if loaded.family == "flat":
        return {"method": "none needed: the Flat index is exact search over vectors.npy", "queries": queries}
    return {
        "method": "exact top-k over vectors.npy "
        "(faiss.contrib.exhaustive_search.knn_ground_truth: IndexFlat block by block)",
        "metric": loaded.metric,
        "queries": queries,
        "vectors": loaded.ntotal,
        "confidence": CONFIDENCE,
        "interval": "Wilson score at n = queries, per grid point (recall_low, recall_high); conservative "
        "because per-query recall lies in [0, 1]",
    }


# --------------------------------------------------------------------------- files


def write_plot(path: Path, grid: list[GridPoint], picked: GridPoint, k: int, target_recall: float, title: str) -> None:
    """Recall@k against per-query latency (single and batched) for every point, the pick starred."""
    # Imported here: matplotlib takes a noticeable part of a second to import, which only a
    # sweep should pay, not every connect().  The Agg canvas renders without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    recall = [point.recall_at_k for point in grid]
    for attribute, marker, label in (
        ("single_mean_ms", "o", "one query per call (mean)"),
        ("batch_mean_ms", "s", f"{BATCH_QUERIES} queries per call (mean per query)"),
    ):
        axes.scatter(recall, [getattr(point, attribute) for point in grid], marker=marker, alpha=0.6, label=label)
        axes.scatter([picked.recall_at_k], [getattr(picked, attribute)], marker="*", s=300, color="red",
                     edgecolors="black", zorder=3)
    front = sorted((point for point in grid if point.pareto), key=lambda point: point.recall_at_k)
    axes.plot([point.recall_at_k for point in front], [point.batch_mean_ms for point in front], color="grey",
              linewidth=0.8, label="Pareto front (batched)")
    for point in front:
        axes.annotate(point.parameters, (point.recall_at_k, point.batch_mean_ms), textcoords="offset points",
                      xytext=(4, -10), fontsize="x-small", color="dimgrey")
    axes.annotate(f"picked: {picked.parameters or 'Flat (exact)'}", (picked.recall_at_k, picked.single_mean_ms),
                  textcoords="offset points", xytext=(-10, 12), ha="right")
    axes.axvline(target_recall, linestyle="--", color="grey", label=f"target recall@{k} = {target_recall:g}")
    axes.set_yscale("log")
    axes.set_xlabel(f"recall@{k} against exact search")
    axes.set_ylabel("latency per query (ms)")
    axes.set_title(f"autotune: {title} ({len(grid)} points)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        figure.savefig(temporary, format="png", bbox_inches="tight")  # keep labels at the edges
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

"""``auto`` by measurement: build the candidate families on a sample of the store, time them, pick.

Size thresholds alone chose HNSW at 200k vectors (build 97 s, 5.3x DuckDB vss's batched QPS)
where IVF-SQ built in 21 s and served 9.1x at a higher recall (BENCHMARKS.md).  So
:func:`measure` builds every candidate family the way the real build would (the factory
string :func:`udfs.faiss_build.plan_index` makes for the sample, the same ``train_and_add``
and build threads) on a seeded sample of ``SAMPLE_VECTORS`` store vectors, and for each:

* sweeps its search parameter (nprobe, efSearch) until recall@k against exact numpy search
  over the sample reaches the target, with held-out store vectors as queries;
* times batched ``index.search`` calls of those queries at that setting, the candidates taken
  round-robin so that other work on the machine slows them alike (fastest run: queries per second);
* does so on two samples, a quarter of ``SAMPLE_VECTORS`` and all of it, and projects build
  seconds and QPS to the store's size with the power law through the two points.  The
  exponents are clipped to what each family's structure allows (``_EXPONENTS``): IVF (nlist
  ~ sqrt(n)) loses QPS at least as sqrt(n) (same nprobe) and at most as n (same share of the
  lists probed), HNSW at most as sqrt(n); builds grow at least linearly.  Small samples are
  noisy (a sample's nlist can match the data's clusters, so nprobe 1 suffices), and the clip
  keeps such a sample from promising more than the structure can give.

:func:`choose` decides, build first: the projections from samples 100 times smaller than the
store are rough, QPS the roughest.  At 1M vectors they promised HNSW 20k and IVF-Flat 16k q/s;
built, HNSW served 2.7k q/s after 430 s of building and IVF-Flat 4.2k after 35 s
(BENCHMARKS.md, issue 15): QPS was off by 4-7x, builds by 3-4x, while the families' builds
differ by 5-20x.  So among the families meeting the target, those whose build on the larger
sample took at most ``BUILD_TIE`` times the cheapest (the projection stretches tens of
milliseconds of noise, so builds are compared as measured); of those, QPS within ``QPS_TIE``
of the best counts as a tie, and the one whose search reads the fewest bytes per scanned vector
wins (the samples sit in cache and cannot show a memory-bound scan: IVF-SQ served 1.3-1.6x
IVF-Flat at 200k and 1M where the samples had them within 10%), then the highest projected QPS.
The figures go into the manifest under ``auto_measurement``.  They are wall-clock timings on
the building machine: on a busy machine two close families may swap between builds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger("codeintel.faiss")

#: Vectors in the larger measuring sample (the smaller holds a quarter of them).
SAMPLE_VECTORS = 10_000
#: Held-out store vectors used as queries (not in either sample).
QUERY_VECTORS = 500
#: Among the cheap builds, projected QPS this close to the best counts as a tie (see choose).
QPS_TIE = 0.5
#: Sample builds within this factor of the cheapest count as equally cheap.
BUILD_TIE = 2.0
#: ... and so do all sample builds under this many seconds: their timings are noise (IVF-SQ's
#: 10k-vector build measured 0.17 s and 0.38 s in runs minutes apart, IVF-Flat's 0.13-0.15 s,
#: HNSW's 2.6-2.7 s; built at 1M both IVF families take under a minute).
BUILD_FLOOR_S = 0.5
#: Search-parameter sweeps, cheapest first.
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)
#: Timed batched searches per measured point: at least MIN, then more up to MAX until MIN_TIMED_SECONDS.
MIN_TIMED_RUNS, MAX_TIMED_RUNS, MIN_TIMED_SECONDS = 3, 30, 0.2


@dataclasses.dataclass(frozen=True)
class Measured:
    """One family on one sample: build seconds, and QPS and recall at the cheapest setting meeting the target."""

    family: str
    sample: int
    dimension: int
    factory: str
    build_s: float
    search_parameters: str
    recall: float
    #: Bytes of the codes a search reads per vector it scans (the IVF lists', the HNSW storage's).
    code_bytes: int
    qps: float


def _exact_ids(queries: np.ndarray, vectors: np.ndarray, metric: str, k: int) -> np.ndarray:
    if metric == "l2":
        scores = 2 * queries @ vectors.T - np.einsum("ij,ij->i", vectors, vectors)[None, :]
    else:
        scores = queries @ vectors.T  # 'cos' inputs are normalised by the caller
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return top


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k: the share of each query's exact top k found (ids -1 never match a row)."""
    return float((found[:, :, None] == truth[:, None, :]).any(axis=2).mean())


def _sweep(family: str, nlist: int | None) -> list[tuple[str, float]]:
    if family in ("ivf_flat", "ivf_sq", "ivf_pq", "ivf_pq_refine"):
        return [("nprobe", p) for p in NPROBES if nlist is None or p <= nlist]
    if family == "hnsw":
        return [("efSearch", ef) for ef in EF_SEARCHES]
    return [("", 0)]


#: Builds ``family`` on a sample as the real build would: (the index, its factory string, its nlist or None).
SampleBuilder = Callable[[str, np.ndarray], tuple[faiss.Index, str, "int | None"]]


def _code_bytes(index: faiss.Index) -> int:
    """Bytes per stored vector that a search compares against: the inverted lists' codes for an
    IVF index, the flat storage's for HNSW (its graph links come on top), the codes otherwise."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    try:
        return int(faiss.extract_index_ivf(index).code_size)
    except RuntimeError:
        pass
    storage = getattr(index, "storage", None)
    return int(faiss.downcast_index(storage).code_size if storage is not None else index.code_size)


def _built(family: str, sample: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int,
           build: SampleBuilder, target_recall: float) -> tuple[faiss.Index, dict[str, Any]]:
    """``family`` built on ``sample``, at its cheapest setting meeting the target."""
    started = time.perf_counter()
    index, factory, nlist = build(family, sample)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    space = faiss.ParameterSpace()
    setting, recall = "", 0.0
    for name, value in _sweep(family, nlist):
        if name:
            space.set_index_parameter(index, name, value)
        _, labels = index.search(queries, k)
        recall = _recall(labels, truth)
        setting = f"{name}={value:g}" if name else ""
        if recall >= target_recall:
            break
    return index, {"family": family, "sample": len(sample), "dimension": sample.shape[1], "factory": factory,
                   "build_s": round(build_s, 4), "search_parameters": setting, "recall": round(recall, 4),
                   "code_bytes": _code_bytes(index)}


def _timed(indexes: dict[str, faiss.Index], queries: np.ndarray, k: int) -> dict[str, float]:
    """Batched QPS of each index: searches taken round-robin, so other work on the machine slows
    them alike, and the fastest run of each kept (that work only ever slows a run down)."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    runs: dict[str, list[float]] = {family: [] for family in indexes}
    while True:
        for family, index in indexes.items():
            started = time.perf_counter()
            index.search(queries, k)
            runs[family].append(time.perf_counter() - started)
        done = len(next(iter(runs.values())))
        spent = sum(sum(values) for values in runs.values())
        if done >= MAX_TIMED_RUNS or (done >= MIN_TIMED_RUNS and spent >= MIN_TIMED_SECONDS * len(indexes)):
            return {family: len(queries) / min(values) for family, values in runs.items()}


def _measure(candidates: tuple[str, ...], sample: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int,
             build: SampleBuilder, target_recall: float) -> dict[str, Measured]:
    built = {family: _built(family, sample, queries, truth, k, build, target_recall) for family in candidates}
    qps = _timed({family: index for family, (index, _) in built.items()}, queries, k)
    return {family: Measured(**facts, qps=round(qps[family], 1)) for family, (_, facts) in built.items()}


#: (lowest, highest) exponent of build seconds and of 1 / QPS in the store size, per family.
_EXPONENTS = {
    "hnsw": ((1.0, 1.5), (0.0, 0.5)),
    "ivf": ((1.0, 1.5), (0.5, 1.0)),
}


def _power_law(small: float, large: float, small_n: int, large_n: int, n: int, bounds: tuple[float, float]) -> float:
    """The power law through (small_n, small) and (large_n, large), at n, its exponent clipped to ``bounds``."""
    exponent = math.log(large / small) / math.log(large_n / small_n) if small > 0 and large > 0 else bounds[0]
    return large * (n / large_n) ** min(max(exponent, bounds[0]), bounds[1])


def measure(vectors: np.ndarray, candidates: tuple[str, ...], build: SampleBuilder, *, metric: str = "ip",
            k: int = 10, target_recall: float = 0.95, build_threads: int = 1, seed: int = 0) -> dict[str, Any]:
    """Measure ``candidates`` on samples of ``vectors``; return the choice and every figure behind it."""
    ntotal = len(vectors)
    rng = np.random.default_rng(seed)
    held_out = min(QUERY_VECTORS, max(1, ntotal // 10))
    order = rng.permutation(ntotal)
    queries = np.ascontiguousarray(vectors[np.sort(order[:held_out])], dtype=np.float32)
    if metric == "cos":
        faiss.normalize_L2(queries)
    large_n = min(SAMPLE_VECTORS, ntotal - held_out)
    sizes = (max(4 * k, large_n // 4), large_n)
    samples = []
    for size in sizes:
        sample = np.ascontiguousarray(vectors[np.sort(order[held_out : held_out + size])], dtype=np.float32)
        oracle = sample
        if metric == "cos":
            oracle = sample.copy()
            faiss.normalize_L2(oracle)
        samples.append((sample, _exact_ids(queries, oracle, metric, k)))
    started = time.perf_counter()
    figures: list[dict[str, Any]] = []
    small_all, large_all = (_measure(candidates, sample, queries, truth, k, build, target_recall)
                            for sample, truth in samples)
    for family in candidates:
        small, large = small_all[family], large_all[family]
        build_bounds, qps_bounds = _EXPONENTS["hnsw" if family == "hnsw" else "ivf"]
        build_s = _power_law(small.build_s, large.build_s, small.sample, large.sample, ntotal, build_bounds)
        qps = 1 / _power_law(1 / small.qps, 1 / large.qps, small.sample, large.sample, ntotal, qps_bounds)
        entry = {
            "family": family,
            "samples": [dataclasses.asdict(small), dataclasses.asdict(large)],
            "meets_target": small.recall >= target_recall and large.recall >= target_recall,
            "projected_build_s": round(build_s, 2),
            "projected_qps": round(qps, 1),
        }
        figures.append(entry)
        logger.info("faiss_build auto: %s on %d / %d vectors: %s / %s recall %.3f / %.3f, %.0f / %.0f q/s, "
                    "build %.2f / %.2f s; projected to %d: %.0f q/s, build %.1f s",
                    family, small.sample, large.sample, small.search_parameters, large.search_parameters,
                    small.recall, large.recall, small.qps, large.qps, small.build_s, large.build_s,
                    ntotal, qps, build_s)
    chosen = choose(figures)
    return {
        "chosen": chosen["family"],
        "rule": (f"among the families at recall@{k} >= {target_recall} whose build on the larger sample took at "
                 f"most {BUILD_TIE:g}x the cheapest (or {BUILD_TIE * BUILD_FLOOR_S:g} s), those whose projected "
                 f"batched QPS is within {QPS_TIE:.0%} of the best of them; of those the fewest code bytes per "
                 "scanned vector, then the highest projected QPS"),
        "k": k,
        "target_recall": target_recall,
        "ntotal": int(ntotal),
        "samples": [int(size) for size in sizes],
        "queries": int(held_out),
        "build_threads": int(build_threads),
        "measure_seconds": round(time.perf_counter() - started, 2),
        "candidates": figures,
    }


def choose(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate ``auto`` builds, from :func:`measure`'s per-family figures (see the module's rule).

    Build first: among the families meeting the recall target (all of them when none does), those
    whose build on the larger sample took at most ``BUILD_TIE`` times the cheapest (or than
    ``BUILD_FLOOR_S``, below which timings are noise).  A family
    that builds ten times longer is not bought with a projected QPS gain, which is the roughest
    figure here: at 1M vectors HNSW's 10k-vector sample projected 6.4k-10.8k q/s in three quiet
    runs and over twice IVF-SQ's in a busy one, which built HNSW for more than 10 minutes where
    IVF-SQ takes under one (BENCHMARKS.md, issue 15).
    """
    meeting = [entry for entry in figures if entry["meets_target"]] or figures
    cheapest = min(entry["samples"][-1]["build_s"] for entry in meeting)
    limit = BUILD_TIE * max(cheapest, BUILD_FLOOR_S)
    cheap = [entry for entry in meeting if entry["samples"][-1]["build_s"] <= limit]
    # QPS within QPS_TIE of the best of those counts as a tie (the projections are rough), and
    # among the tied the one reading the fewest bytes per scanned vector wins, then the highest
    # projected QPS.  A 10k-vector sample sits in cache, so the samples cannot see what the
    # store's size does to a memory-bound list scan: IVF-SQ (2 bytes a dimension) and IVF-Flat
    # (4) measured within 10% of each other on every sample, while built at 200k and 1M IVF-SQ
    # served 1.3-1.6x IVF-Flat's batched QPS at the same recall and build time (BENCHMARKS.md).
    best = max(entry["projected_qps"] for entry in cheap)
    close = [entry for entry in cheap if entry["projected_qps"] >= (1 - QPS_TIE) * best]
    return min(close, key=lambda entry: (entry["samples"][-1]["code_bytes"], -entry["projected_qps"]))


def summary(measurement: dict[str, Any]) -> str:
    """One line for family_reason: the chosen family's figures against the runner-up's."""
    by_family = {entry["family"]: entry for entry in measurement["candidates"]}
    chosen = by_family[measurement["chosen"]]
    others = sorted((entry for entry in measurement["candidates"] if entry is not chosen),
                    key=lambda entry: -entry["projected_qps"])
    text = (f"auto: measured on samples of {measurement['samples'][0]} and {measurement['samples'][1]} vectors "
            f"({measurement['measure_seconds']:.1f} s): {chosen['family']} projects "
            f"{chosen['projected_qps']:.0f} q/s at recall@{measurement['k']} >= {measurement['target_recall']} "
            f"over {measurement['ntotal']} vectors, build ~{chosen['projected_build_s']:.0f} s")
    if others:
        runner = others[0]
        text += (f"; next {runner['family']} {runner['projected_qps']:.0f} q/s, "
                 f"build ~{runner['projected_build_s']:.0f} s"
                 + ("" if runner["meets_target"] else " (misses the target)"))
    return text + " (manifest auto_measurement)"

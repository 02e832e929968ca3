"""Flat or HNSW coarse quantizer for IVF: one query's search, batched QPS, recall and build time.

A one-query ``faiss_search`` statement spends most of its ``index.search`` finding the lists to
probe: a flat quantizer scans all nlist centroids (2.7 MB at 200k x 384, 6 MB at 1M), and between
two statements of a dashboard or a report other work has pushed them out of cache.  ``plan_index``
gives IVF builds of 1024+ lists an HNSW graph over the centroids (``IVF<n>_HNSW32``,
udfs/faiss_build.py ``HNSW_QUANTIZER_MIN_NLIST``); this script measures that choice against the
flat quantizer (the plan of a GPU build) on ``bench_search.py``'s synthetic sets.

Both indexes are ``plan_index("ivf_sq", n, 384)`` factories, trained on the same sample; each is
searched at the cheapest nprobe reaching recall@10 >= 0.95 on 2,000 held-out queries.  Single
query: ``index.search`` of one vector on one OpenMP thread (as ``LoadedIndex.search`` does), 16 MB
read between queries so the centroids are not left in cache by the previous query; the two
indexes alternate query by query.  Batched: 2,000 queries in one call on 2 threads, median of 3.

    .venv/bin/python bench/bench_coarse_quantizer.py [--sizes 200000 1000000] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import adapters  # noqa: E402
from bench.common import CORES, DIM, RECALL_TARGET, K, log  # noqa: E402
from bench.datasets import synthetic_dataset  # noqa: E402
from bench.render import show, table  # noqa: E402
from codeintel.synthetic import SYNTHETIC_SEED  # noqa: E402

QUERIES = 2000
SINGLE_QUERIES = 600
CLUSTERS = 256
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
TITLE = "## Coarse quantizer: flat or HNSW (bench/bench_coarse_quantizer.py)"
QUANTIZERS = {"flat (GPU plan)": True, "HNSW32 (CPU plan)": False}  # name -> BuildOptions.use_gpu


def recall_of(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> float:
    labels = ids[index.search(queries, K)[1]]  # rows -> chunk ids, as the exact top-k holds them
    return sum(len(set(found) & set(expected)) for found, expected in zip(labels, truth, strict=True)) / truth.size


def run(n: int) -> list[dict[str, object]]:
    dataset = synthetic_dataset(n, CLUSTERS, SYNTHETIC_SEED)
    base = np.ascontiguousarray(dataset.vectors, dtype=np.float32)
    queries = dataset.queries(QUERIES)
    truth = dataset.truth(QUERIES)[0]
    indexes: dict[str, tuple[faiss.Index, dict[str, object]]] = {}
    for name, use_gpu in QUANTIZERS.items():
        plan = adapters.plan_index("ivf_sq", n, DIM, adapters.BuildOptions(use_gpu=use_gpu))
        sample = base[np.sort(np.random.default_rng(plan.build_parameters["seed"]).choice(
            n, plan.train_size, replace=False))]
        faiss.omp_set_num_threads(CORES)
        started = time.perf_counter()
        index = faiss.index_factory(DIM, plan.factory, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.add(base)
        build_s = time.perf_counter() - started
        ivf = faiss.extract_index_ivf(index)
        for nprobe in NPROBES:
            ivf.nprobe = nprobe
            recall = recall_of(index, queries, truth, dataset.ids)
            if recall >= RECALL_TARGET:
                break
        log(f"{n}: {plan.factory} built in {build_s:.1f} s; nprobe={ivf.nprobe} recall@10 {recall:.4f}")
        indexes[name] = (index, {"factory": plan.factory, "build_s": build_s, "nprobe": ivf.nprobe,
                                 "recall": recall, "single": [], "batched": []})
    flush = np.ones(4 << 20, dtype=np.float32)  # 16 MB
    for i in range(SINGLE_QUERIES):
        names = list(indexes) if i % 2 == 0 else list(reversed(indexes))
        for name in names:
            index, row = indexes[name]
            flush.sum()
            query = queries[i % QUERIES][None].copy()
            faiss.omp_set_num_threads(1)
            started = time.perf_counter()
            index.search(query, K)
            row["single"].append((time.perf_counter() - started) * 1000)
    faiss.omp_set_num_threads(CORES)
    for _ in range(3):
        for index, row in indexes.values():
            started = time.perf_counter()
            index.search(queries, K)
            row["batched"].append(QUERIES / (time.perf_counter() - started))
    return [{"n": n, "quantizer": name, **row} for name, (_, row) in indexes.items()]


def render(rows: list[dict[str, object]]) -> str:
    cells = []
    for row in rows:
        cells.append([f"{row['n']:,}", str(row["quantizer"]), f"`{row['factory']}`", f"nprobe={row['nprobe']}",
                      f"{row['recall']:.4f}", f"{statistics.median(row['single']):.3f}",
                      f"{np.percentile(row['single'], 90):.3f}", f"{statistics.median(row['batched']):,.0f}",
                      f"{row['build_s']:.1f}"])
    return "\n".join([
        TITLE, "",
        "`.venv/bin/python bench/bench_coarse_quantizer.py --sizes "
        + " ".join(sorted({str(row["n"]) for row in rows}, key=int)) + " --write`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {CORES} cores, faiss {faiss.__version__}.  "
        "IVF-SQ (fp16) on bench_search.py's synthetic sets, each at the cheapest nprobe with recall@10 >= "
        f"{RECALL_TARGET}; one query: `index.search` of one vector on 1 OpenMP thread with 16 MB read "
        f"between queries ({SINGLE_QUERIES} queries, the two indexes alternating); batched: {QUERIES:,} "
        f"queries in one call on {CORES} threads, median of 3; build: training and adding.", "",
        table(["vectors", "coarse quantizer", "factory", "setting", "recall@10", "one query p50 ms",
               "p90 ms", "batched QPS", "build s"], cells, "lllrrrrrr"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args()
    show(render([row for n in args.sizes for row in run(n)]), TITLE, args.write)


if __name__ == "__main__":
    main()

"""K-means iterations of an IVF build: training seconds against recall, on synthetic and real code embeddings.

An ``ivf_sq`` build at 200k vectors spends about half its time training the coarse quantizer:
k-means on ``train_size`` vectors (39 per list) for FAISS's default of 10 iterations
(``IndexIVF.cp.niter``).  Fewer iterations would make every build cheaper, so this script
measures what they cost in recall before that default is changed, on two sets:

* ``synthetic``: bench_search.py's 200k clustered unit vectors (256 clusters, isotropic noise),
  the set bench_latency.py builds and times;
* ``stdlib static-code``: the Python standard library cut at line ends into pieces of about
  ``PIECE_CHARS`` characters, embedded by the packaged static-code model (real code embeddings,
  what an ingest with the default embedder stores); 1,000 pieces held out as queries.

Each set is built as ``faiss_build`` builds ``ivf_sq`` (``plan_index`` and ``train_and_add``, the
``kmeans_iterations`` option at each count, the same seed and so the same training sample);
recall@10 against exact search at each nprobe of ``NPROBES``, and the seconds of training and
adding (2 OpenMP threads, as a build on this machine runs; adding costs the same at every count).
Recall moves by about a point between training samples, as much as between iteration counts, so
each set is measured with
``SEEDS`` training samples (and, for the stdlib set, query splits), and the table gives the mean
and the range.

    .venv/bin/python bench/bench_kmeans_iterations.py [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import adapters  # noqa: E402
from bench.common import CORES, K, log  # noqa: E402
from bench.datasets import stdlib_code_pieces, synthetic_dataset  # noqa: E402
from bench.render import show, table  # noqa: E402
from codeintel.synthetic import SYNTHETIC_SEED  # noqa: E402
from udfs.embedding import PACKAGED_STATIC_MODEL  # noqa: E402
from udfs.static_embedder import StaticEmbedder  # noqa: E402

TITLE = "## K-means iterations of an IVF build (bench/bench_kmeans_iterations.py)"
ITERATIONS = (10, 5)
NPROBES = (2, 4, 6, 8, 12, 16, 24)
QUERIES = 2000
SEEDS = (1234, 1, 2)
PIECE_CHARS = 200
SYNTHETIC_SIZE = 200_000
EMBED_BATCH = 20_000


Split = tuple[np.ndarray, np.ndarray]  # (store vectors, query vectors)


def synthetic_set() -> tuple[str, dict[int, Split]]:
    """The synthetic set's store and its held-out queries (the same split for every seed)."""
    dataset = synthetic_dataset(SYNTHETIC_SIZE, 256, SYNTHETIC_SEED)
    split = (np.ascontiguousarray(dataset.vectors, np.float32), dataset.queries(QUERIES))
    return "synthetic (isotropic)", {seed: split for seed in SEEDS}


def stdlib_set() -> tuple[str, dict[int, Split]]:
    """The stdlib pieces' embeddings, split into store and queries anew for each seed."""
    pieces = stdlib_code_pieces(PIECE_CHARS)
    embedder = StaticEmbedder(PACKAGED_STATIC_MODEL)
    vectors = np.concatenate([embedder.embed(pieces[start : start + EMBED_BATCH])
                              for start in range(0, len(pieces), EMBED_BATCH)]).astype(np.float32)
    splits = {}
    for seed in SEEDS:
        order = np.random.default_rng(seed).permutation(len(vectors))
        splits[seed] = (np.ascontiguousarray(vectors[np.sort(order[QUERIES:])]),
                        np.ascontiguousarray(vectors[order[:QUERIES]]))
    return "stdlib static-code", splits


def recall(labels: np.ndarray, truth: np.ndarray) -> float:
    return float((labels[:, :, None] == truth[:, None, :]).any(axis=2).mean())


def measured(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, plan: adapters.IndexPlan
             ) -> tuple[float, list[float]]:
    """(seconds of training and adding, recall@k per nprobe) of the build ``plan`` over ``base``."""
    snapshot = adapters.StoreSnapshot("bench", "", np.arange(len(base), dtype=np.int64), base, 0)
    started = time.perf_counter()
    index = adapters.train_and_add(plan, snapshot, CORES)
    build_s = time.perf_counter() - started
    ivf = faiss.extract_index_ivf(index)
    recalls = []
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        recalls.append(recall(index.search(queries, K)[1], truth))  # ids are rows of base
    return build_s, recalls


def run(name: str, splits: dict[int, Split]) -> list[dict[str, object]]:
    faiss.omp_set_num_threads(CORES)
    runs: dict[int, list[tuple[float, list[float]]]] = {niter: [] for niter in ITERATIONS}
    for seed, (base, queries) in splits.items():
        n, dimension = base.shape
        exact = faiss.IndexFlatIP(dimension)
        exact.add(base)
        truth = exact.search(queries, K)[1]
        for niter in ITERATIONS:
            plan = adapters.plan_index("ivf_sq", n, dimension,
                                       adapters.BuildOptions(seed=seed, kmeans_iterations=niter))
            build_s, recalls = measured(base, queries, truth, plan)
            log(f"{name}, seed {seed}: kmeans_iterations={niter} built in {build_s:.2f} s; recall@{K} "
                + ", ".join(f"nprobe={p} {r:.3f}" for p, r in zip(NPROBES, recalls, strict=True)))
            runs[niter].append((build_s, recalls))
    return [{"set": name, "n": n, "dimension": dimension, "factory": plan.factory, "train_size": plan.train_size,
             "niter": niter, "build_s": [build_s for build_s, _ in measured_runs],
             "recalls": np.array([recalls for _, recalls in measured_runs])}
            for niter, measured_runs in runs.items()]


def render(rows: list[dict[str, object]]) -> str:
    def spread(values: np.ndarray, digits: int) -> str:
        return f"{values.mean():.{digits}f} ({values.min():.{digits}f}-{values.max():.{digits}f})"

    cells = [[str(row["set"]), f"{row['n']:,} x {row['dimension']}", f"`{row['factory']}`", f"{row['train_size']:,}",
              str(row["niter"]), spread(np.array(row["build_s"]), 2),
              *(spread(column, 3) for column in np.asarray(row["recalls"]).T)] for row in rows]
    return "\n".join([
        TITLE, "",
        "`.venv/bin/python bench/bench_kmeans_iterations.py --write`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{CORES} cores, faiss {faiss.__version__}.  `ivf_sq` built as faiss_build builds it (`plan_index`, "
        f"`train_and_add`) at each `kmeans_iterations`; build: training and adding; recall@{K} of "
        f"{QUERIES:,} held-out queries against exact "
        f"search, mean (range) over {len(SEEDS)} training samples (stdlib: and query splits); "
        f"stdlib pieces of about {PIECE_CHARS} characters "
        "embedded by the packaged static-code model.", "",
        table(["set", "vectors", "factory", "training vectors", "kmeans_iterations", "build s",
               *(f"nprobe={p}" for p in NPROBES)], [*cells], "lllrrr" + "r" * len(NPROBES)),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args()
    show(render([row for make in (synthetic_set, stdlib_set) for row in run(*make())]), TITLE, args.write)


if __name__ == "__main__":
    main()

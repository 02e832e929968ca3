"""Which FAISS family should ``auto`` build for a million vectors? IVF families on two 1M sets.

bench_search.py's default set is clustered vectors with isotropic noise: product
quantization's worst case (every direction carries equal noise, so 8-dimension sub-quantizers
resolve little).  Real sentence embeddings are far from isotropic.  This script also draws the
set of ``bench.datasets.real_spectrum_vectors`` (cluster centres and offsets with the mean and
covariance of the demo store's MiniLM vectors; ``bench_search.py --noise real-spectrum`` runs it
through SQL and against vss), and runs both sets through the IVF families
``auto`` could pick at this size, built from ``plan_index`` factory strings (``bench.adapters``) on
the same training sample.  Direct ``index.search`` on 2 OpenMP threads, no SQL: bench_search.py
shows faiss_topk within 1.00-1.11x of it at 1M.  For each family the cheapest setting (nprobe,
and k_factor_rf for the refine) with recall@10 >= 0.95 wins; QPS is the median of 3 runs.

    .venv/bin/python bootstrap.py demo                 # once: the real embeddings
    .venv/bin/python bench/bench_families.py [--n 1000000]
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
from bench.common import DIM, RECALL_TARGET, RESULTS, K, log  # noqa: E402
from bench.datasets import real_spectrum_vectors, synthetic_dataset  # noqa: E402
from bench.render import table  # noqa: E402
from codeintel.synthetic import SYNTHETIC_SEED  # noqa: E402

QUERIES = 2000
CLUSTERS = 256
FAMILIES = ("ivf_flat", "ivf_sq", "ivf_pq_refine")
NPROBES = (4, 6, 8, 12, 16, 24, 32)
REFINE_K_FACTORS = (4, 8, 16, 32, 64, 128, 256)
TRAIN_SAMPLE = 160_000


def datasets(n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    spectrum, note = real_spectrum_vectors(n + QUERIES, CLUSTERS, seed)
    isotropic = synthetic_dataset(n, CLUSTERS, SYNTHETIC_SEED)
    return {
        "real-spectrum": (spectrum[:n], spectrum[n:], note),
        "bench_search": (np.ascontiguousarray(isotropic.vectors, dtype=np.float32), isotropic.queries(QUERIES),
                         "bench_search.py's set: 256 clusters with isotropic noise (codeintel/synthetic.py)"),
    }


def measure(index: faiss.Index, queries: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        _, labels = index.search(queries, K)
        times.append(time.perf_counter() - started)
    hits = sum(len(set(found) & set(expected)) for found, expected in zip(labels, truth, strict=True))
    return hits / truth.size, len(queries) / statistics.median(times)


def settings_for(family: str) -> list[list[str]]:
    """Groups of ParameterSpace strings, cheapest first: a group stops at its first hit of the target."""
    if family == "ivf_pq_refine":
        return [[f"nprobe={p},k_factor_rf={f}" for f in REFINE_K_FACTORS] for p in NPROBES]
    return [[f"nprobe={p}" for p in NPROBES]]


def run(n: int, seed: int) -> list[dict[str, object]]:
    faiss.omp_set_num_threads(2)
    rows = []
    for name, (base, queries, description) in datasets(n, seed).items():
        log(f"{name}: {description}")
        exact = faiss.IndexFlatIP(DIM)
        exact.add(base)
        truth = exact.search(queries, K)[1]
        del exact
        sample = base[np.random.default_rng(seed).choice(n, min(n, TRAIN_SAMPLE), replace=False)]
        for family in FAMILIES:
            plan = adapters.plan_index(family, n, DIM, adapters.BuildOptions(train_sample=TRAIN_SAMPLE))
            started = time.perf_counter()
            index = faiss.index_factory(DIM, plan.factory, faiss.METRIC_INNER_PRODUCT)
            index.train(sample)
            index.add(base)
            build_s = time.perf_counter() - started
            space = faiss.ParameterSpace()
            best = None
            for group in settings_for(family):
                for params in group:
                    space.set_index_parameters(index, params)
                    recall, qps = measure(index, queries, truth)
                    log(f"  {plan.factory} {params}: recall@10 {recall:.4f}, {qps:,.0f} q/s")
                    if recall >= RECALL_TARGET:
                        if best is None or qps > best[2]:
                            best = (params, recall, qps)
                        break
            rows.append({"set": name, "family": family, "factory": plan.factory, "build_s": build_s,
                         "best": best, "description": description})
            del index
    return rows


def render(rows: list[dict[str, object]], n: int) -> str:
    cells = []
    for row in rows:
        params, recall, qps = row["best"] or ("target not reached", float("nan"), float("nan"))
        cells.append([str(row["set"]), str(row["family"]), f"`{row['factory']}`", params, f"{recall:.4f}",
                      f"{qps:,.0f}", f"{row['build_s']:.1f}"])
    out = [f"{n:,} vectors, {QUERIES:,} held-out queries, recall@10 against exact search; cheapest setting with "
           f"recall >= {RECALL_TARGET}, index.search on 2 threads:", "",
           table(["set", "family", "factory", "setting", "recall@10", "QPS", "build s"], cells, "llllrrr")]
    out += ["", *sorted({f"- {row['set']}: {row['description']}" for row in rows})]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors per set (default 1000000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    text = render(run(args.n, args.seed), args.n)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_families.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""FAISS as SQL: faiss_topk/faiss_search against direct faiss, DuckDB vss HNSW and brute-force SQL.

Datasets: clustered synthetic unit-norm vectors (``codeintel/synthetic.py:synthetic_chunks``,
``--sizes`` rows plus a held-out pool of 10,000 query vectors from the same generator,
cached under ``bench/results/data/``; isotropic cluster noise, or with ``--noise real-spectrum``
the mean and covariance of the demo store's real embeddings) and the real demo store (``demo_catalog/``; queries
are its symbol names, embedded).  Each dataset is imported as its own catalog under
``bench/results/catalogs/`` (``bench.adapters.import_chunks``); FAISS indexes are built there
(``bench.adapters.build_index``) and reused by later runs (``--rebuild`` builds them again).
Recall@k is against exact numpy brute force over the same vectors (ties with the k-th
score count as hits: the demo store holds duplicate chunks).

Per dataset:

1. recall sweeps per FAISS family (``--families``, default the one ``auto`` picks, ivf_flat,
   ivf_sq, hnsw: nprobe, efSearch, refine_k_factor), each point measured through SQL
   (``faiss_topk`` over a TEMP table of queries, run as run_script runs it: DuckDB on one
   thread) and with ``index.search`` on the same numpy queries; the cheapest
   setting with recall@10 >= 0.95 is then measured again: batched faiss_topk in three
   thread settings, LATERAL faiss_search, one-statement single queries, against
   index.search on 1 and on all cores (runs interleaved, medians, per-run ratios);
2. overhead diagnostics on the ``auto`` family: DuckDB ``threads`` x ``faiss_threads``,
   query source (DuckDB table, Arrow table in one or in 2048-row batches), no unnest,
   LATERAL, the UDF's Python body without DuckDB, and a prototype of the suggested fix
   (``bench.timing.spin_aware_searches``, in force only while those rows run); CPU seconds
   per thread show the Python client's busy-wait;
3. IVF-PQ + ``exact_rerank`` through ``faiss_search(k_factor := 1, 2, 4, ...)``;
4. brute-force SQL (ORDER BY array_inner_product LIMIT, QUALIFY row_number) on a small
   sample, and DuckDB vss HNSW (metric 'ip', hnsw_ef_search sweep) in an in-memory
   DuckDB, with EXPLAIN checks that the index is really used.

Run from the repository root; results go to ``bench/results/search_<dataset>.json`` and
``bench/results/bench_search.md`` (``--results-dir`` elsewhere) and the tables are printed.
Data sets: ``bench/datasets.py``; phases: ``bench/phases.py``; tables: ``bench/render.py``.

    .venv/bin/python bench/bench_search.py --sizes 200000 1000000
    .venv/bin/python bench/bench_search.py --quick          # smoke run, a minute or two
    .venv/bin/python bench/bench_search.py --sizes 200000 1000000 --render-only
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import adapters  # noqa: E402
from bench.common import RESULTS  # noqa: E402
from bench.datasets import QUERY_POOL, Dataset, demo_dataset, synthetic_dataset  # noqa: E402
from bench.phases import SYNTHETIC_FAMILIES, SearchConfig, faiss_phase, run_metadata, sql_baselines_phase  # noqa: E402
from bench.render import load_results, render, render_dataset, save  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[200_000], help="synthetic store sizes (default 200000)"
    )
    parser.add_argument("--queries", type=int, default=2000, help="queries per batch (<= 10000; default 2000)")
    parser.add_argument(
        "--overhead-queries", type=int, default=10_000, help="queries for the overhead diagnostics (default 10000)"
    )
    parser.add_argument("--single-queries", type=int, default=200, help="one-statement queries timed (default 200)")
    parser.add_argument("--brute-queries", type=int, default=20, help="queries for brute-force SQL (0: skip)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each final measurement (median)")
    parser.add_argument("--sweep-runs", type=int, default=3, help="timed runs per sweep point (median)")
    parser.add_argument("--clusters", type=int, default=256, help="clusters of the synthetic generator")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument(
        "--noise",
        choices=["isotropic", "real-spectrum"],
        default="isotropic",
        help="synthetic sets: isotropic cluster noise (default), or the covariance of the demo store's embeddings",
    )
    parser.add_argument("--skip-vss", action="store_true", help="skip the vss HNSW contender")
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo store")
    parser.add_argument(
        "--families",
        nargs="+",
        default=SYNTHETIC_FAMILIES,
        choices=["auto", *adapters.FAMILIES],
        help=f"FAISS builds measured on the synthetic sets (default {' '.join(SYNTHETIC_FAMILIES)}); "
        "overhead diagnostics need auto, the re-rank table ivf_pq",
    )
    parser.add_argument("--rebuild", action="store_true", help="build FAISS indexes again instead of reusing them")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS,
        help="results, cached data sets and their catalogs (default bench/results)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="print and write the tables from the saved JSON of --sizes (and demo), run nothing",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20000 vectors, 500 queries, few runs (overrides the sizes and counts)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.overhead_queries = [20_000], 500, 2000
        args.single_queries, args.brute_queries, args.runs, args.sweep_runs = 30, 5, 3, 1
    if not 1 <= args.queries <= QUERY_POOL or not 1 <= args.overhead_queries <= QUERY_POOL:
        parser.error(f"--queries and --overhead-queries must be in [1, {QUERY_POOL}]")
    return args


def search_config(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        queries=args.queries,
        overhead_queries=args.overhead_queries,
        single_queries=args.single_queries,
        brute_queries=args.brute_queries,
        runs=args.runs,
        sweep_runs=args.sweep_runs,
        clusters=args.clusters,
        seed=args.seed,
        noise=args.noise,
        skip_vss=args.skip_vss,
        families=tuple(args.families),
        rebuild=args.rebuild,
        results=args.results_dir,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = search_config(args)
    prefix = "synthetic" if config.noise == "isotropic" else "spectrum"
    names = ([] if args.skip_demo else ["demo"]) + [f"{prefix}_{n}" for n in args.sizes]
    summary = config.results / "bench_search.md"
    if args.render_only:
        all_results = load_results(names, config.results)
    else:
        meta = run_metadata(config, sys.argv[1:] if argv is None else argv)
        all_results = []
        datasets: list[Callable[[], Dataset | None]] = (
            [] if args.skip_demo else [lambda: demo_dataset(config.results)]
        )
        datasets += [
            lambda n=n: synthetic_dataset(n, config.clusters, config.seed, config.noise, config.results)
            for n in args.sizes
        ]
        for make in datasets:
            dataset = make()
            if dataset is None:
                continue
            results: dict[str, Any] = {"dataset": dataset.name, "description": dataset.description, "meta": meta}
            save(dataset.name, results, config.results)
            faiss_phase(dataset, config, results)
            sql_baselines_phase(dataset, config, results)
            results["meta"] = {**meta, "load_average_end": os.getloadavg()[0]}
            save(dataset.name, results, config.results)
            all_results.append(results)
            print(render_dataset(results), flush=True)
            summary.write_text(render(all_results))
            del dataset
            gc.collect()
    text = render(all_results)
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()

"""Autotune: time to tune, and what the picked point gives on queries it never saw.

Data: ``codeintel/synthetic.py:synthetic_chunks(n + FRESH_POOL, 384, clusters, seed)``, clustered
unit-norm vectors; the first n rows are the store, imported as a catalog under
``bench/results/autotune/`` and indexed as IVF-Flat (``nlist`` = 4 sqrt(n), the build's
default nprobe=16), the other FRESH_POOL rows are fresh queries from the same clusters that
autotune never sees.  Vectors, catalog and index are made once and reused (``--rebuild``).

Per size:

1. Time to tune: autotune's ``tune`` (k=10, target recall 0.95, 1000 held-out queries,
   the defaults of ``faiss_autotune()``) on a freshly loaded index, ``--runs`` times; median.
2. On the fresh queries (exact truth by ``faiss.knn``), recall@10 and per-query latency with
   one FAISS thread as served (batched: 64 queries per call, median of 3 passes; single: one
   call per query over 200 queries, mean) at: the picked point; the untuned build default;
   and the fastest nprobe of a manual sweep (every nprobe on a dense geometric grid up to
   4x the pick, on the fresh queries themselves) reaching (a) the pick's fresh recall and
   (b) the target.  These points are measured taking turns, pass by pass and query by query,
   so load from other work on the machine falls on all of them alike.

Results go to ``bench/results/autotune_<n>.json`` and the "## Autotune" section of
``BENCHMARKS.md`` (rebuilt from every results file there).  Run from the repository root:

    .venv/bin/python bench/bench_autotune.py --sizes 200000 1000000
    .venv/bin/python bench/bench_autotune.py --sizes 200000 --reuse-tuning   # re-measure step 2 only
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench import adapters  # noqa: E402
from bench.common import DIM, RESULTS, K, log, processor_name  # noqa: E402
from bench.datasets import synthetic_catalog_with_fresh_queries  # noqa: E402
from bench.render import write_section  # noqa: E402

WORK = RESULTS / "autotune"
SECTION = "## Autotune"
TARGET_RECALL = 0.95
FRESH_POOL = 1000
SINGLE_QUERIES = 200
BATCHED_PASSES = 3
MANUAL_GRID_POINTS = 40


def dataset(n: int, clusters: int, seed: int) -> tuple[Path, np.ndarray]:
    """The catalog of the first n synthetic rows (imported once) and the fresh query vectors."""
    return synthetic_catalog_with_fresh_queries(WORK / f"synthetic_{n}_d{DIM}_c{clusters}_s{seed}", n, FRESH_POOL,
                                                clusters, seed)


def ensure_index(catalog: Path, rebuild: bool) -> dict[str, Any]:
    current = adapters.current_version(catalog)
    if current is not None and not rebuild:
        return json.loads((catalog / "index" / "versions" / current / adapters.MANIFEST_FILE).read_text())
    log(f"building IVF-Flat over {catalog}")
    manifest = adapters.build_faiss_index(catalog, "ivf_flat")
    log(f"built {manifest['factory']} in {manifest['build_seconds']} s")
    return manifest


def fresh_load(catalog: Path) -> tuple[adapters.LoadedIndex, float]:
    started = time.perf_counter()
    loaded = adapters.load_current(adapters.catalog_context(catalog))
    return loaded, time.perf_counter() - started


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(row) & set(expected)) for row, expected in zip(found, truth, strict=True)) / truth.size


def batched_pass(loaded: adapters.LoadedIndex, queries: np.ndarray) -> tuple[float, np.ndarray]:
    """ms per query searching ``queries`` in autotune's batches (``TUNE_BATCH_QUERIES`` per call), and the labels."""
    found, seconds = [], 0.0
    for start in range(0, len(queries), adapters.TUNE_BATCH_QUERIES):
        started = time.perf_counter()
        _, labels = loaded.index.search(queries[start : start + adapters.TUNE_BATCH_QUERIES], K)
        seconds += time.perf_counter() - started
        found.append(labels)
    return 1000 * seconds / len(queries), np.vstack(found)


def measure(loaded: adapters.LoadedIndex, points: list[str], queries: np.ndarray,
            truth: np.ndarray) -> dict[str, dict[str, Any]]:
    """Recall@K and ms per query at each parameter string, with one FAISS thread as served.

    The points take turns within every pass and every single query, so drift in the load of
    this shared machine falls on all of them alike rather than on whichever ran last.
    """
    faiss.omp_set_num_threads(1)
    batched: dict[str, list[float]] = {point: [] for point in points}
    found: dict[str, np.ndarray] = {}
    for _ in range(BATCHED_PASSES):
        for point in points:
            loaded.set_parameters(point, "bench_autotune")
            milliseconds, found[point] = batched_pass(loaded, queries)
            batched[point].append(milliseconds)
    single: dict[str, list[float]] = {point: [] for point in points}
    for row in range(min(SINGLE_QUERIES, len(queries))):
        for point in points:
            loaded.set_parameters(point, "bench_autotune")
            started = time.perf_counter()
            loaded.index.search(queries[row : row + 1], K)
            single[point].append(1000 * (time.perf_counter() - started))
    return {
        point: {"parameters": point, "recall": recall_at_k(found[point], truth),
                "batch_ms": statistics.median(batched[point]), "single_ms": statistics.mean(single[point])}
        for point in points
    }


def manual_sweep(loaded: adapters.LoadedIndex, nlist: int, picked_nprobe: int, queries: np.ndarray,
                 truth: np.ndarray) -> list[dict[str, Any]]:
    """Recall of every nprobe of a dense geometric grid up to 4x the pick, the pick's among them
    (one batched pass each, a first latency figure)."""
    faiss.omp_set_num_threads(1)
    grid = {int(round(value)) for value in np.geomspace(1, min(nlist, 4 * picked_nprobe), MANUAL_GRID_POINTS)}
    sweep = []
    for nprobe in sorted(grid | {picked_nprobe}):
        loaded.set_parameters(f"nprobe={nprobe}", "bench_autotune")
        milliseconds, found = batched_pass(loaded, queries)
        sweep.append({"parameters": f"nprobe={nprobe}", "recall": recall_at_k(found, truth), "batch_ms": milliseconds})
    return sweep


def fastest_reaching(sweep: list[dict[str, Any]], recall: float) -> str | None:
    """The smallest nprobe reaching ``recall``: on IVF-Flat latency grows with nprobe."""
    reaching = [point for point in sweep if point["recall"] >= recall]
    return min(reaching, key=lambda point: float(point["parameters"].split("=")[1]))["parameters"] if reaching else None


def tuning_runs(catalog: Path, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--runs`` timed tunes of a freshly loaded index, or with ``--reuse-tuning`` the last recorded ones."""
    recorded = RESULTS / f"autotune_{n}.json"
    if args.reuse_tuning and recorded.exists():
        log(f"n={n}: reusing the tuning runs recorded in {recorded}")
        return json.loads(recorded.read_text())["tunes"]
    tunes = []
    for run in range(args.runs):
        loaded, load_seconds = fresh_load(catalog)
        started = time.perf_counter()
        result = adapters.tune(loaded, k=K, target_recall=TARGET_RECALL, function="bench_autotune")
        seconds = time.perf_counter() - started
        log(f"n={n} run {run + 1}: tuned in {seconds:.1f} s (load {load_seconds:.1f} s): {result.note}")
        tunes.append({"seconds": seconds, "load_seconds": load_seconds, "picked": result.picked.parameters,
                      "tuning_recall": result.picked.recall_at_k, "recall_low": result.picked.recall_low,
                      "recall_high": result.picked.recall_high, "grid_points": len(result.grid),
                      "target_met": result.target_met})
        del loaded
        gc.collect()
    return tunes


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    catalog, fresh = dataset(n, args.clusters, args.seed)
    manifest = ensure_index(catalog, args.rebuild)
    tunes = tuning_runs(catalog, n, args)
    loaded, _ = fresh_load(catalog)
    picked, default = tunes[-1]["picked"], manifest["search_parameters"]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, truth_rows = faiss.knn(fresh, np.asarray(loaded.vectors), K, faiss.METRIC_INNER_PRODUCT)
    truth = loaded.ids[truth_rows]
    sweep = manual_sweep(loaded, int(manifest["build_parameters"]["nlist"]), int(float(picked.split("=")[1])),
                         fresh, truth)
    picked_recall = next(point["recall"] for point in sweep if point["parameters"] == picked)
    manual = {"at_pick_recall": fastest_reaching(sweep, picked_recall),
              "at_target": fastest_reaching(sweep, TARGET_RECALL)}
    points = list(dict.fromkeys([picked, default, *(point for point in manual.values() if point)]))
    measured = measure(loaded, points, fresh, truth)
    log(f"n={n}: fresh recall at pick {measured[picked]['recall']:.4f}, default {measured[default]['recall']:.4f}")
    return {
        "n": n, "dimension": DIM, "clusters": args.clusters, "seed": args.seed,
        "factory": manifest["factory"], "build_seconds": manifest["build_seconds"],
        "default_parameters": default, "tunes": tunes,
        "tune_seconds_median": statistics.median(run["seconds"] for run in tunes),
        "fresh_queries": len(fresh), "at_pick": measured[picked], "at_default": measured[default],
        "manual": {label: measured[point] if point else None for label, point in manual.items()},
        "manual_sweep": sweep,
        "machine": {"cores": os.cpu_count(), "processor": processor_name(), "python": platform.python_version(),
                    "faiss": faiss.__version__},
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    machine = results[0]["machine"]
    lines = [
        SECTION,
        "",
        "`bench/bench_autotune.py`: IVF-Flat over clustered synthetic unit-norm 384-d vectors "
        f"({results[0]['clusters']} clusters), autotune at k=10, target recall 0.95, 1000 held-out tuning "
        f"queries (the `faiss_autotune()` defaults). {machine['cores']} cores ({machine['processor']}), "
        f"faiss {machine['faiss']}; latencies per query with one FAISS thread as served, batched = 64 queries "
        "per call (median of 3 passes), single = one call per query (mean of 200). Medians over the tuning runs. "
        "The machine is shared: other benchmarks ran at the same time, so absolute times are noisy.",
        "",
        "| vectors | index (build s) | tune s (median, runs) | picked (runs) | tuning recall@10 [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        tunes = result["tunes"]
        last = tunes[-1]
        lines.append(
            f"| {result['n']:,} | {result['factory']} ({float(result['build_seconds']):.0f}) | "
            f"{result['tune_seconds_median']:.1f} ({len(tunes)}) | "
            f"{', '.join(sorted({run['picked'] for run in tunes}))} | "
            f"{last['tuning_recall']:.4f} [{last['recall_low']:.4f}, {last['recall_high']:.4f}] |"
        )
    lines += [
        "",
        f"On {results[0]['fresh_queries']} fresh queries (never seen by autotune), recall@10 and ms per query:",
        "",
        "| vectors | point | parameters | recall@10 | batched ms | single ms | batched time / pick's |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        pick = result["at_pick"]
        rows = [("autotune pick", pick), ("untuned default", result["at_default"]),
                ("manual sweep, same recall as pick", result["manual"]["at_pick_recall"]),
                ("manual sweep, recall >= 0.95", result["manual"]["at_target"])]
        for label, point in rows:
            if point is None:
                lines.append(f"| {result['n']:,} | {label} | none reached | - | - | - | - |")
                continue
            factor = "same point" if point["parameters"] == pick["parameters"] else (
                f"{point['batch_ms'] / pick['batch_ms']:.2f}")
            lines.append(
                f"| {result['n']:,} | {label} | {point['parameters']} | {point['recall']:.4f} | "
                f"{point['batch_ms']:.3f} | {point['single_ms']:.3f} | {factor} |"
            )
    lines += [
        "",
        "Reading it: the pick comes from FAISS's power-of-two nprobe grid, so it can over-deliver recall; "
        "the manual sweep (dense grid, chosen on the fresh queries themselves, i.e. with hindsight) shows "
        "what a finer grid would save. A time ratio below 1: that point is faster than the pick; above 1: slower. "
        "The points are measured taking turns (interleaved passes), medians of 3 batched passes. "
        "Most of the time to tune goes to the widest points of FAISS's range (nprobe up to nlist/2, "
        "recall long saturated): the profile keeps the whole grid, so every point is measured.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000], help="store sizes (default 200000)")
    parser.add_argument("--runs", type=int, default=3, help="tuning runs per size (median)")
    parser.add_argument("--clusters", type=int, default=256, help="clusters of the synthetic generator")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--rebuild", action="store_true", help="build the index again")
    parser.add_argument("--reuse-tuning", action="store_true",
                        help="skip the timed tuning runs, reuse those in bench/results/autotune_<n>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for n in args.sizes:
        result = run_size(n, args)
        (RESULTS / f"autotune_{n}.json").write_text(json.dumps(result, indent=2) + "\n")
        # After every size, so a long run that is cut short still reports what it measured.
        results = sorted((json.loads(path.read_text()) for path in RESULTS.glob("autotune_*.json")),
                         key=lambda result: result["n"])
        section = markdown(results)
        write_section(section, SECTION)
        print(section)


if __name__ == "__main__":
    main()

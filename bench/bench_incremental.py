"""Incremental ingest and index updates: a >= 20k-chunk repository, 1% of its files changed.

Steps, on a copy of this Python's standard library (about 2,000 chunked files and 25k chunks;
the copy keeps the files' mtimes, as a checkout that has not changed does), each timed
``--runs`` times (median):

1. first ingest into a fresh catalog (``bootstrap.ingest``: listing, chunking, embedding, writes);
2. re-ingest with nothing changed (every file unchanged by size and mtime: not read);
3. 1% of the chunked files changed (a line appended, so their last chunk gets a new id), then
   re-ingest: only those files are read and chunked, only new ids are embedded (a fresh 1% per
   run);
4. per family: a full build over the store before the last change (the parent); then, over
   the changed store, the default build (an update of the parent by remove_ids / add_with_ids
   where the family allows) and a full build; recall@10 of both against exact search (numpy
   brute force) over the changed store's vectors, the queries a seeded sample of them plus
   every added vector, at the index's default search parameters.

Run from the repository root (about 6 minutes on 2 cores) and paste the tables into BENCHMARKS.md:

    .venv/bin/python bench/bench_incremental.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench import adapters  # noqa: E402
from bench.common import CORES, log, median  # noqa: E402
from bench.datasets import stdlib_root  # noqa: E402
from codeintel import layout  # noqa: E402

K = 10
QUERIES = 1000
SEED = 7
T = TypeVar("T")
#: What every copied tree leaves out: what ingest skips anyway, and compiled files.
SKIPPED = ("site-packages", "__pycache__", "*.pyc")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def change_files(repo: Path, chunked: list[str], fraction: float, seed: int) -> list[str]:
    """Append a line to a seeded ``fraction`` of the chunked Python files: their last chunk changes."""
    python = sorted(uri for uri in chunked if uri.endswith(".py"))
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(python, size=max(1, round(fraction * len(chunked))), replace=False))
    for uri in picked:
        with (repo / uri).open("a", encoding="utf-8") as handle:
            handle.write(f"\n# changed by bench_incremental, round {seed}\n")
    return picked


def recall(index_dir: Path, queries: np.ndarray, truth: np.ndarray) -> float:
    """recall@K of a version's index (its own default search parameters) against the exact ids ``truth``."""
    index = faiss.read_index(str(index_dir / "index.faiss"))
    labels = index.search(queries, K)[1]
    return float(np.mean([len(set(found) & set(expected)) / K for found, expected in zip(labels, truth, strict=True)]))


def oracle(versions: Path, parent: str, full: str) -> tuple[np.ndarray, np.ndarray]:
    """Queries (a seeded sample of the changed store's vectors, plus every added one) and their exact top-K ids."""
    vectors = np.load(versions / full / "vectors.npy")
    ids = pq.read_table(versions / full / "faiss_idmap.parquet")["external_id"].to_numpy()
    added = ~np.isin(ids, pq.read_table(versions / parent / "faiss_idmap.parquet")["external_id"].to_numpy())
    rows = np.union1d(np.random.default_rng(SEED).choice(len(ids), QUERIES, replace=False), np.flatnonzero(added))
    queries = np.ascontiguousarray(vectors[rows])
    return queries, ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :K]]


def drift_curve(vectors: np.ndarray, fractions: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
                ) -> list[tuple[float, float]]:
    """recall@K (nprobe 16) of IVF-Flat trained on the first 1/(1+f) of the rows and given them all.

    What an update does to a trained index after adding a fraction ``f`` of its vectors.  The
    rows are in the store's order (by path), so the held-back ones are whole packages the
    quantizers never saw: new code, the hard case (a random held-back sample lost nothing
    measurable).  f = 0 is a full build.  The queries: a seeded sample of the rows; the
    oracle: numpy brute force.
    """
    nlist = round(4 * np.sqrt(len(vectors)))
    queries = vectors[np.random.default_rng(SEED).choice(len(vectors), QUERIES, replace=False)]
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    curve = []
    for fraction in fractions:
        index = faiss.index_factory(vectors.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[: int(len(vectors) / (1 + fraction))])
        index.add(vectors)
        index.nprobe = 16
        labels = index.search(queries, K)[1]
        curve.append((fraction, float(np.mean([len(set(a) & set(b)) / K for a, b in zip(labels, truth, strict=True)]))))
        log(f"drift {fraction:.2f}: recall@10 {curve[-1][1]:.4f}")
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=stdlib_root(), help="repository to copy (default: the stdlib)")
    parser.add_argument("--fraction", type=float, default=0.01, help="fraction of chunked files changed")
    parser.add_argument("--families", nargs="*", default=["flat", "ivf_flat", "ivf_sq", "ivf_pq"])
    parser.add_argument("--runs", type=int, default=3, help="timings per step (median reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        log(f"copying {args.repo} to {repo} (mtimes kept)")
        shutil.copytree(args.repo, repo, ignore=shutil.ignore_patterns(*SKIPPED), symlinks=True)
        firsts = []
        for run in range(args.runs):  # each into a fresh catalog; the last one is kept
            catalog = Path(scratch) / f"catalog-{run}"
            firsts.append(timed(lambda catalog=catalog: adapters.ingest(repo, catalog)))
            log(f"first ingest: {firsts[-1][1].manifest['chunk_count']} chunks in {firsts[-1][0]:.1f} s")
        first = firsts[-1][1]
        first_s = median(seconds for seconds, _ in firsts)
        chunks = first.manifest["chunk_count"]
        sames = [timed(lambda: adapters.ingest(repo, catalog)) for _ in range(args.runs)]
        assert all(result.unchanged for _, result in sames)
        same = sames[-1][1]
        log(f"re-ingest, nothing changed: {[round(seconds, 2) for seconds, _ in sames]} s {same.reuse}")
        files = pq.read_table(first.store / "files.parquet", columns=["uri", "status"]).to_pydict()
        chunked = [uri for uri, status in zip(files["uri"], files["status"], strict=True) if status == "chunked"]
        rounds = []
        for run in range(args.runs):  # a fresh 1% each round; the index steps use the last round's two stores
            before = adapters.current_store(catalog).name
            changed = change_files(repo, chunked, args.fraction, SEED + run)
            rounds.append(timed(lambda: adapters.ingest(repo, catalog)))
            log(f"re-ingest, {len(changed)} files changed: {rounds[-1][0]:.2f} s {rounds[-1][1].reuse}")
        again = rounds[-1][1]
        old_store, new_store = before, again.store.name

        ingest_rows = [
            ("first ingest (fresh catalog)", first_s, f"{chunks} chunks embedded, {len(chunked)} files chunked"),
            ("re-ingest, nothing changed", median(seconds for seconds, _ in sames),
             f"{same.reuse['files_unread']} files not read; store kept"),
            (f"re-ingest, {len(changed)} files ({args.fraction:.0%} of {len(chunked)}) changed",
             median(seconds for seconds, _ in rounds),
             f"{again.reuse['files_reused']} files reused ({again.reuse['files_unread']} not read), "
             f"{again.reuse['embeddings_reused']} embeddings reused by id, "
             f"{again.reuse['chunks_embedded']} chunks embedded"),
        ]

        store_dirs = layout.store_versions(catalog)
        versions = catalog / "index" / "versions"
        index_rows = []
        for family in args.families:
            store_dirs.publish(old_store)
            parent = adapters.build_faiss_index(catalog, family)
            store_dirs.publish(new_store)
            # publish=False keeps the parent CURRENT, so every update starts from it.
            updates = [timed(lambda family=family: adapters.build_faiss_index(catalog, family, publish=False))
                       for _ in range(args.runs)]
            fulls = [timed(lambda family=family: adapters.build_faiss_index(
                catalog, family, incremental=False, publish=False)) for _ in range(args.runs)]
            update, full = updates[-1][1], fulls[-1][1]
            assert update["parent"] == parent["version"]
            queries, truth = oracle(versions, parent["version"], full["version"])
            update_s, full_s = median(s for s, _ in updates), median(s for s, _ in fulls)
            update_recall = recall(versions / update["version"], queries, truth)
            full_recall = recall(versions / full["version"], queries, truth)
            log(f"{family}: update {update_s:.2f} s, full {full_s:.2f} s; recall {update_recall:.4f} vs "
                f"{full_recall:.4f}")
            what = (f"update: {update['drift']['added']} ids added, {update['drift']['removed']} removed"
                    if update["incremental"] else update["incremental_reason"])
            index_rows.append((family, parent["factory"], full_s, update_s, update_recall, full_recall, what,
                               len(queries)))
        embedding = adapters.read_live_chunks(again.store, ["embedding"])["embedding"]
        curve = drift_curve(embedding.combine_chunks().flatten().to_numpy().reshape(len(embedding), -1))

    print(f"{args.repo}: {chunks} chunks, {len(chunked)} chunked files, {CORES} cores, "
          f"static-code embedder, median of {args.runs}\n")
    print("| step | seconds | ratio to first ingest | what was done |")
    print("|---|---:|---:|---|")
    for name, seconds, detail in ingest_rows:
        print(f"| {name} | {seconds:.2f} | {seconds / first_s:.3f} | {detail} |")
    print(f"\nIndex over the changed store ({index_rows[0][-1] if index_rows else 0} queries: {QUERIES} sampled "
          "vectors and every added one; recall@10 against numpy brute force, default search parameters):\n")
    print("| family | factory | full build s | default build s | ratio | recall@10 default | "
          "recall@10 full | what the default build did |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for family, factory, full_s, update_s, update_recall, full_recall, what, _ in index_rows:
        print(f"| {family} | {factory} | {full_s:.2f} | {update_s:.2f} | {update_s / full_s:.3f} | "
              f"{update_recall:.4f} | {full_recall:.4f} | {what} |")
    print("\nDrift: IVF-Flat (default nlist, nprobe 16) trained on the first 1/(1+f) of the changed store by path, "
          "given all of it (an update that added f of the trained vectors, as whole unseen packages); recall@10 "
          "against numpy brute force:\n")
    print("| added since training (f) | recall@10 |")
    print("|---:|---:|")
    for fraction, value in curve:
        print(f"| {fraction:.2f}{' (full build)' if fraction == 0 else ''} | {value:.4f} |")


if __name__ == "__main__":
    main()

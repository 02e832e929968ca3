"""Ingest throughput on the demo's standard-library packages: chunks per second per stage, per embedder.

Stages over the same files, median of ``--runs`` rounds that interleave the stages:
- chunking: ``chunk_code`` over every file through DuckDB, and the same chunker called
  directly from Python (the peer: what DuckDB's UDF path costs on top);
- embedding, static code model (the default): ``embed`` over every chunk through DuckDB with
  DuckDB threads = 1 and = 2, and ``StaticEmbedder.embed`` called directly (the peer);
- embedding, MiniLM (the previous default, the peer of the static model): ``SentenceEmbedder``
  called directly;
- whole ingest: ``bootstrap.ingest`` (``bench.adapters.ingest``) into a fresh catalog (listing, chunking, embedding,
  Parquet writes, metadata) with each embedder, and the demo's ingest as a user runs it
  (``python bootstrap.py ingest``, a new process: interpreter start and imports included).

Run from the repository root and paste the table into BENCHMARKS.md:

    .venv/bin/python bench/bench_ingest.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from bench import adapters  # noqa: E402
from bench.datasets import stdlib_root  # noqa: E402
from udfs import chunking  # noqa: E402
from udfs.embedding import PACKAGED_STATIC_MODEL, SentenceEmbedder  # noqa: E402
from udfs.static_embedder import StaticEmbedder  # noqa: E402


def median_seconds(action: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--packages", nargs="*", default=list(adapters.DEMO_PACKAGES))
    args = parser.parse_args()

    stdlib = stdlib_root()
    include = [f"{package}/**" for package in args.packages]
    with tempfile.TemporaryDirectory() as scratch:
        catalog = Path(scratch) / "catalog"
        adapters.ingest(stdlib, catalog, include=include)  # warm-up, and the chunks to embed
        connection = adapters.connect(catalog)
        connection.execute(
            "CREATE TEMP TABLE bench_files AS "
            "SELECT f.uri, decode(b.content) AS text, f.language "
            "FROM read_blob(?) AS b JOIN files AS f ON b.filename = ? || f.uri WHERE f.status = 'chunked'",
            [[str(stdlib / pattern) for pattern in include], str(stdlib) + os.sep],
        )
        files = connection.execute("SELECT uri, text, language FROM bench_files").fetchall()
        contents = [row[0] for row in connection.execute("SELECT content FROM chunks").fetchall()]
        chunk_count = len(contents)

        def run_sql(statement: str, threads: int) -> Callable[[], object]:
            def action() -> object:
                connection.execute("SET threads = ?", [threads])
                return connection.execute(statement).fetchall()
            return action

        def fresh_ingest(embed_model: str) -> Callable[[], object]:
            def action() -> None:
                with tempfile.TemporaryDirectory() as target:
                    adapters.ingest(stdlib, Path(target) / "catalog", include=include,
                                     settings={"embed_model": embed_model})
            return action

        def command_line_ingest() -> None:
            with tempfile.TemporaryDirectory() as target:
                subprocess.run([sys.executable, str(adapters.PROJECT_DIR / "bootstrap.py"), "ingest", str(stdlib),
                                "--catalog", str(Path(target) / "catalog"),
                                *(f"--include={pattern}" for pattern in include)],
                               check=True, capture_output=True)

        static = StaticEmbedder(PACKAGED_STATIC_MODEL)
        minilm = SentenceEmbedder()
        contenders: list[tuple[str, Callable[[], object]]] = [
            ("chunking: chunk_code through DuckDB", run_sql(
                "SELECT count(*) FROM (SELECT unnest(chunk_code(uri, text, language, 1200)) FROM bench_files)", 2)),
            ("chunking: chunk_source called directly (peer)",
             lambda: [chunking.chunk_source(text, language, uri) for uri, text, language in files]),
            ("embedding, static-code: embed through DuckDB, threads=1",
             run_sql("SELECT count(embed(content)) FROM chunks", 1)),
            ("embedding, static-code: embed through DuckDB, threads=2",
             run_sql("SELECT count(embed(content)) FROM chunks", 2)),
            ("embedding, static-code: StaticEmbedder.embed directly (peer)", lambda: static.embed(contents)),
            ("embedding, minilm: SentenceEmbedder.embed directly", lambda: minilm.embed(contents)),
            ("whole ingest, static-code (bootstrap.ingest, fresh catalog)", fresh_ingest("static-code")),
            ("whole ingest, minilm (bootstrap.ingest, fresh catalog)", fresh_ingest("minilm")),
            ("demo ingest, static-code: `python bootstrap.py ingest` end to end", command_line_ingest),
        ]
        # Rounds interleave the contenders, so load from other work on the shared machine
        # falls on all of them alike and the ratios stay comparable.
        timings: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.runs):
            for name, action in contenders:
                timings[name].append(median_seconds(action, 1))
        connection.close()
        rows = [(name, statistics.median(values)) for name, values in timings.items()]

    print(f"{len(files)} files, {chunk_count} chunks, duckdb {duckdb.__version__}, {os.cpu_count()} cores, "
          f"median of {args.runs}\n")
    print("| stage | seconds | chunks/s |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {chunk_count / seconds:,.1f} |")


if __name__ == "__main__":
    main()

"""Embedding throughput on real code: the static code model against MiniLM, and MiniLM's batching.

Texts are the Python standard library's .py files cut at line ends into pieces of about
1200 characters (the size of a typical code chunk), a fixed random sample of ``--n``.
Each configuration gets its own embedder, one warm-up call, then ``--runs`` timed calls
over all texts; the tables show the median.  First table: the packaged static code model
(``embed_model = static-code``, the default) beside MiniLM int8 at its default batching, same
texts, same run, rounds interleaved; then MiniLM's batch size x sorting by length.  Run from
the repository root:

    .venv/bin/python bench/bench_embed.py --n 512
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime
import tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import stdlib_code_pieces  # noqa: E402  (needs the path above)
from udfs import embedding  # noqa: E402
from udfs.context import CatalogContext  # noqa: E402
from udfs.embedding import (  # noqa: E402
    DEFAULT_MAX_TOKENS,
    PACKAGED_STATIC_MODEL,
    PACKAGED_TOKENIZER,
    SentenceEmbedder,
)
from udfs.static_embedder import StaticEmbedder  # noqa: E402

PIECE_CHARS = 1200
BATCH_SIZES = (16, 32, 64)


def padding_share(token_counts: np.ndarray, batch_size: int, sort_by_length: bool) -> float:
    """Share of the model's input slots that are padding, as SentenceEmbedder would batch.

    Noise-free, unlike the timings on a shared machine: it is what sorting can save.
    """
    counts = np.sort(token_counts) if sort_by_length else token_counts
    slots = sum(
        counts[start : start + batch_size].max() * len(counts[start : start + batch_size])
        for start in range(0, len(counts), batch_size)
    )
    return 1 - counts.sum() / slots


def statement_latency(runs: int, statements: int = 100) -> None:
    """Per-statement cost of ``SELECT embed('...')`` through DuckDB (one query, as a person types it)."""
    print("| embedder | `SELECT embed('parse a requirements file')`, ms (median of "
          f"{statements} x {runs}) | `SELECT 1`, ms |")
    print("|---|---:|---:|")
    for name in ("static-code", "minilm"):
        with tempfile.TemporaryDirectory() as scratch:
            connection = duckdb.connect()
            context = CatalogContext(catalog_dir=Path(scratch), settings={"embed_model": name})
            for spec in embedding.REGISTRY:
                spec.register(connection, context)
            connection.execute("SELECT embed('warm up')").fetchall()
            timings: dict[str, list[float]] = {"embed": [], "one": []}
            for _ in range(runs):
                for label, sql in (("embed", "SELECT embed('parse a requirements file')"), ("one", "SELECT 1")):
                    for _ in range(statements):
                        started = time.perf_counter()
                        connection.execute(sql).fetchall()
                        timings[label].append(1000 * (time.perf_counter() - started))
            connection.close()
        print(f"| {name} | {statistics.median(timings['embed']):.2f} | {statistics.median(timings['one']):.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="texts per run (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op threads")
    parser.add_argument("--skip-batching", action="store_true", help="only the static-versus-MiniLM table")
    args = parser.parse_args()

    texts = random.Random(0).sample(stdlib_code_pieces(PIECE_CHARS), args.n)
    max_tokens = DEFAULT_MAX_TOKENS
    tokenizer = tokenizers.Tokenizer.from_file(str(PACKAGED_TOKENIZER))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    token_counts = np.array([len(encoding.ids) for encoding in tokenizer.encode_batch(texts)])
    print(
        f"{args.n} stdlib pieces of ~{PIECE_CHARS} chars; tokens after truncation to "
        f"{max_tokens}: median {np.median(token_counts):.0f}, "
        f"min {token_counts.min()}, {np.mean(token_counts == max_tokens):.0%} truncated; "
        f"{args.threads} threads, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs\n"
    )
    static = StaticEmbedder(PACKAGED_STATIC_MODEL)
    minilm = SentenceEmbedder(threads=args.threads)
    static.embed(texts[:64])
    minilm.embed(texts[:64])
    rates: dict[str, list[float]] = {"static-code": [], "minilm": []}
    for _ in range(args.runs):
        # The ingest path: embed_chunk (these pieces define no names of their own).
        for name, embed in (("static-code", lambda: static.embed_chunks(texts, [""] * len(texts))),
                            ("minilm", lambda: minilm.embed(texts))):
            started = time.perf_counter()
            embed()
            rates[name].append(len(texts) / (time.perf_counter() - started))
    print("| embedder | texts/s (median) | min | max | x MiniLM |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.1f} | {min(values):,.1f} | {max(values):,.1f} | "
              f"{statistics.median(values) / statistics.median(rates['minilm']):,.0f}x |")
    print()
    statement_latency(args.runs)
    if args.skip_batching:
        return

    print("| batch size | sort by length | padding | texts/s (median) | min | max |")
    print("|---:|:---:|---:|---:|---:|---:|")
    for batch_size in BATCH_SIZES:
        for sort_by_length in (True, False):
            embedder = SentenceEmbedder(
                threads=args.threads, batch_size=batch_size, sort_by_length=sort_by_length
            )
            embedder.embed(texts[: batch_size * 2])
            rates = []
            for _ in range(args.runs):
                started = time.perf_counter()
                embedder.embed(texts)
                rates.append(len(texts) / (time.perf_counter() - started))
            padding = padding_share(token_counts, batch_size, sort_by_length)
            print(
                f"| {batch_size} | {'on' if sort_by_length else 'off'} | {padding:.1%} "
                f"| {statistics.median(rates):.1f} | {min(rates):.1f} | {max(rates):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Static embedder recipes side by side: train variants, score each on the stripped evaluation store.

Each variant is ``train-embedder`` with some ``TrainingConfig`` fields changed (``NAME=VALUE``,
e.g. ``temperature=0.1``); ``default`` is the packaged recipe.  Every model is scored by dense
MRR@10 over the chunks, queries and judgments of ``bench/bench_eval.py``'s stripped store (run
that first): the same numbers as its faiss channel (flat index, exact inner product), computed
here in numpy, at the model's symbol weight and at a few others.  Models are kept under
``bench/results/static/`` and reused.  The evaluation set is never seen in training; choosing a
recipe by this table is choosing on the test set, so report any such choice as such.

    .venv/bin/python bench/bench_static_recipes.py default temperature=0.1 learn_weights=false
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from bench.common import RESULTS  # noqa: E402
from codeintel import static_training  # noqa: E402
from udfs.static_embedder import StaticEmbedder, names_text  # noqa: E402

EVAL_CATALOG = RESULTS / "eval" / "stripped-static-code" / "catalog.duckdb"
SYMBOL_WEIGHTS = (1.0, 4.0, 8.0, 12.0, 16.0)


def variant_config(text: str) -> static_training.TrainingConfig:
    defaults = static_training.TrainingConfig()
    if text == "default":
        return defaults
    changes = {}
    for assignment in text.split(","):
        name, _, value = assignment.partition("=")
        kind = type(getattr(defaults, name))
        changes[name] = value.lower() == "true" if kind is bool else kind(value)
    return dataclasses.replace(defaults, **changes)


def evaluation_set() -> tuple[dict[str, list], dict[str, list], dict[str, set[int]]]:
    if not EVAL_CATALOG.exists():
        raise SystemExit(f"{EVAL_CATALOG} is missing: run bench/bench_eval.py first")
    with duckdb.connect(str(EVAL_CATALOG), read_only=True) as connection:
        chunks = connection.sql("SELECT id, content, symbols FROM chunks ORDER BY id").fetchnumpy()
        queries = connection.sql("SELECT query_id, text FROM queries ORDER BY query_id").fetchnumpy()
        relevant: dict[str, set[int]] = {}
        for query_id, chunk_id in connection.sql(
                "SELECT query_id, chunk_id FROM v_qrels_chunks WHERE grade > 0").fetchall():
            relevant.setdefault(query_id, set()).add(chunk_id)
    return ({key: list(values) for key, values in chunks.items()},
            {key: list(values) for key, values in queries.items()}, relevant)


def dense_mrr_at_10(model: StaticEmbedder, chunks: dict[str, list], queries: dict[str, list],
                    relevant: dict[str, set[int]]) -> float:
    scores = model.embed(queries["text"]) @ model.embed_chunks(chunks["content"], names_text(chunks["symbols"])).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    ids = np.asarray(chunks["id"])
    reciprocal = [next((1 / (rank + 1) for rank, column in enumerate(row) if ids[column] in relevant.get(q, ())), 0.0)
                  for q, row in zip(queries["query_id"], top, strict=True)]
    return float(np.mean(reciprocal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="default, or NAME=VALUE[,NAME=VALUE] of TrainingConfig")
    args = parser.parse_args()
    chunks, queries, relevant = evaluation_set()
    print(f"{len(queries['query_id'])} queries over {len(chunks['id'])} chunks (stripped store)\n")
    print("| variant | validation MRR@10 | symbol weight | dense MRR@10 | "
          + " | ".join(f"at weight {w:g}" for w in SYMBOL_WEIGHTS) + " | training s |")
    print("|---|---:|---:|---:|" + "---:|" * len(SYMBOL_WEIGHTS) + "---:|")
    for variant in args.variants:
        out = RESULTS / "static" / variant.replace("=", "-").replace(",", "_")
        card = (StaticEmbedder(out).card if out.exists()
                else static_training.train(out, config=variant_config(variant)))
        model = StaticEmbedder(out)
        own = dense_mrr_at_10(model, chunks, queries, relevant)
        others = []
        for weight in SYMBOL_WEIGHTS:
            model.symbol_weight = weight
            others.append(dense_mrr_at_10(model, chunks, queries, relevant))
        print(f"| {variant} | {card['validation_mrr_at_10']:.3f} | {card['symbol_weight']:g} | {own:.3f} | "
              + " | ".join(f"{value:.3f}" for value in others) + f" | {card['training_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

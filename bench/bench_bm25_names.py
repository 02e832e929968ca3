"""How many times BM25 documents repeat a chunk's defined names: measured on packages the evaluation does not use.

``sql/build_bm25_index.sql`` adds a chunk's symbols ``symbol_repeats`` times to its document.
The default is chosen here, on a development set: standard-library packages disjoint from the
evaluation's (``DEV_PACKAGES``), docstrings blanked out of the indexed code as in
``bench/bench_eval.py``'s stripped store, each function's first docstring sentence asking for
its chunk.  The evaluation store's figures are printed beside them for information only.
Writes the "BM25 and chunk names" section of BENCHMARKS.md.  Run from the repository root:

    .venv/bin/python bench/bench_bm25_names.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import adapters  # noqa: E402
from bench.common import RESULTS as ALL_RESULTS  # noqa: E402
from bench.datasets import stdlib_root, stripped_copy  # noqa: E402
from bench.render import write_section  # noqa: E402

RESULTS = ALL_RESULTS / "bm25_names"
DEV_PACKAGES = ("email", "xml", "asyncio", "importlib", "multiprocessing", "html", "xmlrpc", "unittest")
REPEATS = (0, 1, 2, 4, 6, 8, 12, 16)
SECTION_TITLE = "## BM25 and chunk names (bench/bench_bm25_names.py)"
MRR_SQL = """
WITH hits AS (SELECT * FROM channel_bm25(k := 10)),
judged AS (SELECT query_id, chunk_id FROM v_qrels_chunks WHERE grade > 0),
first_hit AS (SELECT h.query_id, min(h.rank) AS rank FROM hits AS h JOIN judged USING (query_id, chunk_id)
              GROUP BY h.query_id)
SELECT coalesce(sum(1.0 / rank), 0) / (SELECT count(DISTINCT query_id) FROM judged) FROM first_hit
"""


def measure(repo: Path, packages: tuple[str, ...], catalog: Path, stdlib: Path) -> dict[int, float]:
    shutil.rmtree(catalog, ignore_errors=True)
    adapters.ingest(repo, catalog, include=[f"{package}/**" for package in packages])
    connection = adapters.connect(catalog)
    try:
        queries_file, qrels_file, _, _ = adapters.run_script(
            connection, adapters.SQL_DIR / "export_docstring_queries.sql",
            {"repo_root": str(stdlib) + os.sep}).fetchone()
        adapters.run_script(connection, adapters.SQL_DIR / "load_queries.sql",
                             {"queries_path": queries_file, "qrels_path": qrels_file})
        adapters.apply_views(connection, catalog)
        scores = {}
        for repeats in REPEATS:
            adapters.build_bm25_index(connection, repeats)
            scores[repeats] = connection.execute(MRR_SQL).fetchone()[0]
            print(f"{catalog.name} repeats={repeats}: MRR@10 {scores[repeats]:.3f}", file=sys.stderr)
        return scores
    finally:
        connection.close()


def main() -> None:
    # No options: the parser gives --help a description instead of a run.
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    stdlib = stdlib_root()
    assert not set(DEV_PACKAGES) & set(adapters.DEMO_PACKAGES)
    dev = measure(stripped_copy(stdlib, RESULTS / "dev_src", DEV_PACKAGES), DEV_PACKAGES, RESULTS / "dev", stdlib)
    evaluation = measure(stripped_copy(stdlib, RESULTS / "eval_src"), adapters.DEMO_PACKAGES, RESULTS / "eval", stdlib)
    pick = max(REPEATS, key=lambda repeats: (round(dev[repeats], 3), -repeats))
    lines = [
        SECTION_TITLE, "",
        "Command: `.venv/bin/python bench/bench_bm25_names.py`. BM25 MRR@10 (`channel_bm25`, k1 1.2, b 0.75) with a "
        "chunk's symbols added `symbol_repeats` times to its document; docstrings blanked out of the indexed code, "
        "first docstring sentences as queries. *dev*: " + ", ".join(DEV_PACKAGES) + " (choose here); *eval*: the "
        "evaluation's packages (bench/bench_eval.py; shown, not used to choose). Pick: the best dev MRR@10 to three "
        f"places, fewer repeats on a tie: **{pick}**.", "",
        "| symbol_repeats | dev MRR@10 | eval MRR@10 |", "|---:|---:|---:|",
        *(f"| {repeats} | {dev[repeats]:.3f} | {evaluation[repeats]:.3f} |" for repeats in REPEATS), "",
    ]
    section = "\n".join(lines)
    write_section(section, SECTION_TITLE)
    print(section)


if __name__ == "__main__":
    main()

"""What writing beside readers costs: a writing session on a private copy of catalog.duckdb
(``bootstrap.open_catalog``: writer lock, copy, prepare, CHECKPOINT, atomic rename) against the
peer that opens the file itself (``bootstrap.connect``: DuckDB's exclusive lock, no copy).

Both sessions prepare the connection the same way (extensions, UDFs, macros, views), so the
difference is the copy and the publish.  Measured on the demo catalog and on the same catalog
grown by a filler table (a BI-sized catalog with BM25 and query tables), median of ``--runs``
interleaved rounds.  Also: a stock DuckDB reader holds the catalog open during the writing
sessions (it must see no error), and the raw file copy alone.

    .venv/bin/python bench/bench_catalog_writes.py --runs 7
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from bench import adapters  # noqa: E402
from bench.common import log, median  # noqa: E402
from bench.render import table, write_section  # noqa: E402

SECTION_TITLE = "## Writing beside readers (catalog.duckdb copy and atomic rename)"


def demo_catalog(work: Path) -> Path:
    """A fresh demo catalog (ingest of the demo packages, flat index, BM25): what `demo` leaves."""
    catalog = work / "demo"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    adapters.ingest(stdlib, catalog, include=[f"{package}/**" for package in adapters.DEMO_PACKAGES])
    adapters.build_index(catalog, "flat")
    with adapters.open_catalog(catalog) as session:
        adapters.build_bm25_index(session.connection)
    return catalog


def grown_copy(catalog: Path, work: Path, megabytes: int) -> Path:
    """The catalog with a filler table of about ``megabytes`` MB (random strings compress poorly)."""
    grown = work / f"grown{megabytes}"
    shutil.copytree(catalog, grown, symlinks=True)
    with duckdb.connect(str(grown / "catalog.duckdb")) as connection:
        rows = megabytes * 1024 * 1024 // 64
        connection.execute(f"CREATE TABLE filler AS SELECT md5(i::VARCHAR) || md5((i * 7)::VARCHAR) AS s "
                           f"FROM range({rows}) AS t(i)")
    with adapters.open_catalog(grown):
        pass  # the views now point at the grown catalog's own files
    return grown


def start_reader(database: Path) -> subprocess.Popen[str]:
    program = textwrap.dedent("""
        import sys, duckdb
        connection = duckdb.connect(sys.argv[1], read_only=True)
        print("ready", flush=True)
        errors = 0
        for line in sys.stdin:
            try:
                connection.execute("SELECT count(*) FROM chunks").fetchone()
            except Exception:
                errors += 1
        print(errors, flush=True)
    """)
    reader = subprocess.Popen([sys.executable, "-c", program, str(database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    return reader


def measure(catalog: Path, runs: int) -> dict[str, float]:
    database = catalog / "catalog.duckdb"
    timings: dict[str, list[float]] = {"copy": [], "direct": [], "file_copy": []}
    for _ in range(runs):
        started = time.perf_counter()
        adapters.connect(catalog).close()
        timings["direct"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with adapters.open_catalog(catalog):
            pass
        timings["copy"].append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory(dir=catalog) as scratch:
            started = time.perf_counter()
            shutil.copyfile(database, Path(scratch) / "copy.duckdb")
            timings["file_copy"].append(time.perf_counter() - started)
    # The reader check: a stock client holds the file and queries it between writing sessions.
    reader = start_reader(database)
    assert reader.stdin is not None and reader.stdout is not None
    for _ in range(runs):
        with adapters.open_catalog(catalog):
            pass
        reader.stdin.write("q\n")
        reader.stdin.flush()
    reader.stdin.close()
    reader_errors = int(reader.stdout.readline())
    reader.wait(timeout=30)
    return {"megabytes": database.stat().st_size / 2**20, "reader_errors": reader_errors,
            **{name: median(values) for name, values in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--grow-mb", type=int, default=200, help="size of the grown catalog's filler table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        log("building the demo catalog")
        catalog = demo_catalog(work)
        grown = grown_copy(catalog, work, args.grow_mb)
        rows = []
        for name, path in (("demo catalog", catalog), (f"demo + {args.grow_mb} MB table", grown)):
            log(f"measuring {name}")
            result = measure(path, args.runs)
            rows.append([name, f"{result['megabytes']:.1f}", f"{result['direct'] * 1000:.0f}",
                         f"{result['copy'] * 1000:.0f}", f"{(result['copy'] - result['direct']) * 1000:.0f}",
                         f"{result['file_copy'] * 1000:.0f}", str(result["reader_errors"])])
    section = "\n".join([
        SECTION_TITLE, "",
        "A writing command works on a copy of `catalog.duckdb` and publishes it by atomic rename, so readers",
        "holding the file are never locked out (issue 13). Open-to-close of one writing session with no",
        "work inside, median of " + str(args.runs) + " interleaved rounds; the peer opens the file itself",
        "(`bootstrap.connect`, DuckDB's exclusive lock). A stock DuckDB reader held the file open and",
        "queried it between the writing sessions: its errors are counted.", "",
        table(["catalog", "MB", "direct open+close ms", "copy session ms", "copy cost ms", "file copy alone ms",
               "reader errors"], rows, "lrrrrrr"), "",
        "Command: `.venv/bin/python bench/bench_catalog_writes.py --runs " + str(args.runs)
        + f" --grow-mb {args.grow_mb}` (2 cores).", "",
    ])
    write_section(section, SECTION_TITLE)
    print(section)


if __name__ == "__main__":
    main()

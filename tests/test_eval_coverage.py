"""Coverage views on a hand-built catalog, the HTML heatmap, and stock-client readability."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

import bootstrap
from codeintel import layout, sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from tests.eval_support import hand_store, import_store, write_hand_run, write_pool
from udfs import faiss_build

# pkg_x holds chunks 11-13, pkg_y 21-22; pkg_z (chunk 31) is ingested after the index was built.
INDEXED = [(11, "pkg_x/a.py"), (12, "pkg_x/a.py"), (13, "pkg_x/a.py"), (21, "pkg_y/b.py"), (22, "pkg_y/b.py")]
LATE = [(31, "pkg_z/c.py")]
DAY = datetime.datetime(2026, 1, 1)


def chunk_rows(pairs: list[tuple[int, str]]) -> list[dict]:
    return [{"id": chunk_id, "uri": uri, "content": f"def f{chunk_id}():\n    pass\n",
             "embedding": [1.0, float(chunk_id), 0.0]} for chunk_id, uri in pairs]


@pytest.fixture(scope="module")
def coverage(tmp_path_factory: pytest.TempPathFactory):
    catalog = tmp_path_factory.mktemp("coverage") / "catalog"
    import_store(hand_store(chunk_rows(INDEXED)), catalog)
    faiss_build.build_index(catalog, "flat")
    import_store(hand_store(chunk_rows(INDEXED + LATE)), catalog)
    write_hand_run(catalog, "faiss-1", "faiss", {"q1": [11, 21], "q2": [11, 12]}, 2, DAY)
    write_hand_run(catalog, "bm25-1", "bm25", {"q1": [13], "q2": [31]}, 2, DAY)
    # An older BM25 run: counted by v_coverage_module, superseded in the heatmap.
    write_hand_run(catalog, "bm25-0", "bm25", {"q1": [12]}, 2, DAY - datetime.timedelta(days=1))
    connection = bootstrap.connect(catalog)
    yield catalog, connection
    connection.close()


def test_share_of_each_module_reached_per_run(coverage) -> None:
    _, connection = coverage
    rows = connection.execute(
        "SELECT run_id, module, chunks, indexed_chunks, retrieved_chunks, round(share_retrieved, 4) "
        "FROM v_coverage_module ORDER BY run_id, module").fetchall()
    assert rows == [
        ("bm25-0", "pkg_x", 3, 3, 1, 0.3333), ("bm25-0", "pkg_y", 2, 2, 0, 0.0), ("bm25-0", "pkg_z", 1, 0, 0, 0.0),
        ("bm25-1", "pkg_x", 3, 3, 1, 0.3333), ("bm25-1", "pkg_y", 2, 2, 0, 0.0), ("bm25-1", "pkg_z", 1, 0, 1, 1.0),
        ("faiss-1", "pkg_x", 3, 3, 2, 0.6667), ("faiss-1", "pkg_y", 2, 2, 1, 0.5), ("faiss-1", "pkg_z", 1, 0, 0, 0.0),
    ]


def test_never_retrieved_chunks_and_unindexed_modules(coverage) -> None:
    _, connection = coverage
    assert connection.execute("SELECT chunk_id, module, indexed FROM v_coverage_never_retrieved").fetchall() == [
        (22, "pkg_y", True)]
    assert connection.execute("SELECT module, chunks FROM v_coverage_unindexed_modules").fetchall() == [("pkg_z", 1)]


def test_heatmap_shows_the_latest_run_of_each_channel(coverage) -> None:
    _, connection = coverage
    rows = connection.execute(
        "SELECT module, never_retrieved, round(faiss_share, 4), round(bm25_share, 4), hybrid_share, "
        "length(faiss_bar), bm25_bar, hybrid_bar FROM v_coverage_heatmap ORDER BY module").fetchall()
    full, empty = "█" * 20, " " * 20
    assert rows == [
        ("pkg_x", 0, 0.6667, 0.3333, None, 20, connection.execute("SELECT bar(1 / 3, 0, 1, 20)").fetchone()[0], None),
        ("pkg_y", 1, 0.5, 0.0, None, 20, empty, None),
        ("pkg_z", 0, 0.0, 1.0, None, 20, full, None),
    ]


def test_heatmap_page_is_self_contained_html(coverage) -> None:
    catalog, connection = coverage
    written, modules = sqlfiles.run_script(connection, layout.SQL_DIR / "write_coverage_heatmap.sql",
                                            {"out": "reports/heatmap.html"}).fetchone()
    page = Path(written).read_text()
    assert Path(written) == catalog / "reports" / "heatmap.html" and modules == 3
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http" not in page
    # pkg_x: FAISS 2 of 3 chunks, BM25 1 of 3, no hybrid run.
    assert ('<tr><th class="module">pkg_x</th><td>3</td><td>3</td><td>0</td>'
            '<td style="background:rgb(112,152,255);color:#fff">67%</td>'
            '<td style="background:rgb(183,203,255);color:#000">33%</td>'
            '<td style="background:#eee">-</td></tr>') in page


def test_a_stock_duckdb_client_reads_pools_and_reports(eval_catalog: Path) -> None:
    """Once pools are written, every evaluation view opens in a bare duckdb process."""
    connection = bootstrap.connect(eval_catalog)
    try:
        for channel in ("faiss", "bm25", "hybrid"):
            write_pool(connection, channel=channel)
        apply_catalog_objects(connection, eval_catalog)
        expected = {name: connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in STOCK_RELATIONS}
    finally:
        connection.close()
    program = textwrap.dedent("""
        import json, sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print(json.dumps({name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in sys.argv[2:]}))
        print(con.execute("SELECT count(*) FROM v_eval_per_channel WHERE mrr_at_10 > 0").fetchone()[0])
    """)
    result = subprocess.run([sys.executable, "-c", program, str(eval_catalog / "catalog.duckdb"), *STOCK_RELATIONS],
                            capture_output=True, text=True, check=True, cwd="/")
    counts, positive_runs = result.stdout.splitlines()
    assert json.loads(counts) == expected and positive_runs == "3"
    assert expected["pool"] == 3 * 10 * 40 and expected["v_runs"] == expected["runs"] == 3


STOCK_RELATIONS = ("pool", "runs", "v_runs", "queries", "qrels", "v_qrels_chunks", "v_eval_per_query",
                   "v_eval_per_channel", "v_coverage_module", "v_coverage_heatmap", "v_coverage_never_retrieved",
                   "v_coverage_unindexed_modules")


def test_views_wait_for_their_files(tmp_path: Path) -> None:
    """A catalog without pools or qrels connects; the evaluation views are simply not there yet."""
    import_store(hand_store(chunk_rows(INDEXED)), tmp_path / "catalog")
    connection = bootstrap.connect(tmp_path / "catalog")
    try:
        with pytest.raises(duckdb.CatalogException):
            connection.execute("SELECT * FROM pool")
    finally:
        connection.close()

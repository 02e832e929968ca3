"""Results files and markdown: the JSON each run saves, the tables it prints, BENCHMARKS.md sections.

``write_section`` replaces one ``## `` section of BENCHMARKS.md (or appends it) and keeps every
other; the bench scripts that write BENCHMARKS.md all go through it.  The rest renders
``bench_search.py``'s results from the JSON it saved, so ``--render-only`` reproduces the tables
without measuring anything.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS, CORES, RECALL_TARGET, RESULTS, K


def write_section(section: str, title: str, path: Path = BENCHMARKS) -> None:
    """Replace the section of ``path`` that starts with the line ``title`` (or append it), keeping
    the others; sections are separated by one blank line and the file ends with one newline."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    replaced, count = pattern.subn(lambda _match: section.rstrip("\n") + "\n\n", text)
    text = replaced if count else text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def show(section: str, title: str, write: bool) -> None:
    """Print a section; with ``write``, also put it in BENCHMARKS.md (:func:`write_section`)."""
    print(section)
    if write:
        write_section(section, title)


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one letter per column: l, r, c (colons) or - (none)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- bench_search results


def result_path(name: str, results: Path = RESULTS) -> Path:
    return results / f"search_{name}.json"


def save(name: str, results: dict[str, Any], directory: Path = RESULTS) -> None:
    """Write one dataset's results so far (phases call this after each step: a cut run keeps them)."""
    directory.mkdir(parents=True, exist_ok=True)
    result_path(name, directory).write_text(json.dumps(results, indent=1, default=str))


def load_results(names: list[str], directory: Path = RESULTS) -> list[dict[str, Any]]:
    """The saved results of ``names`` that exist, in that order."""
    return [json.loads(result_path(name, directory).read_text()) for name in names
            if result_path(name, directory).exists()]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ms(summary: dict[str, float] | None) -> str:
    return "-" if not summary else f"{summary['median_ms']:.2f}"


def load_note(load: float | None) -> str:
    return "" if load is None else f" (load {load:.1f})"


def render_dataset(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"#### {results['dataset']}: {results['description']}", ""]
    out.append(
        f"{results.get('queries', meta['queries']):,} queries per batch, k = {K}, "
        f"recall@{K} against exact numpy brute force; "
        f"single-query latency = median over {meta['single_queries']} queries, one SQL statement each "
        f"(the query vector read by a scalar subquery from a TEMP table, never bound as a list); "
        f"batched = median of {meta['runs']} runs. {meta['date']}."
    )
    out.append("")
    faiss_results = results.get("faiss", {})
    vss = results.get("vss")
    brute = results.get("brute")
    vss_qps = vss["best"]["lateral_qps"] if vss and "best" in vss else None
    vss_ms = vss["best"]["single_sql_variable"]["median_ms"] if vss and "best" in vss else None

    # ---- headline: fastest setting meeting the target, per contender
    rows = []
    for entry in faiss_results.values():
        best = entry["best"]
        flag = "" if entry["target_met"] else " (target not reached)"
        rows.append(
            [
                f"FAISS {entry['label']} `{entry['factory']}`, faiss_topk batch (run_script) / faiss_search single",
                f"{best['params'] or 'exact'}{flag}",
                fmt(best["recall"], 4),
                fmt(best["topk_qps"]),
                fmt(best["topk_qps"] / vss_qps, 2) if vss_qps else "-",
                ms(best["single_sql"]),
                fmt(best["single_sql"]["median_ms"] / vss_ms, 2) if vss_ms else "-",
                f"{entry['build_s']:.1f}" + load_note(entry.get("build_load_average")),
            ]
        )
    if vss and "best" in vss:
        best = vss["best"]
        rows.append(
            [
                f"DuckDB vss HNSW ({vss['options']}), LATERAL batch / ORDER BY LIMIT single",
                best["params"] + ("" if vss["target_met"] else " (target not reached)"),
                fmt(best["recall"], 4),
                fmt(best["lateral_qps"]),
                "1.00",
                ms(best["single_sql_variable"]),
                "1.00",
                f"{vss['build_s']:.1f}" + load_note(vss.get("build_load_average")),
            ]
        )
    elif vss:
        rows.append(["DuckDB vss HNSW", "build only", "-", "-", "-", "-", "-", f"{vss['build_s']:.1f}"])
    if brute:
        rows.append(
            [
                f"brute-force SQL array_inner_product ({brute['queries']} queries): "
                "QUALIFY batch / ORDER BY LIMIT single",
                "exact",
                fmt(brute["recall_batch"], 4),
                fmt(brute["batch_qps"], 1),
                fmt(brute["batch_qps"] / vss_qps, 3) if vss_qps else "-",
                ms(brute["single_sql"]),
                fmt(brute["single_sql"]["median_ms"] / vss_ms, 1) if vss_ms else "-",
                "0",
            ]
        )
        rows.append(
            [
                f"numpy exact top-{K} (peer, {brute['numpy_queries']} queries)",
                "exact",
                "1.0000",
                fmt(brute["numpy_qps"]),
                fmt(brute["numpy_qps"] / vss_qps, 2) if vss_qps else "-",
                "-",
                "-",
                "0",
            ]
        )
    out.append(
        f"Fastest setting with recall@{K} >= {RECALL_TARGET} per contender (× vss: ratio to the vss row, "
        "same run; single-query for vss is `SET VARIABLE q` + `SELECT`, 2 statements, because its index scan "
        "needs a constant query vector):"
    )
    out.append("")
    out.append(
        table(
            ["contender", "setting", f"recall@{K}", "batched QPS", "× vss", "single-query ms", "× vss", "build s"],
            rows,
            "llrrrrrr",
        )
    )
    out.append("")

    # ---- FAISS SQL against direct faiss at the best setting
    if faiss_results:
        rows = []
        default_threads = "1"
        for entry in faiss_results.values():
            best = entry["best"]
            default_threads = best.get("default_faiss_threads", "1")

            def qps_ratio(qps_key: str, ratio_key: str, best: dict[str, Any] = best) -> list[str]:
                if ratio_key not in best:
                    return ["-", "-"]
                return [fmt(best[qps_key]), f"{best[ratio_key]:.2f}"]

            rows.append(
                [
                    entry["label"],
                    best["params"] or "exact",
                    fmt(best["direct_all_cores_qps"]),
                    fmt(best["direct_1thread_qps"]),
                    fmt(best["topk_qps"]),
                    f"**{best['overhead_ratio']:.2f}**",
                    *qps_ratio("topk_plain_qps", "overhead_ratio_plain"),
                    *qps_ratio("topk_ft1_qps", "overhead_ratio_ft1"),
                    *qps_ratio("topk_threads1_ftN_qps", "overhead_ratio_threads1_ftN"),
                    fmt(best["lateral_qps"]),
                    f"{best['overhead_ratio_lateral']:.2f}",
                    ms(best["single_sql"]),
                    ms(best["single_sql_variable"]),
                    f"{best['single_direct']['median_ms']:.3f}",
                ]
            )
        out.append(
            "FAISS through SQL against `index.search` on the same numpy queries (same loaded index and "
            "parameters, runs interleaved). Ratio = SQL time / peer time, median of per-run ratios; the peer "
            f"is the faster of index.search with faiss on 1 OpenMP thread and on all {CORES} in that run; "
            "target <= 1.15. `run_script` = the statement as run_script and the CLI run it: a statement calling "
            "a UDF with its own thread pool runs with DuckDB `threads = 1` (bootstrap.core_owning_names), with "
            f"this checkout's faiss_threads default (`{default_threads}`); `plain execute` = "
            f"`connection.execute` with DuckDB threads={CORES}; `threads=1` = `SET threads = 1` for the "
            "statement; `faiss_threads=N` = a connection with that setting. Single-query columns: median ms per "
            "plain statement; index.search on 1 thread:"
        )
        out.append("")
        out.append(
            table(
                [
                    "index",
                    "setting",
                    f"index.search QPS, {CORES} threads",
                    "index.search QPS, 1 thread",
                    "faiss_topk QPS (run_script)",
                    "ratio",
                    f"faiss_topk QPS, plain execute, threads={CORES}",
                    "ratio",
                    "faiss_topk QPS, faiss_threads=1",
                    "ratio",
                    f"faiss_topk QPS, threads=1 + faiss_threads={CORES}",
                    "ratio",
                    "LATERAL faiss_search QPS",
                    "ratio",
                    "single faiss_search ms",
                    "single SET VARIABLE+SELECT ms",
                    "single index.search ms",
                ],
                rows,
                "llrrrrrrrrrrrrrrr",
            )
        )
        out.append("")

    # ---- sweeps
    rows = []
    for entry in faiss_results.values():
        for point in entry["sweep"]:
            rows.append(
                [
                    f"FAISS {entry['label']}",
                    point["params"] or "exact",
                    fmt(point["recall"], 4),
                    fmt(point["sql_qps"]),
                    fmt(point["direct_qps"]),
                    f"{point['ratio']:.2f}",
                ]
            )
    if vss and "sweep" in vss:
        for point in vss["sweep"]:
            rows.append(
                ["vss HNSW (LATERAL)", point["params"], fmt(point["recall"], 4), fmt(point["sql_qps"]), "-", "-"]
            )
    if rows:
        out.append(
            f"Recall sweeps (median of {meta['sweep_runs']} runs per point; a sweep stops one point after "
            "the target is reached):"
        )
        out.append("")
        out.append(
            table(
                [
                    "contender",
                    "setting",
                    f"recall@{K}",
                    "SQL QPS (faiss_topk / vss LATERAL)",
                    "index.search QPS (peer)",
                    "SQL/peer time",
                ],
                rows,
                "llrrrr",
            )
        )
        out.append("")

    # ---- overhead diagnostics
    overhead = results.get("overhead")
    if overhead:
        rows = []
        for row in overhead["rows"]:
            profile = row.get("profile")
            rows.append(
                [
                    row["config"],
                    f"{row['median_s']:.3f}",
                    fmt(row["qps"]),
                    f"{row['ratio']:.2f}",
                    f"{row['ratio_all_cores']:.2f}",
                    f"{row['cpu_s']:.2f}" if "cpu_s" in row else "-",
                    f"{profile['main_thread_cpu_s']:.2f}" if profile and "main_thread_cpu_s" in profile else "-",
                    f"{profile['calls_on_main_thread']}/{profile['calls']}"
                    if profile and "calls_on_main_thread" in profile
                    else (str(profile["calls"]) if profile else "-"),
                    str(profile["threads"]) if profile else "-",
                    f"{profile['search_s']:.2f}" if profile else "-",
                ]
            )
        out.append(
            f"Overhead diagnostics: faiss_topk over {overhead['queries']:,} queries, {overhead['family']} at "
            f"{overhead['params'] or 'exact'}, median of {meta['runs']} interleaved runs. CPU s = this process's CPU "
            "time (all threads) per run; the last four columns come from one instrumented run: CPU seconds of the "
            "Python main thread (the one that called execute), index.search calls made on the main thread / all "
            "calls, distinct threads calling, seconds inside index.search summed over calls:"
        )
        out.append("")
        out.append(
            table(
                [
                    "configuration",
                    "median s",
                    "QPS",
                    "ratio vs peer (faster direct)",
                    f"ratio vs direct {CORES} threads",
                    "CPU s",
                    "main-thread CPU s",
                    "calls on main / all",
                    "threads calling",
                    "search s",
                ],
                rows,
                "lrrrrrrrrr",
            )
        )
        out.append("")

    # ---- re-rank
    rerank = results.get("rerank")
    if rerank:
        rows = [
            [
                str(row["k_factor"]),
                row["params"],
                fmt(row["recall"], 4),
                fmt(row["select_qps"]),
                fmt(row["lateral_qps"]),
                fmt(row["direct_qps"]),
                fmt(row["body_qps"]),
                f"{row['ratio']:.2f}",
                ms(row["single_sql"]),
            ]
            for row in rerank["rows"]
        ]
        out.append(
            f"IVF-PQ `{rerank['factory']}` (build {rerank['build_s']:.1f} s) with exact re-rank: "
            "`faiss_search(q, k := 10, k_factor := f)` = faiss_topk for ceil(10·f) candidates, then "
            "exact_rerank over vectors.npy (select-list form: "
            "`exact_rerank(q, [h.chunk_id FOR h IN faiss_topk(q, 10·f)], 10, 'ip')`; peer: index.search + "
            "numpy re-rank; `UDF body` = index.search + the exact_rerank Python function called on Arrow "
            "without DuckDB, 1 thread):"
        )
        out.append("")
        out.append(
            table(
                [
                    "k_factor",
                    "setting",
                    f"recall@{K}",
                    "select-list QPS",
                    "LATERAL faiss_search QPS",
                    "peer QPS",
                    "UDF body QPS",
                    "select-list/peer time",
                    "single faiss_search ms",
                ],
                rows,
                "llrrrrrrr",
            )
        )
        out.append("")

    # ---- vss plan checks
    if vss and "plans" in vss:
        plans = vss["plans"]
        notes = [
            f"vss plan checks (EXPLAIN): LATERAL batch uses HNSW_INDEX_JOIN with default optimizers: "
            f"{plans['lateral_default_optimizers']}; with `SET disabled_optimizers='top_n_window_elimination'`: "
            f"{plans['lateral_without_top_n_window_elimination']}. Single query uses HNSW_INDEX_SCAN with "
            f"`getvariable('q')`: {plans['single_variable']}, with a literal vector: {plans['single_literal']}, "
            f"with a scalar subquery: {plans['single_subquery']}, with `ORDER BY array_inner_product DESC`: "
            f"{plans['ip_desc_variable']}."
        ]
        silent = vss.get("silent_brute_force")
        if silent:
            notes.append(
                f"The LATERAL batch with default optimizers (brute force despite the index) ran "
                f"{silent['qps']:.1f} q/s on {silent['queries']} queries."
            )
        if "best" in vss:
            notes.append(
                f"vss single query with the vector as a SQL literal (1 statement, text formatting included): "
                f"{ms(vss['best']['single_sql_literal'])} ms."
            )
        out.append(" ".join(notes))
        out.append("")
    return "\n".join(out)


def render(all_results: list[dict[str, Any]]) -> str:
    if not all_results:
        return ""
    meta = all_results[-1]["meta"]
    libraries = ", ".join(f"{name} {version}" for name, version in meta["libraries"].items())
    head = [f"Machine: {meta['machine']}. Libraries: {libraries}. Command: `{meta['command']}`.", ""]
    return "\n".join(head + [render_dataset(r) for r in all_results])

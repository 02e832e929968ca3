"""What every benchmark script shares: where results go, the log line, the machine it ran on."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "bench" / "results"
BENCHMARKS = PROJECT / "BENCHMARKS.md"
DEMO_CATALOG = PROJECT / "demo_catalog"
CORES = os.cpu_count() or 1
#: Width of the synthetic and demo vectors (MiniLM's), neighbours per query, and the recall the
#: search benchmarks ask of every contender's cheapest setting.
DIM = 384
K = 10
RECALL_TARGET = 0.95


def log(message: str) -> None:
    """Progress on stderr, so a script's stdout stays the tables it prints."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

"""Per-connection state that UDFs share: the catalog directory, settings and lazy resources."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class CatalogContext:
    """What a connection's UDFs know about their catalog.

    ``resources`` caches expensive objects (the ONNX session, a loaded FAISS index)
    under a family-chosen key; ``lock`` guards their creation because DuckDB may call a
    UDF from several worker threads at once.
    """

    catalog_dir: Path
    #: The connection embeds a new chunk store (ingest), so ``embed`` may differ from the current store's embedder.
    ingesting: bool = False
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    def resource(self, key: str, factory: Any) -> Any:
        """Return the cached resource ``key``, creating it once with ``factory()``."""
        with self.lock:
            if key not in self.resources:
                self.resources[key] = factory()
            return self.resources[key]

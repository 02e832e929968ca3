"""Per-connection state that UDFs share: the catalog directory, settings and lazy resources."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from udfs.settings import Settings


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
    #: A mapping is checked and completed with defaults (tests and benches pass overrides only).
    settings: Settings | Mapping[str, Any] = dataclasses.field(default_factory=Settings)
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, Settings):
            self.settings = Settings.resolve(self.settings)

    def resource(self, key: str, factory: Any) -> Any:
        """Return the cached resource ``key``, creating it once with ``factory()``."""
        with self.lock:
            if key not in self.resources:
                self.resources[key] = factory()
            return self.resources[key]

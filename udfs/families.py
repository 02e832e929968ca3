"""Every UDF family, in registration order, and their registries taken together.

A family is one ``udfs/<family>.py`` module with a ``REGISTRY: tuple[UdfSpec, ...]``; a
later family may call an earlier one's UDFs.  tests/test_contract.py checks that every
module of ``udfs/`` with a REGISTRY is listed here and that DuckDB sees each entry with
its declared types.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from udfs.registry import UdfSpec, check_unique

FAMILIES = ("udfs.chunking", "udfs.embedding", "udfs.metrics", "udfs.faiss_build", "udfs.faiss_search", "udfs.explain",
            "udfs.evaluation", "udfs.autotune", "udfs.xtr")


def family_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in FAMILIES]


def all_udf_specs() -> list[UdfSpec]:
    """Every registry entry, in family order; duplicate names raise."""
    specs = [spec for module in family_modules() for spec in module.REGISTRY]
    check_unique(specs)
    return specs

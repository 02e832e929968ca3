"""Search-parameter strings ('nprobe=32,refine_k_factor=8') and the FAISS ParameterSpace boundary.

Users, tuning.json, the manifest and every SQL function name the IndexRefine factor
``refine_k_factor``, as the build option and the setting ``faiss_refine_k_factor`` do.  FAISS
calls it ``k_factor_rf``; that name is used only where a ParameterSpace is called
(:func:`faiss_name`, :func:`our_name`).  ``nprobe`` and ``efSearch`` are the same on both sides.

Files written before the rename hold ``k_factor_rf``: :func:`ours_from_faiss` translates a
string read from a catalog, once, where it is read (``faiss_versions.read_manifest``,
``faiss_tuning.read_profile``).  A person typing FAISS's name into ``faiss_set_params`` is told
the name to use instead, so one name stays in circulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import faiss

from udfs.registry import UdfError

#: Our name -> FAISS ParameterSpace name, for the knobs whose names differ.
_FAISS_NAMES = {"refine_k_factor": "k_factor_rf"}
_OUR_NAMES = {theirs: ours for ours, theirs in _FAISS_NAMES.items()}


def faiss_name(name: str) -> str:
    """The ParameterSpace name of one of our knob names."""
    return _FAISS_NAMES.get(name, name)


def our_name(name: str) -> str:
    """Our name of a ParameterSpace knob name."""
    return _OUR_NAMES.get(name, name)


def ours_from_faiss(text: str) -> str:
    """A parameter string in FAISS's names, in ours: a ParameterSpace combination name, or a string
    from a catalog file written before the rename."""
    if not text:
        return text
    return ",".join(
        f"{our_name(name.strip())}{separator}{value}"
        for name, separator, value in (item.partition("=") for item in text.split(","))
    )


def parse(text: str, function: str) -> list[tuple[str, float]]:
    """'nprobe=32,refine_k_factor=8' as (name, value) pairs; a malformed string names ``function``."""
    pairs = []
    for item in text.split(","):
        name, separator, value = item.strip().partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not separator or not name or math.isnan(number):
            raise UdfError(
                f"{function}: expected 'name=value[,name=value]' such as 'nprobe=32', got {text!r}"
            )
        if name in _OUR_NAMES:
            raise UdfError(
                f"{function}: {name!r} is FAISS's name for refine_k_factor; write refine_k_factor={value}"
            )
        pairs.append((name, number))
    return pairs


def format_parameters(values: Mapping[str, float]) -> str:
    return ",".join(f"{name}={value:g}" for name, value in values.items())


def set_on(space: faiss.ParameterSpace, index: faiss.Index, name: str, value: float) -> None:
    """``space.set_index_parameter`` under FAISS's name for ``name``; raises RuntimeError as FAISS does."""
    space.set_index_parameter(index, faiss_name(name), value)


def apply_string(index: faiss.Index, text: str, function: str) -> None:
    """Set a parameter string on a CPU index (the build writes its defaults into the index this way)."""
    space = faiss.ParameterSpace()
    for name, value in parse(text, function):
        set_on(space, index, name, value)


def current_parameters(index: faiss.Index) -> dict[str, float]:
    """The search parameters set on ``index`` (nprobe, efSearch, refine_k_factor), through its wrappers.

    ParameterSpace can set these but not read them back, so walk the wrapper chain:
    IDMap2 -> (PreTransform) -> (Refine) -> (Replicas/Shards on GPU) -> IVF or HNSW.
    Listed innermost first, the order the factory string reads ("IVF...,RFlat": nprobe, refine_k_factor).
    """
    outermost_first: list[tuple[str, float]] = []
    node: Any = faiss.downcast_index(index)
    while node is not None:
        child = None
        if isinstance(node, faiss.IndexRefine):
            outermost_first.append(("refine_k_factor", node.k_factor))
            child = node.base_index
        elif isinstance(node, faiss.IndexIDMap | faiss.IndexPreTransform):
            child = node.index
        elif isinstance(node, faiss.IndexReplicas | faiss.IndexShards):
            child = node.at(0)
        elif hasattr(node, "nprobe"):
            outermost_first.append(("nprobe", node.nprobe))
        elif hasattr(node, "hnsw"):
            outermost_first.append(("efSearch", node.hnsw.efSearch))
        node = faiss.downcast_index(child) if child is not None else None
    return dict(reversed(outermost_first))

"""The tuning profile (``tuning.json`` in an index version): its format, written and read here only.

A build writes :data:`NO_PROFILE` (``{}``).  Autotune (:mod:`udfs.faiss_sweep`) writes, through
:func:`save_profile`::

    {"format": 1,
     "parameters": "nprobe=32,refine_k_factor=8",   # applied at every load of the version
     "index": {"version", "factory", "dimension", "ntotal", "family", "metric", "device"},
     ... what the sweep measured (grid, pick, oracle, queries, timing) ...}

Loading (:func:`apply_profile`) applies ``"parameters"`` and refuses a profile whose
``"index"`` names another index (:data:`PROFILE_IDENTITY_FIELDS`): its operating point means
nothing for this one.  A hand-written ``{"parameters": ...}`` without ``"index"`` is applied as
written.  Profiles written before the knob rename name FAISS's ``k_factor_rf``;
:func:`read_profile` gives them today's names, once, as it reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from udfs.faiss_loaded import LoadedIndex
from udfs.faiss_params import format_parameters, our_name, ours_from_faiss, parse
from udfs.faiss_versions import TUNING_FILE
from udfs.registry import UdfError
from udfs.versioned_dir import write_json_atomic

logger = logging.getLogger("codeintel.faiss")

PROFILE_FORMAT = 1
#: What a version holds until it is tuned.
NO_PROFILE: dict[str, Any] = {}
#: The facts that tie a tuning profile to the index it was measured on.
PROFILE_IDENTITY_FIELDS = ("version", "factory", "dimension", "ntotal")


def profile_identity(loaded: LoadedIndex) -> dict[str, Any]:
    """What a profile records under ``"index"``, and what loading checks it against."""
    return {
        "version": loaded.version,
        "factory": loaded.manifest["factory"],
        "dimension": loaded.dimension,
        "ntotal": loaded.ntotal,
    }


def write_profile(path: Path, profile: Mapping[str, Any]) -> None:
    """Write tuning.json whole or not at all: readers see the old profile or the new one."""
    write_json_atomic(path, dict(profile))


def save_profile(loaded: LoadedIndex, measured: Mapping[str, Any]) -> tuple[dict[str, Any], Path]:
    """The profile of ``loaded`` as its parameters are set now, with what the sweep ``measured``; written."""
    profile = {
        "format": PROFILE_FORMAT,
        "parameters": loaded.parameters(),
        "index": {**profile_identity(loaded), "family": loaded.family, "metric": loaded.metric,
                  "device": loaded.device},
        **measured,
    }
    path = loaded.directory / TUNING_FILE
    write_profile(path, profile)
    return profile, path


def _renamed(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile with every parameter string and range name in today's knob names."""
    for key in ("parameters", "untuned_parameters"):
        if isinstance(profile.get(key), str):
            profile[key] = ours_from_faiss(profile[key])
    for point in [profile.get("picked"), *profile.get("grid", [])]:
        if isinstance(point, dict) and isinstance(point.get("parameters"), str):
            point["parameters"] = ours_from_faiss(point["parameters"])
    if isinstance(profile.get("parameter_space"), dict):
        profile["parameter_space"] = {our_name(name): values for name, values in profile["parameter_space"].items()}
    return profile


def read_profile(path: Path) -> dict[str, Any]:
    """A version's tuning.json (``{}`` when absent), checked for shape, in today's knob names."""
    try:
        profile = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise UdfError(f"faiss: {path} is not valid JSON ({error}); fix it or replace it with {{}}") from error
    if not isinstance(profile, dict) or not isinstance(profile.get("index", {}), dict):
        raise UdfError(
            f"faiss: {path} must hold a JSON object (with an object under 'index'); fix it or replace it with {{}}"
        )
    return _renamed(profile)


def _describe_identity(identity: Mapping[str, Any]) -> str:
    return (
        f"version {identity.get('version', '?')} ({identity.get('factory', '?')}, "
        f"dimension {identity.get('dimension', '?')}, {identity.get('ntotal', '?')} vectors)"
    )


def _check_identity(profile: Mapping[str, Any], loaded: LoadedIndex, path: Path) -> None:
    """Refuse a profile measured on another index: its operating point means nothing for this one."""
    measured_on = profile.get("index", {})
    this_index = profile_identity(loaded)
    differing = [
        field for field in PROFILE_IDENTITY_FIELDS if field in measured_on and measured_on[field] != this_index[field]
    ]
    if differing:
        catalog_dir = loaded.directory.parent.parent.parent
        raise UdfError(
            f"faiss: tuning profile {path} was measured on index {_describe_identity(measured_on)}, "
            f"not on this index {_describe_identity(this_index)} ({', '.join(differing)} differ); "
            f"re-tune this index with `python bootstrap.py autotune --catalog {catalog_dir}` "
            "or replace the file with {}"
        )


def apply_profile(loaded: LoadedIndex) -> bool:
    """Apply the version's profile to ``loaded``; return whether it has one.

    nprobe is clamped to the GPU limit when the index was placed on a GPU.
    """
    path = loaded.directory / TUNING_FILE
    profile = read_profile(path)
    if "parameters" not in profile:
        return False
    _check_identity(profile, loaded, path)
    text = profile["parameters"]
    if not text:  # Flat: the profile records that there is nothing to tune
        return True
    function = f"faiss ({path})"
    pairs = parse(text, function)
    if loaded.max_k is not None and any(name == "nprobe" and value > loaded.max_k for name, value in pairs):
        logger.warning("faiss: %s sets nprobe above the GPU limit; clamping to %d", path, loaded.max_k)
        text = format_parameters(
            {name: min(value, loaded.max_k) if name == "nprobe" else value for name, value in pairs}
        )
    loaded.set_parameters(text, function)
    return True

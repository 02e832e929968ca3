"""FAISS index lifecycle of a catalog: choose a family, build, publish, roll back, collect garbage, load.

Layout under ``<catalog>/index`` (fixed by the catalog conventions)::

    versions/<version>/        one complete build, never modified after its rename
    versions/.tmp-<uuid>/      a build in progress, renamed to versions/<version> when complete; it
                               holds its owner's pid and host, so the next build or gc removes it
                               once that process is gone (``udfs/staging.py``)
    CURRENT -> versions/<v>    relative symlink, flipped atomically (temp symlink + os.replace)

A version directory holds:

* ``index.faiss``: an ``IndexIDMap2`` (chunk ids as external ids) around the family's index,
  with its default search parameters (nprobe, efSearch, k_factor_rf) set before writing;
* ``faiss_idmap.parquet``: ``faiss_row BIGINT, external_id BIGINT`` for the SQL views;
* ``vectors.npy``: the store's raw embeddings, row ``i`` belonging to faiss row ``i``; vectors
  are added in ascending id order, so the id column is sorted and ``np.searchsorted`` maps a
  chunk id to its row (used by ``exact_rerank``);
* ``tuning.json``: ``{}`` until autotune (``udfs/autotune.py``) writes a profile: ``"parameters"``
  (a ParameterSpace string such as ``"nprobe=32"``, applied at load) and ``"index"`` (the
  version, factory, dimension and ntotal it was measured on; a profile naming another index is
  refused); with setting ``autotune_on_start`` a version without a profile is tuned on load;
* ``manifest.json``: what was built, from which store, why, with which libraries.

Settings (``DEFAULT_SETTINGS``, read from ``context.settings``): every :class:`BuildOptions`
field as ``faiss_<field>`` (``faiss_nlist``, ``faiss_metric``, ...; function arguments to
``build_index``/``faiss_build`` override them, unprefixed), plus the load-time
``faiss_use_gpu`` (default off), ``faiss_gpu_mode`` ('replicate' | 'shard') and
``faiss_threads`` (default adaptive, see :func:`_search_threads`).

Metrics: 'ip' (inner product; the store's embeddings are already normalised, so this is
cosine without the cost of normalising), 'cos' (vectors and queries normalised first), 'l2'.
Scores are similarities, higher is better: for 'l2' the score is the negated squared distance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from udfs import progress
from udfs import staging as staging_dirs
from udfs.context import CatalogContext
from udfs.metrics import ANN_SEARCH_SECONDS
from udfs.registry import UdfError

logger = logging.getLogger("codeintel.faiss")

INDEX_FILE = "index.faiss"
IDMAP_FILE = "faiss_idmap.parquet"
VECTORS_FILE = "vectors.npy"
TUNING_FILE = "tuning.json"
MANIFEST_FILE = "manifest.json"

FAMILIES = ("flat", "ivf_flat", "ivf_sq", "ivf_pq", "hnsw", "ivf_pq_refine")
#: Scalar quantizers of ivf_sq: float16 codes (half the bytes of IVF-Flat, recall unchanged on
#: the 1M benchmark set and 1.5x its QPS: the list scan is memory-bound) or 8-bit codes.
SQ_TYPES = ("fp16", "8")
METRICS = ("ip", "cos", "l2")
GPU_MODES = ("replicate", "shard")
# What faiss's GPU cloner can place on a GPU: HNSW has no GPU implementation and
# IndexRefine (the RFlat of ivf_pq_refine) is rejected by ToGpuCloner.
GPU_FAMILIES = frozenset({"flat", "ivf_flat", "ivf_sq", "ivf_pq"})
# faiss GPU k-selection limit (GPU_MAX_SELECTION_K); it bounds nprobe as well.
GPU_MAX_K = 2048

# auto: below this many vectors exact search costs less than any index's training.
FLAT_MAX_VECTORS = 50_000
# auto: above this many vectors an HNSW build takes too long on a few cores; IVF-PQ trains on a sample.
HNSW_MAX_VECTORS = 1_000_000
# k-means wants at least this many training points per centroid (faiss warns below 39).
TRAIN_POINTS_PER_CENTROID = 39
DEFAULT_TRAIN_SAMPLE = 100_000
# Builds get one OpenMP thread per this many vectors: on small stores thread start-up and
# spin-waiting cost more than they save (IVF-PQ training on 2000 x 384: 0.2 s with 1 thread,
# 7 s with 2 on a 2-core machine).
BUILD_VECTORS_PER_THREAD = 50_000
#: Vectors per add call of a build (not HNSW), so a long add reports progress between batches.
ADD_BATCH_ROWS = 100_000
# OPQ trains an internal 8-bit PQ (256 centroids per sub-space) whatever pq_nbits is.
OPQ_MIN_TRAIN = TRAIN_POINTS_PER_CENTROID * 256
RESOURCE_KEY = "faiss.loaded_index"

_BUILD_HINT = (
    "build one with `python bootstrap.py build --catalog {catalog}` or `SELECT * FROM faiss_build()`"
)
_REPAIR_HINT = (
    "rebuild with `python bootstrap.py build --catalog {catalog}` "
    "or roll back with `python bootstrap.py rollback --catalog {catalog}`"
)


# --------------------------------------------------------------------------- layout


def _index_root(catalog_dir: Path) -> Path:
    return Path(catalog_dir) / "index"


def _versions_dir(catalog_dir: Path) -> Path:
    return _index_root(catalog_dir) / "versions"


def _current_link(catalog_dir: Path) -> Path:
    return _index_root(catalog_dir) / "CURRENT"


def current_version(catalog_dir: Path) -> str | None:
    """The published version, read from the CURRENT symlink (one readlink: cheap enough per UDF call)."""
    try:
        return Path(os.readlink(_current_link(catalog_dir))).name
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UdfError(
            f"faiss: {_current_link(catalog_dir)} must be a symlink to versions/<version> ({error}); "
            f"{_REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error


def _complete_versions(catalog_dir: Path) -> list[str]:
    """Version names with a manifest, oldest first (names start with a UTC timestamp)."""
    root = _versions_dir(catalog_dir)
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if not entry.name.startswith(".") and (entry / MANIFEST_FILE).is_file()
    )


def _new_version_name() -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk so a published version survives a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- build options and plan


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Build settings; ``None`` means "derive from the store" (see :func:`plan_index`)."""

    nlist: int | None = None  # IVF lists; default about 4*sqrt(n), at most train_size/39
    pq_m: int | None = None  # PQ sub-quantizers; default the largest divisor of d up to d/8
    pq_nbits: int | None = None  # bits per PQ code; default 8, fewer for tiny training sets
    opq: bool = False  # rotate with OPQ before PQ (PQ families only)
    hnsw_m: int = 32
    ef_construction: int = 200
    metric: str = "ip"
    train_sample: int | None = None  # seeded training sample size; default max(100k, 39*nlist)
    nprobe: int = 16  # default search nprobe written into the index (clamped to nlist)
    ef_search: int = 64  # default HNSW efSearch written into the index
    refine_k_factor: float = 4.0  # default k_factor_rf of ivf_pq_refine
    sq_type: str = "fp16"  # ivf_sq codes: 'fp16' or '8' (bits per dimension)
    seed: int = 1234
    memory_budget_bytes: int | None = None  # auto only; default half of physical memory
    use_gpu: bool = False  # auto only: prefer a GPU-capable family
    build_threads: int | None = None  # OpenMP threads for train/add; default 1 per 50k vectors, up to all cores

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BuildOptions:
        """Validated options from settings or arguments; ``None`` values keep the default."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UdfError(
                f"faiss_build: unknown option(s) {', '.join(unknown)}; known options: {', '.join(fields)}"
            )
        options = cls(
            **{
                name: _coerce_option(name, value, fields[name].type)
                for name, value in values.items()
                if value is not None
            }
        )
        options._validate()
        return options

    def _validate(self) -> None:
        at_least_one = (
            "nlist",
            "pq_m",
            "pq_nbits",
            "ef_construction",
            "train_sample",
            "nprobe",
            "ef_search",
            "build_threads",
        )
        for name in at_least_one:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UdfError(f"faiss_build: {name} must be at least 1, got {value}")
        if self.hnsw_m < 2:
            raise UdfError(f"faiss_build: hnsw_m must be at least 2, got {self.hnsw_m}")
        if self.pq_nbits is not None and self.pq_nbits > 16:
            raise UdfError(f"faiss_build: pq_nbits must be at most 16, got {self.pq_nbits}")
        if self.refine_k_factor < 1:
            raise UdfError(f"faiss_build: refine_k_factor must be at least 1, got {self.refine_k_factor}")
        if self.sq_type not in SQ_TYPES:
            raise UdfError(
                f"faiss_build: sq_type must be one of {', '.join(map(repr, SQ_TYPES))}, got {self.sq_type!r}"
            )
        if self.metric not in METRICS:
            raise UdfError(
                f"faiss_build: metric must be one of {', '.join(map(repr, METRICS))}, got {self.metric!r}"
            )


def build_option_names() -> tuple[str, ...]:
    """Every name a build accepts as an option: the :class:`BuildOptions` fields, then ``publish``.

    Callers that take options by name (``bootstrap.py build --option``) check against this
    list before anything runs, so a misspelled option is refused instead of being ignored.
    """
    return (*(field.name for field in dataclasses.fields(BuildOptions)), "publish")


#: Every ``faiss_*`` setting with its default: the build options prefixed (``None`` means
#: derived, as documented on BuildOptions), then the load-time ones.
DEFAULT_SETTINGS: dict[str, Any] = {
    **{f"faiss_{field.name}": field.default for field in dataclasses.fields(BuildOptions)},
    "faiss_gpu_mode": "replicate",
    "faiss_threads": None,
}


def build_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The build options among a connection's ``faiss_*`` settings, without the prefix."""
    names = {field.name for field in dataclasses.fields(BuildOptions)}
    return {
        key.removeprefix("faiss_"): value
        for key, value in settings.items()
        if key.startswith("faiss_") and key.removeprefix("faiss_") in names
    }


_OPTION_KINDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string"}


def _coerce_option(name: str, value: Any, annotation: str) -> Any:
    """Accept the natural spellings from SQL JSON and command lines ("64", "true") for typed options."""
    kind = annotation.split(" ")[0]
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as error:
        raise UdfError(f"faiss_build: option {name} must be {_OPTION_KINDS[kind]}, got {value!r}") from error


@dataclasses.dataclass(frozen=True)
class IndexPlan:
    """What will be built: the factory string and everything derived for it."""

    family: str
    family_reason: str
    factory: str
    metric: str
    search_parameters: str  # ParameterSpace string written into the index, e.g. "nprobe=16"
    train_size: int  # rows drawn for training; 0 when the family needs none
    build_parameters: dict[str, Any]


def _default_memory_budget() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def choose_family(ntotal: int, dimension: int, options: BuildOptions) -> tuple[str, str]:
    """The family ``auto`` builds for ``ntotal`` vectors, and the reason recorded in the manifest."""
    raw_bytes = ntotal * dimension * 4
    budget = options.memory_budget_bytes or _default_memory_budget()
    sizes = f"raw vectors {raw_bytes / 2**30:.2f} GiB, memory budget {budget / 2**30:.2f} GiB"
    if ntotal < FLAT_MAX_VECTORS:
        return (
            "flat",
            f"auto: {ntotal} vectors < {FLAT_MAX_VECTORS}: exact Flat search is fast at this size "
            "and needs no training",
        )
    if raw_bytes * 1.5 > budget:
        return "ivf_pq", (
            f"auto: {ntotal} vectors, {sizes}: raw vectors do not fit, IVF-PQ keeps only compressed codes in memory; "
            "re-rank with faiss_search(k_factor := 4), which reads the memory-mapped vectors.npy"
        )
    if ntotal >= HNSW_MAX_VECTORS:
        return "ivf_pq_refine", (
            f"auto: {ntotal} vectors >= {HNSW_MAX_VECTORS} ({sizes}): IVF-PQ scans compressed codes "
            "trained on a sample, RFlat re-ranks its candidates with exact distances"
        )
    if options.use_gpu:
        return "ivf_flat", (
            f"auto: {ntotal} vectors in [{FLAT_MAX_VECTORS}, {HNSW_MAX_VECTORS}) ({sizes}) "
            "and use_gpu is on: "
            "IVF-Flat keeps exact distances in the probed lists and runs on GPU, HNSW does not"
        )
    return "hnsw", (
        f"auto: {ntotal} vectors in [{FLAT_MAX_VECTORS}, {HNSW_MAX_VECTORS}) ({sizes}): "
        "HNSW gives the best CPU latency and recall at this size and needs no training"
    )


def _default_pq_m(dimension: int) -> int:
    """The largest divisor of ``dimension`` up to d/8: about 8 dimensions per sub-quantizer."""
    limit = max(1, dimension // 8)
    return max(m for m in range(1, limit + 1) if dimension % m == 0)


def plan_index(family: str, ntotal: int, dimension: int, options: BuildOptions) -> IndexPlan:
    """Resolve ``family`` (or ``auto``) and the options into a factory string and its parameters."""
    if family == "auto":
        family, reason = choose_family(ntotal, dimension, options)
    elif family in FAMILIES:
        reason = f"requested explicitly (family={family!r})"
    else:
        raise UdfError(
            f"faiss_build: family must be 'auto' or one of {', '.join(map(repr, FAMILIES))}, got {family!r}"
        )

    parameters: dict[str, Any] = {"metric": options.metric}
    if family == "flat":
        return IndexPlan(family, reason, "Flat", options.metric, "", 0, parameters)
    if family == "hnsw":
        parameters.update(
            hnsw_m=options.hnsw_m, ef_construction=options.ef_construction, ef_search=options.ef_search
        )
        factory = f"HNSW{options.hnsw_m},Flat"
        return IndexPlan(
            family, reason, factory, options.metric, f"efSearch={options.ef_search}", 0, parameters
        )

    wanted_nlist = options.nlist or max(1, round(4 * math.sqrt(ntotal)))
    train_size = min(
        ntotal, options.train_sample or max(DEFAULT_TRAIN_SAMPLE, TRAIN_POINTS_PER_CENTROID * wanted_nlist)
    )
    if options.nlist is None:
        nlist = max(1, min(wanted_nlist, train_size // TRAIN_POINTS_PER_CENTROID))
    elif options.nlist > train_size:
        raise UdfError(
            f"faiss_build: nlist={options.nlist} needs at least that many training vectors, "
            f"the store/train_sample gives {train_size}; lower nlist"
        )
    else:
        nlist = options.nlist
    nprobe = min(options.nprobe, nlist)
    parameters.update(nlist=nlist, nprobe=nprobe, train_size=train_size, seed=options.seed)
    if family in ("ivf_flat", "ivf_sq"):
        codes = "Flat" if family == "ivf_flat" else f"SQ{options.sq_type}"
        if family == "ivf_sq":
            parameters.update(sq_type=options.sq_type)
        return IndexPlan(
            family, reason, f"IVF{nlist},{codes}", options.metric, f"nprobe={nprobe}", train_size, parameters
        )

    pq_m = options.pq_m or _default_pq_m(dimension)
    if dimension % pq_m:
        raise UdfError(
            f"faiss_build: pq_m={pq_m} must divide the dimension {dimension}; pick a divisor of {dimension}"
        )
    # 8 bits unless the training sample cannot give every PQ centroid 39 points.
    default_nbits = min(8, max(4, int(math.log2(max(2, train_size / TRAIN_POINTS_PER_CENTROID)))))
    pq_nbits = options.pq_nbits or default_nbits
    if 2**pq_nbits > train_size:
        raise UdfError(
            f"faiss_build: pq_nbits={pq_nbits} needs at least {2**pq_nbits} training vectors, "
            f"the store/train_sample gives {train_size}; lower pq_nbits"
        )
    if options.opq and train_size < OPQ_MIN_TRAIN:
        raise UdfError(
            f"faiss_build: opq needs at least {OPQ_MIN_TRAIN} training vectors (it trains its own 8-bit PQ), "
            f"the store/train_sample gives {train_size}; leave opq off for this store"
        )
    rotation = f"OPQ{pq_m}," if options.opq else ""
    # "np": no polysemous training, which only serves Hamming-threshold search we never use and
    # made training 50x slower (11 s instead of 0.2 s for 2000 x 384).
    factory = f"{rotation}IVF{nlist},PQ{pq_m}x{pq_nbits}np"
    parameters.update(pq_m=pq_m, pq_nbits=pq_nbits, opq=options.opq)
    if family == "ivf_pq":
        return IndexPlan(family, reason, factory, options.metric, f"nprobe={nprobe}", train_size, parameters)
    parameters.update(refine_k_factor=options.refine_k_factor)
    search = f"nprobe={nprobe},k_factor_rf={options.refine_k_factor:g}"
    return IndexPlan(family, reason, f"{factory},RFlat", options.metric, search, train_size, parameters)


# --------------------------------------------------------------------------- store


@dataclasses.dataclass(frozen=True)
class StoreSnapshot:
    """The embeddings of ``store/CURRENT``, sorted by chunk id."""

    version: str
    fingerprint: str
    ids: np.ndarray  # int64, ascending
    vectors: np.ndarray  # float32 (n, d); row i belongs to ids[i]
    skipped_null_embeddings: int


def _store_dir(catalog_dir: Path) -> Path:
    return Path(catalog_dir) / "store" / "CURRENT"


def store_fingerprint(catalog_dir: Path) -> str | None:
    """The fingerprint of the published chunk store, or None when there is none."""
    try:
        return str(json.loads((_store_dir(catalog_dir) / "store.json").read_text())["fingerprint"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None


def read_store(catalog_dir: Path) -> StoreSnapshot:
    """Ids and embeddings of the published store, read column-wise with pyarrow (no per-row Python)."""
    store = _store_dir(catalog_dir)
    chunks_path = store / "chunks.parquet"
    if not chunks_path.is_file():
        raise UdfError(
            f"faiss_build: no chunk store at {store} (missing chunks.parquet); build the chunk store first"
        )
    info = json.loads((store / "store.json").read_text())
    table = pq.read_table(chunks_path, columns=["id", "embedding"])
    embedding = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(embedding.type):
        raise UdfError(
            f"faiss_build: {chunks_path} column embedding must be FixedSizeList<float>, "
            f"found {embedding.type}"
        )
    skipped = embedding.null_count
    if skipped:
        logger.warning(
            "faiss_build: %d chunks in %s have a NULL embedding and are left out of the index",
            skipped,
            chunks_path,
        )
    present = embedding.is_valid()
    embedding = embedding.filter(present)
    ids_column = table.column("id").combine_chunks().filter(present)
    if ids_column.null_count:
        raise UdfError(f"faiss_build: {chunks_path} has NULL ids; rebuild the chunk store")
    ids = ids_column.cast(pa.int64()).to_numpy()
    dimension = embedding.type.list_size
    vectors = (
        embedding.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False).reshape(len(ids), dimension)
    )
    if len(ids) == 0:
        raise UdfError(f"faiss_build: the store {chunks_path} has no embedded chunks; nothing to index")
    if (ids <= 0).any():
        raise UdfError(f"faiss_build: {chunks_path} has non-positive ids; chunk ids must be positive")
    order = np.argsort(ids, kind="stable")
    ids, vectors = ids[order], vectors[order]
    if (ids[1:] == ids[:-1]).any():
        raise UdfError(f"faiss_build: {chunks_path} has duplicate ids; chunk ids must be unique")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise UdfError(
            f"faiss_build: {int((~finite).sum())} embeddings in {chunks_path} contain NaN or infinity "
            f"(first chunk id {int(ids[~finite][0])}); re-embed the store"
        )
    return StoreSnapshot(
        # store.json is written before its directory gets the version name, so the name is the version.
        version=str(info.get("version") or store.resolve().name),
        fingerprint=str(info["fingerprint"]),
        ids=ids,
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        skipped_null_embeddings=int(skipped),
    )


# --------------------------------------------------------------------------- build


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def train_and_add(plan: IndexPlan, store: StoreSnapshot, threads: int) -> faiss.IndexIDMap2:
    """``index_factory`` + ``IndexIDMap2``: train on a seeded sample, add every vector with its chunk id."""
    # Per calling thread (an OpenMP ICV): a build run from a DuckDB worker thread gets it too.
    faiss.omp_set_num_threads(threads)
    vectors = store.vectors
    if plan.metric == "cos":
        vectors = vectors.copy()
        faiss.normalize_L2(vectors)
    index = faiss.IndexIDMap2(faiss.index_factory(vectors.shape[1], plan.factory, _faiss_metric(plan.metric)))
    if plan.family == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = plan.build_parameters["ef_construction"]
    if not index.is_trained:
        sample = np.random.default_rng(plan.build_parameters["seed"]).choice(
            len(vectors), plan.train_size, replace=False
        )
        with progress.stage(f"faiss_build: training {plan.family}", total=plan.train_size, unit="vectors") as step:
            index.train(vectors[np.sort(sample)])
            step.advance(plan.train_size)
    # HNSW is added in one call: its graph depends on how vectors are batched.  Other families
    # encode each vector on its own, so adding in batches builds the same index.
    batch = len(vectors) if plan.family == "hnsw" else max(1, ADD_BATCH_ROWS)
    with progress.stage(f"faiss_build: adding to {plan.family}", total=len(vectors), unit="vectors") as step:
        for start in range(0, len(vectors), batch):
            index.add_with_ids(vectors[start : start + batch], store.ids[start : start + batch])
            step.advance(len(vectors[start : start + batch]))
    if plan.search_parameters:
        faiss.ParameterSpace().set_index_parameters(index, plan.search_parameters)
    return index


def _write_index_file(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))
    _fsync(path)


def _write_version_files(
    directory: Path, index: faiss.IndexIDMap2, store: StoreSnapshot, manifest: dict[str, Any]
) -> None:
    _write_index_file(index, directory / INDEX_FILE)
    idmap = pa.table(
        {"faiss_row": pa.array(np.arange(len(store.ids), dtype=np.int64)), "external_id": pa.array(store.ids)}
    )
    pq.write_table(idmap, directory / IDMAP_FILE)
    np.save(directory / VECTORS_FILE, store.vectors)
    (directory / TUNING_FILE).write_text("{}\n")
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    for name in (IDMAP_FILE, VECTORS_FILE, TUNING_FILE, MANIFEST_FILE):
        _fsync(directory / name)


def build_index(
    catalog_dir: Path | str, family: str = "auto", *, publish: bool = True, **params: Any
) -> dict[str, Any]:
    """Build an index over ``store/CURRENT`` as a new version, publish it unless ``publish=False``.

    Returns the version's manifest.

    ``params`` are :class:`BuildOptions` fields.  The version is written under
    ``versions/.tmp-<uuid>`` and renamed only when complete, and CURRENT is flipped only
    after that, so any failure leaves CURRENT on the last good version.
    """
    catalog_dir = Path(catalog_dir)
    options = BuildOptions.from_mapping(params)
    started = time.perf_counter()
    with progress.stage("faiss_build: reading the store"):
        store = read_store(catalog_dir)
    plan = plan_index(family, len(store.ids), store.vectors.shape[1], options)
    logger.info(
        "faiss_build: building %s (%s) over %d vectors: %s",
        plan.family,
        plan.factory,
        len(store.ids),
        plan.family_reason,
    )
    threads = options.build_threads or min(os.cpu_count() or 1, 1 + len(store.ids) // BUILD_VECTORS_PER_THREAD)
    index = train_and_add(plan, store, threads)

    version = _new_version_name()
    manifest = {
        "version": version,
        "family": plan.family,
        "family_reason": plan.family_reason,
        "factory": plan.factory,
        "metric": plan.metric,
        "dimension": int(store.vectors.shape[1]),
        "ntotal": int(index.ntotal),
        "store": {
            "version": store.version,
            "fingerprint": store.fingerprint,
            "skipped_null_embeddings": store.skipped_null_embeddings,
        },
        "build_parameters": plan.build_parameters,
        "search_parameters": plan.search_parameters,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
        "libraries": {"faiss": faiss.__version__, "numpy": np.__version__, "duckdb": duckdb.__version__},
    }
    versions = _versions_dir(catalog_dir)
    # A build killed earlier (kill -9, OOM) left a full-size staging directory: this build removes it.
    staging_dirs.remove_abandoned(versions)
    staging = staging_dirs.create(versions)
    try:
        with progress.stage(f"faiss_build: writing version {version}"):
            _write_version_files(staging, index, store, manifest)
        staging_dirs.release(staging)
        staging.rename(versions / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync(versions)
    if publish:
        try:
            _flip_current(catalog_dir, version)
        except BaseException:
            logger.error(
                "faiss_build: version %s is complete but was not published; CURRENT is unchanged. "
                "Publish it with `python bootstrap.py publish --catalog %s %s`",
                version,
                catalog_dir,
                version,
            )
            raise
    return manifest


# --------------------------------------------------------------------------- publish, rollback, gc


def _flip_current(catalog_dir: Path, version: str) -> None:
    """Point CURRENT at ``versions/<version>`` atomically: readers see the old or the new target."""
    root = _index_root(catalog_dir)
    temporary = root / f".CURRENT-{uuid.uuid4().hex}"
    os.symlink(f"versions/{version}", temporary)
    try:
        os.replace(temporary, _current_link(catalog_dir))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(root)


def publish(catalog_dir: Path | str, version: str) -> dict[str, Any]:
    """Make a complete version the published one; return ``{"current", "previous"}``.

    Publishing the version CURRENT already names changes nothing (``current == previous``),
    so a script that repeats ``rollback --to V`` after a failure cannot move CURRENT twice.
    """
    catalog_dir = Path(catalog_dir)
    if (
        version not in _complete_versions(catalog_dir)
        or not (_versions_dir(catalog_dir) / version / INDEX_FILE).is_file()
    ):
        available = ", ".join(_complete_versions(catalog_dir)) or "none"
        raise UdfError(
            f"publish: version {version!r} is not a complete build in {_versions_dir(catalog_dir)}; "
            f"available: {available}"
        )
    previous = current_version(catalog_dir)
    if previous == version:
        logger.info("faiss: index version %s is already published; CURRENT unchanged", version)
        return {"current": version, "previous": previous}
    _flip_current(catalog_dir, version)
    logger.info("faiss: published index version %s (was %s)", version, previous)
    return {"current": version, "previous": previous}


def rollback(catalog_dir: Path | str, to: str | None = None) -> dict[str, Any]:
    """Publish ``to``, or by default the newest version older than the current one."""
    catalog_dir = Path(catalog_dir)
    if to is not None:
        return publish(catalog_dir, to)
    current = current_version(catalog_dir)
    if current is None:
        raise UdfError(
            f"rollback: no index is published in {_index_root(catalog_dir)}; "
            f"{_BUILD_HINT.format(catalog=catalog_dir)}"
        )
    older = [version for version in _complete_versions(catalog_dir) if version < current]
    if not older:
        raise UdfError(
            f"rollback: no version older than {current} in {_versions_dir(catalog_dir)}; "
            "pass to=<version> or rebuild"
        )
    return publish(catalog_dir, older[-1])


def gc(catalog_dir: Path | str, keep: int = 3) -> dict[str, Any]:
    """Remove all but the ``keep`` newest versions, never CURRENT; also abandoned ``.tmp-*`` build directories.

    A build directory is abandoned when its owner process is gone (:mod:`udfs.staging`);
    one whose owner still runs is a build in progress and stays.

    Readers of a removed version keep working: the index was read into memory and
    ``vectors.npy`` is memory-mapped, and Linux keeps an unlinked file's pages alive while mapped.
    """
    catalog_dir = Path(catalog_dir)
    if keep < 1:
        raise UdfError(f"gc: keep must be at least 1, got {keep}")
    current = current_version(catalog_dir)
    versions = _complete_versions(catalog_dir)
    kept = set(versions[-keep:]) | ({current} if current else set())
    removed = []
    for version in versions:
        if version not in kept:
            shutil.rmtree(_versions_dir(catalog_dir) / version)
            removed.append(version)
    removed += staging_dirs.remove_abandoned(_versions_dir(catalog_dir))
    logger.info("faiss gc: removed %s, kept %s", removed or "nothing", sorted(kept))
    return {"current": current, "kept": sorted(kept), "removed": removed}


def list_versions(catalog_dir: Path | str) -> dict[str, Any]:
    """Every complete version, oldest first, with the manifest facts a person picks a rollback target by."""
    catalog_dir = Path(catalog_dir)
    current = current_version(catalog_dir)
    rows = []
    for version in _complete_versions(catalog_dir):
        manifest = json.loads((_versions_dir(catalog_dir) / version / MANIFEST_FILE).read_text())
        rows.append(
            {
                "version": version,
                "current": version == current,
                "family": manifest["family"],
                "factory": manifest["factory"],
                "ntotal": manifest["ntotal"],
                "store_version": manifest["store"]["version"],
                "built_at": manifest["built_at"],
            }
        )
    return {"current": current, "versions": rows}


# --------------------------------------------------------------------------- load


def _search_threads(settings: Mapping[str, Any]) -> int | None:
    """OpenMP threads per FAISS search call: setting ``faiss_threads``, or None for adaptive.

    DuckDB calls the UDF from its worker threads, one chunk of query rows each, and faiss
    releases the GIL while searching.  A fixed OpenMP team per call either oversubscribes
    the cores when several chunks are in flight (2 threads x 2 calls on 2 cores: 3.3-4.4 s
    against 1.8-1.9 s for 8192 Flat queries) or leaves cores idle when DuckDB hands the
    whole query column to one call (bench/bench_search.py measured faiss_topk at 2.0x the
    time of index.search with 1 thread per call).  Adaptive, the default, gives each call
    cores // (searches in flight) threads, which measured 1.04x.  ``omp_set_num_threads``
    is per calling thread (an OpenMP ICV), so :meth:`LoadedIndex.search` sets it each call.
    The team still shares the cores with DuckDB's Python client, which spins while a worker
    thread runs the call; bootstrap.core_owning_names gives those statements DuckDB's one thread.
    """
    value = settings.get("faiss_threads", DEFAULT_SETTINGS["faiss_threads"])
    if value is None:
        return None
    threads = int(value)
    if threads < 1:
        raise UdfError(f"faiss: setting faiss_threads must be at least 1 (or null for adaptive), got {threads}")
    return threads


def parse_parameter_string(text: str, function: str) -> list[tuple[str, float]]:
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
        pairs.append((name, number))
    return pairs


def current_parameters(index: faiss.Index) -> dict[str, float]:
    """The search parameters set on ``index`` (nprobe, efSearch, k_factor_rf), through its wrappers.

    ParameterSpace can set these but not read them back, so walk the wrapper chain:
    IDMap2 -> (PreTransform) -> (Refine) -> (Replicas/Shards on GPU) -> IVF or HNSW.
    Listed innermost first, the order the factory string reads ("IVF...,RFlat": nprobe, k_factor_rf).
    """
    outermost_first: list[tuple[str, float]] = []
    node: Any = faiss.downcast_index(index)
    while node is not None:
        child = None
        if isinstance(node, faiss.IndexRefine):
            outermost_first.append(("k_factor_rf", node.k_factor))
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


def format_parameters(values: Mapping[str, float]) -> str:
    return ",".join(f"{name}={value:g}" for name, value in values.items())


@dataclasses.dataclass
class LoadedIndex:
    """One published version, fully in memory (vectors.npy memory-mapped), ready to search."""

    version: str
    directory: Path
    manifest: dict[str, Any]
    index: faiss.Index  # the CPU IndexIDMap2 or its GPU clone
    ids: np.ndarray  # faiss row -> chunk id, ascending
    vectors: np.ndarray  # (ntotal, d) raw store vectors, row-aligned with ids, memory-mapped
    device: str  # "cpu" or "gpu:<mode>:<gpus>"
    threads: int | None  # OpenMP threads per search; None: cores // searches in flight
    # GPU indexes are not safe for concurrent searches from several DuckDB threads.
    search_lock: threading.Lock | None = None
    _in_flight: int = 0
    _in_flight_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def lone_search_threads(self) -> int:
        """OpenMP threads a search gets when it is the only one running."""
        return self.threads or os.cpu_count() or 1

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def max_k(self) -> int | None:
        """The largest k (and nprobe) one search may use: faiss's GPU limit, none on CPU."""
        return None if self.device == "cpu" else GPU_MAX_K

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One ``index.search`` over all rows: (scores, chunk ids), each (n, k); id -1 pads missing hits."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cos":
            queries = queries.copy()
            faiss.normalize_L2(queries)
        with self._in_flight_lock:
            self._in_flight += 1
            in_flight = self._in_flight
        try:
            faiss.omp_set_num_threads(self.threads or max(1, (os.cpu_count() or 1) // in_flight))
            started = time.perf_counter()
            with self.search_lock or contextlib.nullcontext():
                distances, labels = self.index.search(queries, k)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        ANN_SEARCH_SECONDS.labels(family=self.family).observe(time.perf_counter() - started)
        return (-distances if self.metric == "l2" else distances), labels

    def rows_of(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Faiss rows of ``chunk_ids`` and whether each id is in the index (rows of unknown ids are 0)."""
        positions = np.minimum(np.searchsorted(self.ids, chunk_ids), len(self.ids) - 1)
        found = self.ids[positions] == chunk_ids
        return np.where(found, positions, 0), found

    def parameters(self) -> str:
        return format_parameters(current_parameters(self.index))

    def set_parameters(self, text: str, function: str) -> str:
        """Apply a ParameterSpace string such as 'nprobe=32'; return the resulting parameter string."""
        pairs = parse_parameter_string(text, function)
        if self.max_k is not None:
            for name, value in pairs:
                if name == "nprobe" and value > self.max_k:
                    raise UdfError(
                        f"{function}: nprobe={value:g} exceeds the GPU limit of {self.max_k}; "
                        f"use at most {self.max_k}"
                    )
        space = faiss.ParameterSpace() if self.device == "cpu" else faiss.GpuParameterSpace()
        for name, value in pairs:
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError as error:
                settable = ", ".join(current_parameters(self.index)) or "none"
                raise UdfError(
                    f"{function}: cannot set {name!r} on this {self.family} index "
                    f"({self.manifest['factory']}); "
                    f"settable here: {settable}"
                ) from error
        return self.parameters()


def _read_manifest(directory: Path, catalog_dir: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UdfError(
            f"faiss: cannot read {path} ({error}); {_REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error


def _read_index_file(path: Path, manifest: dict[str, Any], catalog_dir: Path) -> faiss.IndexIDMap2:
    """``faiss.read_index`` fully into memory, checked against the manifest; damage becomes a UdfError."""
    try:
        index = faiss.read_index(str(path))  # already downcast; a downcast of this temporary would dangle
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise UdfError(
            f"faiss: index file {path} is corrupt or truncated ({detail}); "
            f"{_REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error
    if (
        not isinstance(index, faiss.IndexIDMap2)
        or index.ntotal != manifest["ntotal"]
        or index.d != manifest["dimension"]
    ):
        raise UdfError(
            f"faiss: index file {path} does not match its manifest (expected IndexIDMap2 with "
            f"{manifest['ntotal']} vectors of dimension {manifest['dimension']}); "
            f"{_REPAIR_HINT.format(catalog=catalog_dir)}"
        )
    return index


def _read_vectors(path: Path, manifest: dict[str, Any], catalog_dir: Path) -> np.ndarray:
    """Memory-map vectors.npy rather than read it: ``exact_rerank`` touches only candidate rows,
    so resident memory stays small for large stores, and the mapping outlives gc's unlink."""
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise UdfError(
            f"faiss: cannot read {path} ({error}); {_REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error
    if vectors.shape != (manifest["ntotal"], manifest["dimension"]) or vectors.dtype != np.float32:
        raise UdfError(
            f"faiss: {path} holds {vectors.dtype}{vectors.shape}, expected float32({manifest['ntotal']}, "
            f"{manifest['dimension']}); {_REPAIR_HINT.format(catalog=catalog_dir)}"
        )
    return vectors


def _place_on_device(index: faiss.Index, family: str, settings: Mapping[str, Any]) -> tuple[faiss.Index, str]:
    """Clone to every GPU (replicated or sharded) when use_gpu is on and faiss can; else warn, stay on CPU."""
    if not settings.get("faiss_use_gpu", False):
        return index, "cpu"
    mode = settings.get("faiss_gpu_mode", DEFAULT_SETTINGS["faiss_gpu_mode"])
    if mode not in GPU_MODES:
        raise UdfError(
            f"faiss: setting gpu_mode must be one of {', '.join(map(repr, GPU_MODES))}, got {mode!r}"
        )
    gpus = faiss.get_num_gpus()
    if gpus == 0:
        logger.warning("faiss: use_gpu is on but faiss sees no GPU; searching on CPU")
        return index, "cpu"
    if family not in GPU_FAMILIES:
        logger.warning(
            "faiss: the %s family cannot run on GPU (faiss has no GPU version of it); searching on CPU. "
            "Build flat, ivf_flat, ivf_sq or ivf_pq (with faiss_search(k_factor := ...) for exact re-ranking) "
            "to search on GPU",
            family,
        )
        return index, "cpu"
    options = faiss.GpuMultipleClonerOptions()
    options.shard = mode == "shard"
    try:
        return faiss.index_cpu_to_all_gpus(index, co=options), f"gpu:{mode}:{gpus}"
    except RuntimeError as error:
        logger.warning("faiss: cloning the %s index to GPU failed (%s); searching on CPU", family, error)
        return index, "cpu"


#: The facts that tie a tuning profile to the index it was measured on.
PROFILE_IDENTITY_FIELDS = ("version", "factory", "dimension", "ntotal")


def profile_identity(loaded: LoadedIndex) -> dict[str, Any]:
    """What autotune records under a profile's ``"index"``, and what loading checks it against."""
    return {
        "version": loaded.version,
        "factory": loaded.manifest["factory"],
        "dimension": loaded.dimension,
        "ntotal": loaded.ntotal,
    }


def _describe_identity(identity: Mapping[str, Any]) -> str:
    return (
        f"version {identity.get('version', '?')} ({identity.get('factory', '?')}, "
        f"dimension {identity.get('dimension', '?')}, {identity.get('ntotal', '?')} vectors)"
    )


def _check_profile_identity(tuning: Mapping[str, Any], loaded: LoadedIndex, path: Path) -> None:
    """Refuse a profile measured on another index: its operating point means nothing for this one."""
    measured_on = tuning.get("index", {})
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


def _apply_tuning(loaded: LoadedIndex) -> bool:
    """The autotune hook: apply tuning.json's ParameterSpace string; return whether there is a profile.

    nprobe is clamped to the GPU limit.  A hand-written ``{"parameters": ...}`` without
    ``"index"`` is applied as written; a profile whose ``"index"`` names another index is refused.
    """
    path = loaded.directory / TUNING_FILE
    try:
        tuning = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise UdfError(
            f"faiss: {path} is not valid JSON ({error}); fix it or replace it with {{}}"
        ) from error
    if not isinstance(tuning, dict) or not isinstance(tuning.get("index", {}), dict):
        raise UdfError(
            f"faiss: {path} must hold a JSON object (with an object under 'index'); fix it or replace it with {{}}"
        )
    if "parameters" not in tuning:
        return False
    _check_profile_identity(tuning, loaded, path)
    text = tuning["parameters"]
    if not text:  # Flat: the profile records that there is nothing to tune
        return True
    pairs = parse_parameter_string(text, f"faiss ({path})")
    if loaded.max_k is not None and any(name == "nprobe" and value > loaded.max_k for name, value in pairs):
        logger.warning("faiss: %s sets nprobe above the GPU limit; clamping to %d", path, loaded.max_k)
        text = format_parameters(
            {name: min(value, loaded.max_k) if name == "nprobe" else value for name, value in pairs}
        )
    loaded.set_parameters(text, f"faiss ({path})")
    return True


def _autotune_on_start(loaded: LoadedIndex, settings: Mapping[str, Any]) -> None:
    # Imported here: udfs.autotune builds on this module (LoadedIndex, loading), so importing
    # it at the top would be circular.
    from udfs.autotune import tune_on_start

    tune_on_start(loaded, settings)


def _warn_if_store_changed(loaded: LoadedIndex, catalog_dir: Path) -> None:
    built_from = loaded.manifest["store"]["fingerprint"]
    now = store_fingerprint(catalog_dir)
    if now != built_from:
        logger.warning(
            "faiss: index version %s was built from store fingerprint %s but the current store "
            "has fingerprint %s; "
            "results may miss or misname chunks until you rebuild (`python bootstrap.py build --catalog %s`)",
            loaded.version,
            built_from,
            now,
            catalog_dir,
        )


def load_version(catalog_dir: Path, version: str, settings: Mapping[str, Any]) -> LoadedIndex:
    """Read a version into memory, place it on GPU if asked, apply its tuning profile (or, with setting
    ``autotune_on_start`` and no profile, tune it now), warn if the store changed."""
    directory = _versions_dir(catalog_dir) / version
    manifest = _read_manifest(directory, catalog_dir)
    cpu_index = _read_index_file(directory / INDEX_FILE, manifest, catalog_dir)
    ids = faiss.vector_to_array(cpu_index.id_map).astype(np.int64, copy=False)
    vectors = _read_vectors(directory / VECTORS_FILE, manifest, catalog_dir)
    index, device = _place_on_device(cpu_index, manifest["family"], settings)
    loaded = LoadedIndex(
        version=version,
        directory=directory,
        manifest=manifest,
        index=index,
        ids=ids,
        vectors=vectors,
        device=device,
        threads=_search_threads(settings),
        search_lock=None if device == "cpu" else threading.Lock(),
    )
    if not _apply_tuning(loaded) and settings.get("autotune_on_start", False):
        _autotune_on_start(loaded, settings)
    _warn_if_store_changed(loaded, catalog_dir)
    logger.info(
        "faiss: loaded index version %s (%s, %d vectors) on %s",
        version,
        manifest["factory"],
        loaded.ntotal,
        device,
    )
    return loaded


def load_current(context: CatalogContext) -> LoadedIndex:
    """The published index, cached in ``context.resources`` and reloaded when CURRENT points elsewhere."""
    version = current_version(context.catalog_dir)
    if version is None:
        raise UdfError(
            f"faiss: no index is published in {_index_root(context.catalog_dir)}; "
            f"{_BUILD_HINT.format(catalog=context.catalog_dir)}"
        )
    cached = context.resources.get(RESOURCE_KEY)
    if cached is not None and cached.version == version:
        return cached
    with context.lock:
        cached = context.resources.get(RESOURCE_KEY)
        if cached is None or cached.version != version:
            cached = load_version(context.catalog_dir, version, context.settings)
            context.resources[RESOURCE_KEY] = cached
        return cached

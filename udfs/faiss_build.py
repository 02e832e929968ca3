"""Build a FAISS index version over the published chunk store: options, plan, train, add, write.

``build_index`` reads ``store/CURRENT``, chooses a family (``auto``: :func:`choose_family`),
plans the factory string (:func:`plan_index`), trains on a seeded sample, adds every vector
with its chunk id, writes the version files into a staging directory of
:func:`~udfs.faiss_versions.index_versions` and commits and publishes it (layout:
:mod:`udfs.faiss_versions`).  Any failure leaves CURRENT on the last good version.

Incremental builds (option ``incremental``, on by default): when the CURRENT index has the
planned family and structure and the family supports removal (not HNSW), :func:`plan_update`
diffs its id map against the store and :func:`update_index` removes the gone ids and adds the
new ones on a copy read into memory, keeping the trained quantizers, until the ids added and
removed since the last full build pass ``max_drift`` of that build's vectors.  The result is
written as a new version exactly like a full build; its manifest names the ``parent`` and says
``incremental``, why (``incremental_reason``) and the ``drift``.

Options: every :class:`BuildOptions` field is the setting ``faiss_<field>`` (defaults, ranges
and choices defined once in :class:`~udfs.settings.Settings`); options passed to
``build_index`` / the ``faiss_build`` UDF / ``bootstrap.py build --option`` override the
connection's settings and are checked the same way, errors naming ``faiss_build``.

Metrics: 'ip' (inner product; the store's embeddings are already normalised, so this is
cosine without the cost of normalising), 'cos' (vectors and queries normalised first), 'l2'.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from udfs import faiss_auto, progress, store_schema
from udfs.context import CatalogContext
from udfs.faiss_params import apply_string
from udfs.faiss_tuning import NO_PROFILE, write_profile
from udfs.faiss_versions import IDMAP_FILE, INDEX_FILE, MANIFEST_FILE, TUNING_FILE, VECTORS_FILE, index_versions
from udfs.registry import UdfError, UdfSpec
from udfs.settings import SettingError, Settings, field_default, type_name
from udfs.versioned_dir import fsync, new_version_name

logger = logging.getLogger("codeintel.faiss")

FAMILIES = ("flat", "ivf_flat", "ivf_sq", "ivf_pq", "hnsw", "ivf_pq_refine")

# auto: below this many vectors exact search costs less than any index's training.
FLAT_MAX_VECTORS = 50_000
# auto: above this many vectors an HNSW build takes too long on a few cores; IVF-PQ trains on a sample.
HNSW_MAX_VECTORS = 1_000_000
# auto by measurement: the families built on samples (udfs/faiss_auto.py); on GPU those faiss can clone.
AUTO_CANDIDATES = ("ivf_flat", "ivf_sq", "hnsw")
AUTO_GPU_CANDIDATES = ("ivf_flat", "ivf_sq")
# k-means wants at least this many training points per centroid (faiss warns below 39).
TRAIN_POINTS_PER_CENTROID = 39
# Training draws max(this, TRAIN_POINTS_PER_CENTROID * nlist) vectors.  Above 39 per centroid more
# points bought no recall: at 200k x 384 (nlist 1789), 70k training vectors gave recall@10 0.984
# at nprobe 6 in 3.0 s of training where 100k gave 0.981 in 5.5-9 s (BENCHMARKS.md, issue 15).
DEFAULT_TRAIN_SAMPLE = 50_000
# Builds get one OpenMP thread per this many vectors: on small stores thread start-up and
# spin-waiting cost more than they save (IVF-PQ training on 2000 x 384: 0.2 s with 1 thread,
# 7 s with 2 on a 2-core machine).
BUILD_VECTORS_PER_THREAD = 50_000
#: Vectors per add call of a build (not HNSW), so a long add reports progress between batches.
ADD_BATCH_ROWS = 100_000
# IVF indexes with at least this many lists find a query's lists through an HNSW graph over the
# centroids (factory "IVF<n>_HNSW32") instead of scanning every centroid.  One query's search is
# mostly that scan, a pass over nlist x d floats that a single-query statement meets cold:
# bench/bench_coarse_quantizer.py measured one query's index.search at 0.40 -> 0.21 ms at 200k x 384
# (IVF1789, 2.7 MB of centroids) and 1.21 -> 0.62 ms at 1M (IVF4000), recall@10 within 0.003 at
# the tuned nprobe, batched QPS 3-8% lower, build times alike (BENCHMARKS.md, "Coarse quantizer").
# Below 1024 lists the scan is tens of microseconds.  Builds for the GPU keep the flat quantizer
# faiss's GPU cloner expects (a CPU build is given one when cloned: udfs/faiss_loaded.py).
HNSW_QUANTIZER_MIN_NLIST = 1024
# OPQ trains an internal 8-bit PQ (256 centroids per sub-space) whatever pq_nbits is.
OPQ_MIN_TRAIN = TRAIN_POINTS_PER_CENTROID * 256


# --------------------------------------------------------------------------- build options


def _default(option: str) -> Any:
    """An option's default is its setting's (``faiss_<option>``): defined once, in udfs/settings.py."""
    return field_default(f"faiss_{option}")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Build settings; ``None`` means "derive from the store" (see :func:`plan_index`).

    What each option does, its default and its range: the ``faiss_<option>`` setting.
    """

    nlist: int | None = _default("nlist")
    pq_m: int | None = _default("pq_m")
    pq_nbits: int | None = _default("pq_nbits")
    opq: bool = _default("opq")
    hnsw_m: int = _default("hnsw_m")
    ef_construction: int = _default("ef_construction")
    metric: str = _default("metric")
    train_sample: int | None = _default("train_sample")
    kmeans_iterations: int = _default("kmeans_iterations")
    nprobe: int = _default("nprobe")
    ef_search: int = _default("ef_search")
    refine_k_factor: float = _default("refine_k_factor")
    sq_type: str = _default("sq_type")
    seed: int = _default("seed")
    memory_budget_bytes: int | None = _default("memory_budget_bytes")
    use_gpu: bool = _default("use_gpu")
    build_threads: int | None = _default("build_threads")
    incremental: bool = _default("incremental")
    max_drift: float = _default("max_drift")

    @classmethod
    def from_settings(cls, settings: Settings, overrides: Mapping[str, Any] | None = None) -> BuildOptions:
        """The connection's ``faiss_*`` settings, overridden by ``overrides`` (``None`` values keep the setting).

        Overrides arrive from SQL JSON and command lines, so "64" and "true" are accepted for
        typed options; each is then checked as its setting is, the error naming ``faiss_build``.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        requested = {name: value for name, value in (overrides or {}).items() if value is not None}
        unknown = sorted(set(requested) - set(names))
        if unknown:
            raise UdfError(
                f"faiss_build: unknown option(s) {', '.join(unknown)}; known options: {', '.join(names)}"
            )
        changes = {f"faiss_{name}": _coerce_option(name, value) for name, value in requested.items()}
        try:
            settings = settings.replace(changes, source="faiss_build")
        except SettingError as error:
            # "faiss_build: setting faiss_nlist must ..." -> "faiss_build: nlist must ...": the
            # caller passed the option, not the setting.
            raise UdfError(str(error).replace(" setting faiss_", " ", 1)) from error
        return cls(**{name: getattr(settings, f"faiss_{name}") for name in names})


def build_option_names() -> tuple[str, ...]:
    """Every name a build accepts as an option: the :class:`BuildOptions` fields, then ``publish``.

    Callers that take options by name (``bootstrap.py build --option``) check against this
    list before anything runs, so a misspelled option is refused instead of being ignored.
    """
    return (*(field.name for field in dataclasses.fields(BuildOptions)), "publish")


_OPTION_KINDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string"}


def _coerce_option(name: str, value: Any) -> Any:
    """Accept the natural spellings from SQL JSON and command lines ("64", "true") for typed options."""
    kind = type_name(f"faiss_{name}").split(" ")[0]
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


# --------------------------------------------------------------------------- plan and store


@dataclasses.dataclass(frozen=True)
class IndexPlan:
    """What will be built: the factory string and everything derived for it."""

    family: str
    family_reason: str
    factory: str
    metric: str
    search_parameters: str  # search-parameter string written into the index, e.g. "nprobe=16" (udfs/faiss_params.py)
    train_size: int  # rows drawn for training; 0 when the family needs none
    build_parameters: dict[str, Any]
    #: ``auto``'s figures (udfs/faiss_auto.py), the manifest's ``auto_measurement``; None otherwise.
    auto_measurement: dict[str, Any] | None = None


def _default_memory_budget() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def choose_family(
    ntotal: int, dimension: int, options: BuildOptions, vectors: np.ndarray | None = None
) -> tuple[str, str, dict[str, Any] | None]:
    """The family ``auto`` builds for ``ntotal`` vectors, the reason, and the measurement behind it.

    Small stores get Flat (exact, no training) and stores whose raw vectors do not fit get
    IVF-PQ, by size; otherwise, given the store's ``vectors``, the candidate families are built
    on samples and the fastest at the recall target wins (:func:`udfs.faiss_auto.measure`;
    the figures go into the manifest as ``auto_measurement``).  Without vectors (a plan made
    for sizes alone) the size thresholds below decide.
    """
    raw_bytes = ntotal * dimension * 4
    budget = options.memory_budget_bytes or _default_memory_budget()
    sizes = f"raw vectors {raw_bytes / 2**30:.2f} GiB, memory budget {budget / 2**30:.2f} GiB"
    if ntotal < FLAT_MAX_VECTORS:
        return (
            "flat",
            f"auto: {ntotal} vectors < {FLAT_MAX_VECTORS}: exact Flat search is fast at this size "
            "and needs no training",
            None,
        )
    if raw_bytes * 1.5 > budget:
        return "ivf_pq", (
            f"auto: {ntotal} vectors, {sizes}: raw vectors do not fit, IVF-PQ keeps only compressed codes in memory; "
            "re-rank with faiss_search(k_factor := 4), which reads the memory-mapped vectors.npy"
        ), None
    if vectors is not None:
        candidates = AUTO_GPU_CANDIDATES if options.use_gpu else AUTO_CANDIDATES
        threads = options.build_threads or min(os.cpu_count() or 1, 1 + ntotal // BUILD_VECTORS_PER_THREAD)

        def build_sample(family: str, sample: np.ndarray) -> tuple[faiss.Index, str, int | None]:
            # The real build's plan and train_and_add, on the sample, with the full build's threads.
            plan = plan_index(family, len(sample), dimension, options)
            snapshot = StoreSnapshot("auto-sample", "", np.arange(len(sample), dtype=np.int64), sample, 0)
            return train_and_add(plan, snapshot, threads), plan.factory, plan.build_parameters.get("nlist")

        measurement = faiss_auto.measure(
            vectors, candidates, build_sample, metric=options.metric, k=field_default("autotune_k"),
            target_recall=field_default("autotune_target_recall"), build_threads=threads, seed=options.seed,
        )
        return measurement["chosen"], faiss_auto.summary(measurement), measurement
    if ntotal >= HNSW_MAX_VECTORS:
        return "ivf_pq_refine", (
            f"auto: {ntotal} vectors >= {HNSW_MAX_VECTORS} ({sizes}): IVF-PQ scans compressed codes "
            "trained on a sample, RFlat re-ranks its candidates with exact distances"
        ), None
    if options.use_gpu:
        return "ivf_flat", (
            f"auto: {ntotal} vectors in [{FLAT_MAX_VECTORS}, {HNSW_MAX_VECTORS}) ({sizes}) "
            "and use_gpu is on: "
            "IVF-Flat keeps exact distances in the probed lists and runs on GPU, HNSW does not"
        ), None
    return "hnsw", (
        f"auto: {ntotal} vectors in [{FLAT_MAX_VECTORS}, {HNSW_MAX_VECTORS}) ({sizes}): "
        "HNSW gives the best CPU latency and recall at this size and needs no training"
    ), None


def _default_pq_m(dimension: int) -> int:
    """The largest divisor of ``dimension`` up to d/8: about 8 dimensions per sub-quantizer."""
    limit = max(1, dimension // 8)
    return max(m for m in range(1, limit + 1) if dimension % m == 0)


def plan_index(
    family: str, ntotal: int, dimension: int, options: BuildOptions, vectors: np.ndarray | None = None
) -> IndexPlan:
    """Resolve ``family`` (or ``auto``, measured on ``vectors`` when given) and the options into a
    factory string and its parameters."""
    if family == "auto":
        chosen, reason, measurement = choose_family(ntotal, dimension, options, vectors)
        plan = plan_index(chosen, ntotal, dimension, options)
        return dataclasses.replace(plan, family_reason=reason, auto_measurement=measurement)
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
    parameters.update(nlist=nlist, nprobe=nprobe, train_size=train_size, kmeans_iterations=options.kmeans_iterations,
                      seed=options.seed)
    # The factory string names the coarse quantizer (not a build parameter: an update compares
    # factories, so a CURRENT index built before the HNSW quantizer is rebuilt in full once).
    hnsw_quantizer = nlist >= HNSW_QUANTIZER_MIN_NLIST and not options.use_gpu
    ivf = f"IVF{nlist}_HNSW32" if hnsw_quantizer else f"IVF{nlist}"
    if family in ("ivf_flat", "ivf_sq"):
        codes = "Flat" if family == "ivf_flat" else f"SQ{options.sq_type}"
        if family == "ivf_sq":
            parameters.update(sq_type=options.sq_type)
        return IndexPlan(family, reason, f"{ivf},{codes}", options.metric, f"nprobe={nprobe}", train_size, parameters)

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
    factory = f"{rotation}{ivf},PQ{pq_m}x{pq_nbits}np"
    parameters.update(pq_m=pq_m, pq_nbits=pq_nbits, opq=options.opq)
    if family == "ivf_pq":
        return IndexPlan(family, reason, factory, options.metric, f"nprobe={nprobe}", train_size, parameters)
    parameters.update(refine_k_factor=options.refine_k_factor)
    search = f"nprobe={nprobe},refine_k_factor={options.refine_k_factor:g}"
    return IndexPlan(family, reason, f"{factory},RFlat", options.metric, search, train_size, parameters)


# --------------------------------------------------------------------------- store


class StoreSnapshot:
    """The ids of ``store/CURRENT`` sorted ascending, and their embeddings (``vectors``, row i for ids[i]).

    An ingested store's embeddings are read when first needed, and an update reads only the
    rows it adds (:meth:`vectors_of`), part by part: an incremental ingest adds a small part, so
    an index update after it reads a few hundred vectors, not the store.
    """

    def __init__(self, version: str, fingerprint: str, ids: np.ndarray, vectors: np.ndarray | None,
                 skipped_null_embeddings: int, *, dimension: int | None = None, source: dict[str, Any] | None = None,
                 parts: list[tuple[Path, np.ndarray]] | None = None, order: np.ndarray | None = None) -> None:
        self.version = version
        self.fingerprint = fingerprint
        self.ids = ids  # int64, ascending
        self.skipped_null_embeddings = skipped_null_embeddings
        self.dimension = int(vectors.shape[1]) if vectors is not None else int(dimension or 0)
        #: What made the store (store.json's embedder, embedder_sha256, chunker): an update may trust
        #: that a kept id kept its vector only when the parent index's store was made alike.
        self.source = source or {}
        self._vectors = vectors
        # Lazy: each part's path and its live rows (positions in the part), and the permutation that
        # sorts the concatenated live rows by id.
        self._parts = parts or []
        self._order = order

    @property
    def vectors(self) -> np.ndarray:
        """float32 (n, d), row i for ids[i]; read on first use."""
        if self._vectors is None:
            self._vectors = self.vectors_of(np.arange(len(self.ids)))
        return self._vectors

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the sorted ``rows`` (positions in ``ids``), reading only the parts that hold them."""
        if self._vectors is not None:
            return self._vectors[rows]
        assert self._order is not None
        wanted = self._order[rows]  # positions in the concatenation of the parts' live rows
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        offset = 0
        for path, live in self._parts:
            inside = (wanted >= offset) & (wanted < offset + len(live))
            if inside.any():
                _, flat, nulls = store_schema.read_vectors([path], self.dimension)
                if nulls:  # rows are positions in the part: a dropped NULL row would shift them
                    raise UdfError(f"faiss_build: {path} has {nulls} NULL embeddings; re-ingest the store")
                out[inside] = flat[live[wanted[inside] - offset]]
            offset += len(live)
        _check_finite(out, self.ids[rows], "the store")
        return out


def _store_dir(catalog_dir: Path) -> Path:
    return store_schema.current_link(catalog_dir)


def read_store(catalog_dir: Path) -> StoreSnapshot:
    """Ids and embeddings of the published store, read column-wise by DuckDB (no per-row Python).

    A store our ingest wrote (store.json names its chunker: every chunk embedded, none NULL) is
    read lazily, ids first; an imported one at once, with its NULL embeddings left out.
    """
    store = _store_dir(catalog_dir)
    chunks_path = store / store_schema.CHUNK_PARTS_GLOB
    parts = store_schema.chunk_parts(store)
    if not parts or not (store / store_schema.STORE_MANIFEST).is_file():
        raise UdfError(
            f"faiss_build: no chunk store at {store} (no {store_schema.CHUNK_PARTS_GLOB}); build the chunk store first"
        )
    info = json.loads((store / store_schema.STORE_MANIFEST).read_text())
    source = {name: info.get(name) for name in ("embedder", "embedder_sha256", "chunker")}
    # store.json is written before its directory gets the version name, so the name is the version.
    version = str(info.get("version") or store.resolve().name)
    if info.get("chunker") and info.get("dimension"):
        gone = store_schema.deleted_ids(store).to_numpy()
        lazy_parts, pieces = [], []
        for part in parts:
            part_ids = pq.read_table(part, columns=["id"]).column("id").combine_chunks()
            if part_ids.null_count:
                raise UdfError(f"faiss_build: {part} has NULL ids; rebuild the chunk store")
            part_ids = part_ids.cast(pa.int64()).to_numpy()
            live = np.flatnonzero(~np.isin(part_ids, gone)) if len(gone) else np.arange(len(part_ids))
            lazy_parts.append((part, live))
            pieces.append(part_ids[live])
        ids = np.concatenate(pieces)
        order = np.argsort(ids, kind="stable")
        ids = _checked_ids(ids[order], chunks_path)
        return StoreSnapshot(version, str(info["fingerprint"]), ids, None, 0, dimension=int(info["dimension"]),
                             source=source, parts=lazy_parts, order=order)
    dimension = int(info.get("dimension") or pq.read_schema(parts[0]).field("embedding").type.list_size)
    deleted = store / store_schema.DELETED_IDS_FILE
    try:
        ids, vectors, skipped = store_schema.read_vectors(parts, dimension, sort_by_id=True,
                                                          deleted=deleted if deleted.is_file() else None)
    except store_schema.NullIdError:
        raise UdfError(f"faiss_build: {chunks_path} has NULL ids; rebuild the chunk store") from None
    except duckdb.Error as error:
        raise UdfError(
            f"faiss_build: the embeddings of {chunks_path} are not {dimension} floats each ({error}); re-import "
            "the store with embedding FixedSizeList(float32)"
        ) from None
    if skipped:
        logger.warning(
            "faiss_build: %d chunks in %s have a NULL embedding and are left out of the index",
            skipped,
            chunks_path,
        )
    ids = _checked_ids(ids, chunks_path)
    _check_finite(vectors, ids, str(chunks_path))
    return StoreSnapshot(version, str(info["fingerprint"]), ids, vectors, int(skipped), source=source)


def _check_finite(vectors: np.ndarray, ids: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite embeddings, naming how many and the first chunk id."""
    if np.isfinite(vectors.ravel()).all():  # one pass over the matrix; rows only on failure
        return
    finite = np.isfinite(vectors).all(axis=1)
    raise UdfError(
        f"faiss_build: {int((~finite).sum())} embeddings in {where} contain NaN or infinity "
        f"(first chunk id {int(ids[~finite][0])}); re-embed the store"
    )


def _checked_ids(ids: np.ndarray, chunks_path: Path) -> np.ndarray:
    """Sorted ids, refused when empty, non-positive or duplicated."""
    if len(ids) == 0:
        raise UdfError(f"faiss_build: the store {chunks_path} has no embedded chunks; nothing to index")
    if ids[0] <= 0:
        raise UdfError(f"faiss_build: {chunks_path} has non-positive ids; chunk ids must be positive")
    if (ids[1:] == ids[:-1]).any():
        raise UdfError(f"faiss_build: {chunks_path} has duplicate ids; chunk ids must be unique")
    return ids


# --------------------------------------------------------------------------- train and write


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
    if "kmeans_iterations" in plan.build_parameters:
        clustering = faiss.extract_index_ivf(index.index).cp
        clustering.niter = plan.build_parameters["kmeans_iterations"]
        clustering.seed = plan.build_parameters["seed"]  # the seed option seeds k-means too (FAISS's own: 1234)
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
        apply_string(index, plan.search_parameters, "faiss_build")
    return index


# --------------------------------------------------------------------------- incremental update

#: Families an update can change in place of a rebuild: their storage supports remove_ids and
#: add_with_ids, and they are trained, so an update saves the training.  HNSW cannot drop a node
#: from its graph; Flat trains nothing, and its full build (one copy of the vectors) took 0.24 s
#: where an update (diff, read the parent, refill) took 0.40 s on 25k vectors (BENCHMARKS.md).
INCREMENTAL_FAMILIES = ("ivf_flat", "ivf_sq", "ivf_pq", "ivf_pq_refine")
#: build_parameters an update may change: how the kept quantizers were trained (train_size, derived
#: from the store's size, and kmeans_iterations), or search-time defaults written into the updated
#: index.  Any other change means a rebuild.
UPDATABLE_PARAMETERS = frozenset({"train_size", "kmeans_iterations", "nprobe", "ef_search", "refine_k_factor"})
#: Of those, the ones that describe the training an update keeps: the parent's values stand.
TRAINING_PARAMETERS = frozenset({"train_size", "kmeans_iterations"})


@dataclasses.dataclass(frozen=True)
class UpdatePlan:
    """How a build relates to the CURRENT index: an update (``update``) or a full build, and why.

    ``drift`` is recorded in the manifest: ids added and removed relative to the parent, and
    since the last full build (whose trained centroids and codebooks an update keeps).
    """

    parent: str | None
    update: bool
    reason: str
    drift: dict[str, Any]
    plan: IndexPlan | None = None  # an update's plan: the parent's structure, today's search parameters
    added: np.ndarray | None = None  # bool mask over store.ids: the ids the parent lacks
    removed_rows: np.ndarray | None = None  # the parent's faiss rows whose id the store no longer holds
    kept_parent_rows: np.ndarray | None = None  # for each store id the parent holds (~added), its parent row


def _parent_ids(directory: Path) -> np.ndarray:
    table = pq.read_table(directory / IDMAP_FILE, columns=["faiss_row", "external_id"])
    rows = table.column("faiss_row").to_numpy()
    ids = table.column("external_id").to_numpy()
    return ids[np.argsort(rows, kind="stable")].astype(np.int64, copy=False)


def plan_update(
    catalog_dir: Path, store: StoreSnapshot, options: BuildOptions, full_plan: IndexPlan
) -> UpdatePlan:
    """Decide whether this build updates the CURRENT index, and with what; never raises for a bad parent.

    An update keeps the parent's structure (family, factory, trained quantizers), so it needs
    the same family, metric, dimension and structural build parameters, kept ids whose vectors
    are unchanged (else another embedder made the store), and, for trained families, drift since
    the last full build at most ``max_drift``.  Anything else is a full build, and says why.
    """
    versions = index_versions(catalog_dir)
    parent = versions.current()

    def full(reason: str, drift: dict[str, Any] | None = None) -> UpdatePlan:
        return UpdatePlan(parent, False, f"full build: {reason}", drift or {})

    if not options.incremental:
        return full("option incremental is false")
    if parent is None:
        return full("no index version is published yet")
    if full_plan.family == "flat":
        return full("flat trains nothing: a full build (one copy of the vectors) costs less than an update")
    if full_plan.family not in INCREMENTAL_FAMILIES:
        return full(f"{full_plan.family} cannot remove ids from its graph, so it is rebuilt")
    directory = versions.path(parent)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        parent_ids = _parent_ids(directory)
        parent_vectors = np.load(directory / VECTORS_FILE, mmap_mode="r")
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        return full(f"the CURRENT version {parent} cannot be read for an update ({error})")
    dimension = store.dimension
    if manifest.get("family") != full_plan.family:
        return full(f"the family changes from {manifest.get('family')} (CURRENT) to {full_plan.family}")
    if manifest.get("metric") != full_plan.metric or manifest.get("dimension") != dimension:
        return full(
            f"metric/dimension change from {manifest.get('metric')}/{manifest.get('dimension')} "
            f"to {full_plan.metric}/{dimension}"
        )
    parameters = manifest.get("build_parameters") or {}
    # The parent's derived sizes stand unless an option asks for others (then they differ below).
    pinned = dataclasses.replace(
        options,
        nlist=options.nlist or parameters.get("nlist"),
        pq_m=options.pq_m or parameters.get("pq_m"),
        pq_nbits=options.pq_nbits or parameters.get("pq_nbits"),
    )
    try:
        kept = plan_index(full_plan.family, len(store.ids), dimension, pinned)
    except UdfError as error:
        return full(f"the CURRENT structure does not fit the store any more ({error})")
    changed = sorted(
        name
        for name in set(parameters) | set(kept.build_parameters)
        if name not in UPDATABLE_PARAMETERS and parameters.get(name) != kept.build_parameters.get(name)
    )
    # A train_sample the caller gives asks for training on that many vectors: an update keeps the
    # parent's training, so only the parent's own sample size (capped by its store) matches.
    trained_on = min(options.train_sample or 0, int((manifest.get("drift") or {}).get(
        "since_full_build", {}).get("ntotal", manifest.get("ntotal", 0))))
    if options.train_sample is not None and "train_size" in parameters and trained_on != parameters["train_size"]:
        changed.append("train_size")
        kept.build_parameters["train_size"] = trained_on
    if changed or kept.factory != manifest.get("factory"):
        described = ", ".join(
            f"{name} {parameters.get(name)!r} -> {kept.build_parameters.get(name)!r}" for name in changed
        )
        return full(f"the structure changes ({described or manifest.get('factory') + ' -> ' + kept.factory})")
    if len(parent_vectors) != len(parent_ids) or parent_vectors.shape[1:] != (dimension,):
        return full(f"the CURRENT version {parent} has {VECTORS_FILE} of another shape than its id map")
    if len(parent_ids) == 0 or (parent_ids[1:] <= parent_ids[:-1]).any():
        return full(f"the CURRENT version {parent} has no ids, or its ids are not in ascending row order")
    # Both id lists are sorted (rows in id order), so membership is a binary search, no sort.
    parent_at = np.minimum(np.searchsorted(parent_ids, store.ids), len(parent_ids) - 1)
    in_parent = parent_ids[parent_at] == store.ids
    at = np.minimum(np.searchsorted(store.ids, parent_ids), len(store.ids) - 1)
    in_store = store.ids[at] == parent_ids
    kept_rows, removed_rows = np.flatnonzero(in_store), np.flatnonzero(~in_store)
    added = ~in_parent
    # Our ingest's ids hash uri, byte range and content, and the same embedder and chunker embed the
    # same content alike, so a kept id kept its vector when the parent's store was made the same way:
    # then the store's vectors are not read at all.  Otherwise (an import, another model) they are compared.
    parent_source = manifest.get("store") or {}
    same_source = bool(store.source.get("chunker") and store.source.get("embedder_sha256")) and all(
        parent_source.get(name) == store.source.get(name) for name in ("embedder_sha256", "chunker"))
    moved = (np.zeros(len(kept_rows), dtype=bool) if same_source else
             ~np.all(parent_vectors[kept_rows] == store.vectors_of(np.flatnonzero(in_parent)), axis=1))
    if moved.any():
        return full(
            f"{int(moved.sum())} chunks kept their id but have other vectors (the store was embedded again, "
            "e.g. by another model)"
        )
    base = (manifest.get("drift") or {}).get("since_full_build") or {
        "version": parent, "ntotal": int(manifest.get("ntotal", len(parent_ids))), "added": 0, "removed": 0,
    }
    since = {
        "version": base["version"],
        "ntotal": int(base["ntotal"]),
        "added": int(base["added"]) + int(added.sum()),
        "removed": int(base["removed"]) + len(removed_rows),
    }
    fraction = (since["added"] + since["removed"]) / max(1, since["ntotal"])
    drift = {
        "added": int(added.sum()),
        "removed": len(removed_rows),
        "since_full_build": since,
        "fraction": round(fraction, 6),
        "max_drift": options.max_drift,
    }
    if fraction > options.max_drift:
        return full(
            f"drift {fraction:.4f} > max_drift {options.max_drift:g}: {since['added']} ids added and "
            f"{since['removed']} removed since the full build {since['version']} of {since['ntotal']} vectors "
            "trained the quantizers",
            drift,
        )
    reason = (
        f"update of {parent}: {drift['added']} ids added, {drift['removed']} removed; drift {fraction:.4f} "
        f"<= max_drift {options.max_drift:g}, the quantizers of {since['version']} are kept"
    )
    # The parent's parameters (its training made the kept quantizers), today's search defaults.
    searched = {name: kept.build_parameters[name] for name in UPDATABLE_PARAMETERS - TRAINING_PARAMETERS
                if name in kept.build_parameters}
    plan = dataclasses.replace(kept, family_reason=full_plan.family_reason,
                               build_parameters={**parameters, **searched},
                               train_size=int(parameters.get("train_size", 0)))
    return UpdatePlan(parent, True, reason, drift, plan, added, removed_rows, parent_at[in_parent])


def _auto_kept_family(catalog_dir: Path, family: str, options: BuildOptions) -> str | None:
    """For ``auto`` with updates on: CURRENT's family when auto chose it and an update can keep it."""
    if family != "auto" or not options.incremental:
        return None
    parent = index_versions(catalog_dir).current_path()
    try:
        manifest = json.loads((parent / MANIFEST_FILE).read_text()) if parent is not None else {}
    except (OSError, ValueError):
        return None
    chosen = manifest.get("family")
    return chosen if chosen in INCREMENTAL_FAMILIES and str(manifest.get("family_reason", "")).startswith(
        "auto") else None


def _renumber_lists(ivf: faiss.IndexIVF, new_rows: np.ndarray) -> None:
    """Rewrite the ids every inverted list stores (old internal ids) as their rows in the new id order."""
    lists = ivf.invlists
    # An in-memory index (read_index) keeps its lists as arrays: their ids are rewritten in place.
    in_place = isinstance(faiss.downcast_InvertedLists(lists), faiss.ArrayInvertedLists)
    for list_no in range(ivf.nlist):  # per list, not per vector: each list is one vectorised copy
        size = lists.list_size(list_no)
        if size == 0:
            continue
        old = faiss.rev_swig_ptr(lists.get_ids(list_no), size)
        if in_place:
            old[:] = new_rows[old]
            continue
        ids = np.ascontiguousarray(new_rows[old], dtype=np.int64)
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * lists.code_size).copy()
        lists.update_entries(list_no, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))


def update_vectors(directory: Path, update: UpdatePlan, store: StoreSnapshot) -> tuple[np.ndarray, np.ndarray | None]:
    """The added rows' vectors, read from the store's parts that hold them, and for ivf_pq_refine (whose
    RFlat is refilled) every id's vector in id order: the parent's rows of the kept ids and the added ones."""
    assert update.added is not None and update.kept_parent_rows is not None and update.plan is not None
    added = store.vectors_of(np.flatnonzero(update.added))
    if update.plan.family != "ivf_pq_refine":
        return added, None
    everything = np.empty((len(store.ids), store.dimension), dtype=np.float32)
    everything[~update.added] = np.load(directory / VECTORS_FILE, mmap_mode="r")[update.kept_parent_rows]
    everything[update.added] = added
    return added, everything


def write_updated_vectors(parent_file: Path, target: Path, update: UpdatePlan, added_vectors: np.ndarray) -> None:
    """An update's ``vectors.npy``: the parent's rows of the kept ids with the added rows between them, in
    id order, copied file to file in runs (one copy per stretch between changed ids, in the kernel where
    ``os.copy_file_range`` works), not gathered into memory and written again."""
    assert update.added is not None and update.kept_parent_rows is not None
    parent = np.load(parent_file, mmap_mode="r")
    rows, dimension = len(update.added), int(parent.shape[1])
    row_bytes = dimension * np.dtype(np.float32).itemsize
    kept, kept_from = np.flatnonzero(~update.added), update.kept_parent_rows
    added = np.flatnonzero(update.added)
    with open(target, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                      "fortran_order": False, "shape": (rows, dimension)})
        header = handle.tell()
        handle.truncate(header + rows * row_bytes)
        handle.flush()
        with open(parent_file, "rb") as source:
            for start, end in _runs(kept, kept_from):
                source_offset = int(parent.offset) + int(kept_from[start]) * row_bytes
                _copy_range(source.fileno(), handle.fileno(), (end - start) * row_bytes, source_offset,
                            header + int(kept[start]) * row_bytes)
        for start, end in _runs(added, np.arange(len(added))):
            os.pwrite(handle.fileno(), np.ascontiguousarray(added_vectors[start:end], dtype="<f4").tobytes(),
                      header + int(added[start]) * row_bytes)


def _runs(rows: np.ndarray, sources: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) stretches of positions where both ``rows`` and ``sources`` go up by one."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(sources) != 1)) + 1
    return list(zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)], strict=True))


def _copy_range(source: int, target: int, count: int, source_offset: int, target_offset: int) -> None:
    """Copy ``count`` bytes between file offsets: ``os.copy_file_range`` (in the kernel), else read and write."""
    while count > 0:
        try:
            copied = os.copy_file_range(source, target, count, source_offset, target_offset)
        except (AttributeError, OSError):  # not Linux, or a file system that cannot
            copied = os.pwrite(target, os.pread(source, min(count, 1 << 24), source_offset), target_offset)
        if copied <= 0:
            raise UdfError(f"faiss_build: copying the parent's vectors stopped short ({count} bytes left)")
        count, source_offset, target_offset = count - copied, source_offset + copied, target_offset + copied


def update_index(directory: Path, update: UpdatePlan, store: StoreSnapshot, threads: int,
                 added_vectors: np.ndarray, all_vectors: np.ndarray | None) -> faiss.IndexIDMap2:
    """The CURRENT version's index with the removed ids removed and the added ones added, in memory.

    ``remove_ids`` and ``add_with_ids`` run on the IDMap2's sub-index with its internal row ids;
    the rows are then renumbered so that row ``i`` holds the ``i``-th smallest chunk id, as a
    full build leaves them (``faiss_idmap.parquet``, ``vectors.npy`` and ``exact_rerank``'s
    ``searchsorted`` rely on that order).  The file on disk is never written.
    """
    assert update.plan is not None and update.added is not None and update.removed_rows is not None
    faiss.omp_set_num_threads(threads)
    # read_index returns the index as its own type; a downcast_index wrapper would not own it.
    index = faiss.read_index(str(directory / INDEX_FILE))
    if not isinstance(index, faiss.IndexIDMap2):
        raise UdfError(f"faiss_build: {directory / INDEX_FILE} is not an IndexIDMap2; rebuild with incremental=false")
    old_ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    new_ids = store.ids[update.added]
    vectors, everything = added_vectors, all_vectors  # everything: ivf_pq_refine's RFlat
    if update.plan.metric == "cos":
        vectors = vectors.copy()
        faiss.normalize_L2(vectors)
        if everything is not None:
            everything = everything.copy()
            faiss.normalize_L2(everything)
    # Internal ids: the parent's rows 0..n-1, then n.. for the added vectors.
    temporary = np.arange(len(old_ids), len(old_ids) + len(new_ids), dtype=np.int64)
    new_rows = np.searchsorted(store.ids, np.concatenate([old_ids, new_ids]))
    new_rows[update.removed_rows] = -1
    removed = faiss.IDSelectorBatch(update.removed_rows.astype(np.int64))
    inner = faiss.downcast_index(index.index)
    with progress.stage(f"faiss_build: updating {update.plan.family}", total=len(new_ids), unit="vectors") as step:
        if isinstance(inner, faiss.IndexRefine):
            base = faiss.downcast_index(inner.base_index)
            base.remove_ids(removed)
            base.add_with_ids(vectors, temporary)
            _renumber_lists(faiss.extract_index_ivf(base), new_rows)
            # A flat store holds raw vectors by row; in id order they are the store's own, so it is
            # refilled (one copy) rather than compacted and permuted to the same bytes.
            refine = faiss.downcast_index(inner.refine_index)
            refine.reset()
            assert everything is not None  # update_vectors reads them for this family
            refine.add(everything)
            inner.ntotal = len(store.ids)
        else:
            inner.remove_ids(removed)
            inner.add_with_ids(vectors, temporary)
            _renumber_lists(faiss.extract_index_ivf(inner), new_rows)
        step.advance(len(new_ids))
    index.ntotal = len(store.ids)
    faiss.copy_array_to_vector(store.ids, index.id_map)
    index.construct_rev_map()
    if inner.ntotal != len(store.ids):
        raise UdfError(
            f"faiss_build: the update left {inner.ntotal} vectors for {len(store.ids)} ids; "
            "rebuild with --option incremental=false"
        )
    if update.plan.search_parameters:
        apply_string(index, update.plan.search_parameters, "faiss_build")
    return index


def _write_version_files(
    directory: Path, index: faiss.IndexIDMap2, store: StoreSnapshot, write_vectors: Callable[[Path], None],
    manifest: dict[str, Any],
) -> None:
    """Every file of a version; the staging commit fsyncs them all before the rename.

    The two large files are flushed on a thread as soon as each is written, so the disk writes
    the index while the vectors and the small files are written (the commit's fsync then finds
    them clean): about a third of an update's time was waiting on fsync (BENCHMARKS.md).
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as flusher:
        faiss.write_index(index, str(directory / INDEX_FILE))
        flushed = [flusher.submit(fsync, directory / INDEX_FILE)]
        write_vectors(directory / VECTORS_FILE)
        flushed.append(flusher.submit(fsync, directory / VECTORS_FILE))
        idmap = pa.table(
            {"faiss_row": pa.array(np.arange(len(store.ids), dtype=np.int64)), "external_id": pa.array(store.ids)}
        )
        pq.write_table(idmap, directory / IDMAP_FILE)
        write_profile(directory / TUNING_FILE, NO_PROFILE)
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        for future in flushed:
            future.result()


def build_index(
    catalog_dir: Path | str,
    family: str = "auto",
    *,
    publish: bool = True,
    settings: Settings | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Build an index over ``store/CURRENT`` as a new version, publish it unless ``publish=False``.

    Returns the version's manifest.  ``params`` are :class:`BuildOptions` fields overriding
    ``settings`` (default: the default settings).  The version is written in a staging
    directory and renamed only when complete, and CURRENT is flipped only after that, so any
    failure leaves CURRENT on the last good version.
    """
    catalog_dir = Path(catalog_dir)
    options = BuildOptions.from_settings(settings or Settings(), params)
    started = time.perf_counter()
    with progress.stage("faiss_build: reading the store"):
        store = read_store(catalog_dir)
    # auto measures candidate families on samples (seconds); an update keeps CURRENT's family, so
    # auto first tries that one, and measures only when the build is a full one after all.
    kept_family = _auto_kept_family(catalog_dir, family, options)
    # auto measures on the vectors; any other family plans from the sizes alone (an update reads few vectors).
    chosen = kept_family or family
    plan = plan_index(chosen, len(store.ids), store.dimension, options, store.vectors if chosen == "auto" else None)
    update = plan_update(catalog_dir, store, options, plan)
    if kept_family is not None and not update.update:
        plan = plan_index(family, len(store.ids), store.dimension, options, store.vectors)
        update = plan_update(catalog_dir, store, options, plan)
    elif kept_family is not None and update.plan is not None:
        update = dataclasses.replace(update, plan=dataclasses.replace(
            update.plan, family_reason=f"auto: kept {kept_family}, the family of the CURRENT version it updates"))
    threads = options.build_threads or min(os.cpu_count() or 1, 1 + len(store.ids) // BUILD_VECTORS_PER_THREAD)
    version = new_version_name()
    if update.update:
        assert update.plan is not None and update.parent is not None
        plan = update.plan
        logger.info("faiss_build: %s (%s), %d vectors: %s", plan.family, plan.factory, len(store.ids), update.reason)
        parent_directory = index_versions(catalog_dir).path(update.parent)
        added_vectors, refine_vectors = update_vectors(parent_directory, update, store)
        index = update_index(parent_directory, update, store, threads, added_vectors, refine_vectors)
        write_vectors = functools.partial(write_updated_vectors, parent_directory / VECTORS_FILE,
                                          update=update, added_vectors=added_vectors)
        drift = update.drift
    else:
        logger.info(
            "faiss_build: building %s (%s) over %d vectors: %s; %s",
            plan.family,
            plan.factory,
            len(store.ids),
            plan.family_reason,
            update.reason,
        )
        index = train_and_add(plan, store, threads)
        write_vectors = functools.partial(np.save, arr=store.vectors)
        # A full build starts the drift count: later updates keep the quantizers trained here.
        drift = {
            **{key: update.drift[key] for key in ("added", "removed") if key in update.drift},
            "since_full_build": {"version": version, "ntotal": int(index.ntotal), "added": 0, "removed": 0},
            "fraction": 0.0,
            "max_drift": options.max_drift,
        }

    manifest = {
        "version": version,
        "family": plan.family,
        "family_reason": plan.family_reason,
        "auto_measurement": plan.auto_measurement,
        "factory": plan.factory,
        "metric": plan.metric,
        "dimension": store.dimension,
        "ntotal": int(index.ntotal),
        "store": {
            "version": store.version,
            "fingerprint": store.fingerprint,
            "skipped_null_embeddings": store.skipped_null_embeddings,
            # What made the store: an update trusts kept ids' vectors only from a store made alike.
            **{name: store.source.get(name) for name in ("embedder", "embedder_sha256", "chunker")},
        },
        "build_parameters": plan.build_parameters,
        "search_parameters": plan.search_parameters,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
        "libraries": {"faiss": faiss.__version__, "numpy": np.__version__, "duckdb": duckdb.__version__},
        # parent: the CURRENT version when this build started; incremental: whether it was updated
        # (remove_ids / add_with_ids) rather than trained and filled anew; incremental_reason: why.
        "parent": update.parent,
        "incremental": update.update,
        "incremental_reason": update.reason,
        "drift": drift,
    }
    versions = index_versions(catalog_dir)
    # stage() first removes the full-size staging directory a build killed earlier (kill -9, OOM) left.
    with versions.stage() as staging:
        with progress.stage(f"faiss_build: writing version {version}"):
            _write_version_files(staging.path, index, store, write_vectors, manifest)
        staging.commit(version)
    if publish:
        try:
            versions.publish(version)
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


# --------------------------------------------------------------------------- SQL


def _faiss_build(context: CatalogContext, family: str, options: str) -> str:
    try:
        requested = json.loads(options)
    except json.JSONDecodeError as error:
        raise UdfError(
            f"faiss_build: options must be a JSON object such as '{{\"nlist\": 256}}' ({error})"
        ) from error
    if not isinstance(requested, dict):
        raise UdfError(
            f"faiss_build: options must be a JSON object such as '{{\"nlist\": 256}}', got {options!r}"
        )
    publish = requested.pop("publish", None)
    manifest = build_index(
        context.catalog_dir,
        family,
        publish=True if publish is None else bool(publish),
        settings=context.settings,
        **requested,
    )
    return json.dumps(manifest)


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="faiss_build",
        function=_faiss_build,
        parameters=("VARCHAR", "VARCHAR"),
        return_type="VARCHAR",
        kind="native",
        side_effects=True,
        owns_cores=True,
        doc="Build (and unless options.publish is false, publish) an index version; returns the manifest.",
    ),
)

"""One published index version in memory: read, checked, placed on a device, searched.

:func:`load_version` reads a version's files (``index.faiss`` fully, ``vectors.npy``
memory-mapped; layout: :mod:`udfs.faiss_versions`), checks them against the manifest,
clones the index to the GPUs when setting ``faiss_use_gpu`` asks (``faiss_gpu_mode``:
replicate or shard) and returns a :class:`LoadedIndex`.  Which version a connection serves,
and its tuning profile, are :mod:`udfs.faiss_current`'s business.

Scores are similarities, higher is better: for 'l2' the score is the negated squared distance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from udfs.faiss_params import current_parameters, format_parameters, parse, set_on
from udfs.faiss_versions import (
    INDEX_FILE,
    REPAIR_HINT,
    VECTORS_FILE,
    index_versions,
    read_manifest,
    store_fingerprint,
)
from udfs.metrics import ANN_SEARCH_SECONDS
from udfs.registry import UdfError
from udfs.settings import Settings

logger = logging.getLogger("codeintel.faiss")

#: Similarity metrics an index is built with (setting faiss_metric) and exact_rerank scores by.
METRICS = ("ip", "cos", "l2")
# What faiss's GPU cloner can place on a GPU: HNSW has no GPU implementation and
# IndexRefine (the RFlat of ivf_pq_refine) is rejected by ToGpuCloner.
GPU_FAMILIES = frozenset({"flat", "ivf_flat", "ivf_sq", "ivf_pq"})
# faiss GPU k-selection limit (GPU_MAX_SELECTION_K); it bounds nprobe as well.
GPU_MAX_K = 2048


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
    #: OpenMP threads per search call: setting ``faiss_threads``, or None for adaptive.
    #: DuckDB calls the UDF from its worker threads, one chunk of query rows each, and faiss
    #: releases the GIL while searching.  A fixed OpenMP team per call either oversubscribes
    #: the cores when several chunks are in flight (2 threads x 2 calls on 2 cores: 3.3-4.4 s
    #: against 1.8-1.9 s for 8192 Flat queries) or leaves cores idle when DuckDB hands the
    #: whole query column to one call (bench/bench_search.py measured faiss_topk at 2.0x the
    #: time of index.search with 1 thread per call).  Adaptive, the default, gives each call
    #: cores // (searches in flight) threads, which measured 1.04x.  ``omp_set_num_threads``
    #: is per calling thread (an OpenMP ICV), so :meth:`search` sets it each call.  The team
    #: still shares the cores with DuckDB's Python client, which spins while a worker thread
    #: runs the call; bootstrap.core_owning_names gives those statements DuckDB's one thread.
    threads: int | None
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
        if len(queries) == 1:
            # One query: FAISS parallelises over queries, so a team would only be woken to idle;
            # one thread needs no count of the searches in flight.
            distances, labels = self._timed_search(queries, k, threads=1)
        else:
            with self._in_flight_lock:
                self._in_flight += 1
                in_flight = self._in_flight
            try:
                threads = self.threads or max(1, (os.cpu_count() or 1) // in_flight)
                distances, labels = self._timed_search(queries, k, threads)
            finally:
                with self._in_flight_lock:
                    self._in_flight -= 1
        return (-distances if self.metric == "l2" else distances), labels

    def _timed_search(self, queries: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.omp_set_num_threads(threads)
        started = time.perf_counter()
        with self.search_lock or contextlib.nullcontext():
            found = self.index.search(queries, k)
        self._search_seconds.observe(time.perf_counter() - started)
        return found

    @functools.cached_property
    def _search_seconds(self) -> Any:
        """This family's child of the search-time histogram (a labels() lookup costs a lock per call)."""
        return ANN_SEARCH_SECONDS.labels(family=self.family)

    def rows_of(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Faiss rows of ``chunk_ids`` and whether each id is in the index (rows of unknown ids are 0)."""
        positions = np.minimum(np.searchsorted(self.ids, chunk_ids), len(self.ids) - 1)
        found = self.ids[positions] == chunk_ids
        return np.where(found, positions, 0), found

    def parameters(self) -> str:
        return format_parameters(current_parameters(self.index))

    def set_parameters(self, text: str, function: str) -> str:
        """Apply a parameter string such as 'nprobe=32' or 'refine_k_factor=8'; return the resulting one."""
        pairs = parse(text, function)
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
                set_on(space, self.index, name, value)
            except RuntimeError as error:
                settable = ", ".join(current_parameters(self.index)) or "none"
                raise UdfError(
                    f"{function}: cannot set {name!r} on this {self.family} index "
                    f"({self.manifest['factory']}); "
                    f"settable here: {settable}"
                ) from error
        return self.parameters()


def _read_index_file(path: Path, manifest: dict[str, Any], catalog_dir: Path) -> faiss.IndexIDMap2:
    """``faiss.read_index`` fully into memory, checked against the manifest; damage becomes a UdfError."""
    try:
        index = faiss.read_index(str(path))  # already downcast; a downcast of this temporary would dangle
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise UdfError(
            f"faiss: index file {path} is corrupt or truncated ({detail}); "
            f"{REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error
    if (
        not isinstance(index, faiss.IndexIDMap2)
        or index.ntotal != manifest["ntotal"]
        or index.d != manifest["dimension"]
    ):
        raise UdfError(
            f"faiss: index file {path} does not match its manifest (expected IndexIDMap2 with "
            f"{manifest['ntotal']} vectors of dimension {manifest['dimension']}); "
            f"{REPAIR_HINT.format(catalog=catalog_dir)}"
        )
    return index


def _read_vectors(path: Path, manifest: dict[str, Any], catalog_dir: Path) -> np.ndarray:
    """Memory-map vectors.npy rather than read it: ``exact_rerank`` touches only candidate rows,
    so resident memory stays small for large stores, and the mapping outlives gc's unlink."""
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise UdfError(
            f"faiss: cannot read {path} ({error}); {REPAIR_HINT.format(catalog=catalog_dir)}"
        ) from error
    if vectors.shape != (manifest["ntotal"], manifest["dimension"]) or vectors.dtype != np.float32:
        raise UdfError(
            f"faiss: {path} holds {vectors.dtype}{vectors.shape}, expected float32({manifest['ntotal']}, "
            f"{manifest['dimension']}); {REPAIR_HINT.format(catalog=catalog_dir)}"
        )
    return vectors


def _place_on_device(index: faiss.Index, family: str, settings: Settings) -> tuple[faiss.Index, str]:
    """Clone to every GPU (replicated or sharded) when use_gpu is on and faiss can; else warn, stay on CPU."""
    if not settings.faiss_use_gpu:
        return index, "cpu"
    mode = settings.faiss_gpu_mode
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
        return faiss.index_cpu_to_all_gpus(flat_coarse_quantizer(index), co=options), f"gpu:{mode}:{gpus}"
    except RuntimeError as error:
        logger.warning("faiss: cloning the %s index to GPU failed (%s); searching on CPU", family, error)
        return index, "cpu"


def flat_coarse_quantizer(index: faiss.Index) -> faiss.Index:
    """``index``, its IVF's HNSW coarse quantizer (a CPU build's "IVF<n>_HNSW32",
    udfs/faiss_build.py) replaced in place by a flat one over the same centroids, which faiss's GPU
    cloner expects; the lists, codes and ids stay, and so do search results with every list
    probed.  Should the clone then fail, the CPU index searches through the flat quantizer.
    Other indexes are returned as they are."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return index
    quantizer = faiss.downcast_index(ivf.quantizer)
    if not isinstance(quantizer, faiss.IndexHNSW):
        return index
    flat = faiss.IndexFlat(ivf.d, ivf.metric_type)
    flat.add(quantizer.storage.reconstruct_n(0, quantizer.ntotal))
    if ivf.own_fields:
        quantizer.this.own(True)  # freed with this proxy, not leaked when the IVF lets go of it
    flat.this.disown()  # the IVF owns (and frees) its new quantizer
    ivf.quantizer = flat
    ivf.own_fields = True
    return index


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


def load_version(catalog_dir: Path, version: str, settings: Settings) -> LoadedIndex:
    """Read a version into memory, place it on GPU if asked, warn if the store changed since its build.

    The version's search parameters are the build's defaults; its tuning profile is applied by
    the caller (:func:`udfs.faiss_current.load_current`).
    """
    directory = index_versions(catalog_dir).path(version)
    manifest = read_manifest(directory, catalog_dir)
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
        threads=settings.faiss_threads,
        search_lock=None if device == "cpu" else threading.Lock(),
    )
    _warn_if_store_changed(loaded, catalog_dir)
    logger.info(
        "faiss: loaded index version %s (%s, %d vectors) on %s",
        version,
        manifest["factory"],
        loaded.ntotal,
        device,
    )
    return loaded

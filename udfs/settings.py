"""Every setting a catalog takes, defined once: name, type, default and what it does.

:class:`Settings` is a frozen dataclass; each field is one setting, its annotation the type,
its default the default and ``metadata["doc"]`` the sentence the README's settings table
shows (``python bootstrap.py settings`` prints that table).  ``settings.json``,
``--set NAME=VALUE`` and ``CatalogContext(settings={...})`` all go through
:meth:`Settings.resolve`, which refuses unknown names (listing the valid ones) and
values of the wrong type or range, naming the setting.  Code reads ``settings.embed_model``:
no lookup can miss, and no default is written twice.

Checks that need more than a type and a range (a model path that must exist, a host
name) stay with the family that uses the setting, which names the setting in its error.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class SettingError(ValueError):
    """A setting is unknown or has a bad value; the message names it and the fix."""


def _setting(default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
             choices: tuple[Any, ...] | None = None) -> Any:
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


#: Paths ingest never reads, in .gitignore syntax (gitwildmatch) relative to the repository:
#: version-control metadata, virtual environments and caches that hold no source of the project.
DEFAULT_INGEST_EXCLUDE = (
    ".git/", ".hg/", ".svn/", ".venv/", "node_modules/", "__pycache__/", ".tox/", ".mypy_cache/",
    ".pytest_cache/", "site-packages/",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A catalog's settings; build one with :meth:`resolve` (validated) or ``Settings()`` (defaults)."""

    threads: int | None = _setting(
        None, "DuckDB worker threads; null: one per core. Statements calling FAISS or the embedder run "
        "with 1 (they own the cores)", minimum=1)
    # ---- embedding (udfs/embedding.py)
    # The static code model won the docstring-to-code benchmark (BENCHMARKS.md, bench/bench_eval.py).
    embed_model: str = _setting(
        "static-code", "'static-code' (packaged static code embedder), 'minilm' (MiniLM int8 ONNX), or a "
        "path (relative to the catalog) to a static model directory or an ONNX sentence model")
    embed_tokenizer: str | None = _setting(
        None, "tokenizer.json for an ONNX model; null: the one beside the model, else the packaged one")
    embed_max_tokens: int = _setting(256, "ONNX models: tokens per text before truncation", minimum=1)
    embed_batch_size: int = _setting(32, "ONNX models: texts per inference batch", minimum=1)
    embed_threads: int | None = _setting(None, "ONNX models: intra-op threads; null: one per core", minimum=1)
    # 100,000 characters is ~2,500 lines of code.  Without a cap a 100 MB text ran for minutes
    # (tokenizing all of it) before anything refused it.
    embed_max_query_chars: int = _setting(
        100_000, "longest text embed() accepts (a query is a question, not a file)", minimum=1)
    # ---- ingest (udfs/ignore.py)
    ingest_exclude: list[str] = _setting(
        list(DEFAULT_INGEST_EXCLUDE), "paths ingest skips, .gitignore syntax relative to the repository "
        "(on top of the repository's own .gitignore files)")
    # ---- FAISS build options (udfs/faiss_build.py): null means derived from the store
    faiss_nlist: int | None = _setting(
        None, "IVF lists; null: about 4*sqrt(n), at most train_sample/39", minimum=1)
    faiss_pq_m: int | None = _setting(
        None, "PQ sub-quantizers; null: the largest divisor of d up to d/8", minimum=1)
    faiss_pq_nbits: int | None = _setting(
        None, "bits per PQ code; null: 8, fewer for tiny training sets", minimum=1, maximum=16)
    faiss_opq: bool = _setting(False, "rotate with OPQ before PQ (PQ families only)")
    faiss_hnsw_m: int = _setting(32, "HNSW neighbours per node", minimum=2)
    faiss_ef_construction: int = _setting(200, "HNSW efConstruction", minimum=1)
    faiss_metric: str = _setting("ip", "similarity: inner product, cosine or L2", choices=("ip", "cos", "l2"))
    faiss_train_sample: int | None = _setting(
        None, "seeded training sample size; null: max(50k, 39*nlist)", minimum=1)
    # FAISS trains an IVF quantizer for 10 iterations.  Half of that left recall@10 within 0.005
    # at every nprobe, on synthetic 200k x 384 vectors and on the stdlib's code embedded by the
    # static-code model, and cut an ivf_sq build's training and adding at 200k from 6.3 to 3.9 s
    # (BENCHMARKS.md, "K-means iterations of an IVF build").
    faiss_kmeans_iterations: int = _setting(
        5, "k-means iterations training an IVF family's coarse quantizer (FAISS's default: 10)", minimum=1)
    faiss_nprobe: int = _setting(16, "default search nprobe written into IVF indexes (clamped to nlist)",
                                 minimum=1)
    faiss_ef_search: int = _setting(64, "default HNSW efSearch written into the index", minimum=1)
    faiss_refine_k_factor: float = _setting(
        4.0, "ivf_pq_refine: candidates re-ranked exactly per result (FAISS's k_factor_rf)", minimum=1)
    faiss_sq_type: str = _setting("fp16", "ivf_sq codes: 'fp16' or '8' bits per dimension", choices=("fp16", "8"))
    faiss_seed: int = _setting(1234, "seed of the training sample and k-means")
    faiss_memory_budget_bytes: int | None = _setting(
        None, "auto family only: index memory allowed; null: half of physical memory", minimum=1)
    faiss_use_gpu: bool = _setting(False, "clone the loaded index to every GPU (flat and IVF families); "
                                   "auto prefers a GPU-capable family")
    faiss_build_threads: int | None = _setting(
        None, "OpenMP threads for train/add; null: one per 50k vectors, up to every core", minimum=1)
    # Updating keeps the trained centroids and codebooks: fine while the data they were trained
    # on still describes the store, hence the drift bound.  On the standard library's 25k chunks,
    # IVF-Flat given 20% more vectors than it was trained on lost 0.01 of recall@10 against a
    # full build, 50% lost 0.02 (BENCHMARKS.md, "Incremental ingest and index updates").
    faiss_incremental: bool = _setting(
        True, "build updates the CURRENT index (remove_ids / add_with_ids into a new version) when its "
        "family allows (ivf_flat, ivf_sq, ivf_pq, ivf_pq_refine; hnsw cannot remove, flat has nothing to keep) "
        "and nothing structural changed; false: always a full build")
    faiss_max_drift: float = _setting(
        0.2, "incremental builds: a full rebuild once ids added + removed since the last full build pass "
        "this fraction of that build's vectors", minimum=0.0)
    # ---- FAISS serving (udfs/faiss_loaded.py)
    faiss_gpu_mode: str = _setting("replicate", "GPU clone: 'replicate' or 'shard'", choices=("replicate", "shard"))
    faiss_threads: int | None = _setting(
        None, "OpenMP threads per search call; null: cores divided by the searches in flight", minimum=1)
    # ---- autotune (udfs/faiss_current.py, udfs/autotune.py)
    autotune_on_start: bool = _setting(False, "tune an index version with no tuning.json when it is first loaded")
    autotune_k: int = _setting(10, "k that autotune_on_start measures recall at", minimum=1)
    autotune_target_recall: float = _setting(
        0.95, "recall@k autotune_on_start must reach", minimum=0.0, maximum=1.0)
    # ---- metrics exporter (udfs/metrics.py)
    metrics_host: str = _setting("127.0.0.1", "address the Prometheus exporter binds (loopback by default)")
    # 9464 is the port OpenTelemetry's Prometheus exporter uses by default: unprivileged, rarely taken.
    metrics_port: int = _setting(
        9464, "port of the Prometheus exporter (1024 or above: never a privileged port)",
        minimum=1024, maximum=65535)

    # ------------------------------------------------------------------ construction

    @classmethod
    def resolve(cls, values: Mapping[str, Any] | None = None, *, source: str = "settings") -> Settings:
        """Defaults overridden by ``values``; unknown names and bad values raise :class:`SettingError`.

        ``source`` names where the values came from (``settings.json``, ``--set``) in errors.
        """
        values = dict(values or {})
        known = cls.names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; fix the name(s) or remove them. "
                f"Known settings: {', '.join(known)}"
            )
        return cls(**{name: _checked(name, value, source) for name, value in values.items()})

    @classmethod
    def from_file(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Defaults, then ``path`` (a JSON object) when it exists, then ``overrides`` (``--set``)."""
        stored: dict[str, Any] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise SettingError(f"{path} is not valid JSON ({error}); fix or delete it") from error
            if not isinstance(stored, dict):
                raise SettingError(f"{path} must hold a JSON object of settings, such as "
                                   '{"embed_model": "static-code"}; fix or delete it')
        settings = cls.resolve(stored, source=str(path))
        return settings.replace(overrides or {}, source="--set")

    def replace(self, changes: Mapping[str, Any], *, source: str = "settings") -> Settings:
        """A copy with ``changes`` applied, each checked as :meth:`resolve` checks."""
        checked = Settings.resolve(changes, source=source)
        return dataclasses.replace(self, **{name: getattr(checked, name) for name in changes})

    # ------------------------------------------------------------------ reading

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(Settings))

    def with_prefix(self, prefix: str) -> dict[str, Any]:
        """The settings named ``prefix...``, keyed without the prefix (``faiss_nlist`` -> ``nlist``)."""
        return {name.removeprefix(prefix): getattr(self, name) for name in self.names() if name.startswith(prefix)}

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}


# ---------------------------------------------------------------------------- checking

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _allowed(annotation: Any) -> tuple[list[Any], bool]:
    """(the non-None types of ``annotation``, whether null is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        arguments = list(typing.get_args(annotation))
        return [a for a in arguments if a is not type(None)], type(None) in arguments
    return [annotation], False


def _matches(value: Any, kind: Any) -> Any:
    """``value`` as ``kind``, or raise TypeError.  JSON has one number type, so 4 is a float too."""
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, list) and all(isinstance(element, item) for element in value):
            return list(value)
        raise TypeError
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if isinstance(value, bool):  # True is an int in Python, never a number setting here
        raise TypeError
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, kind):
        return value
    raise TypeError


def _describe(kinds: list[Any], nullable: bool) -> str:
    words = [_TYPE_WORDS.get(kind, "a list of strings") for kind in kinds]
    return " or ".join(words + (["null"] if nullable else []))


def _checked(name: str, value: Any, source: str) -> Any:
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    kinds, nullable = _allowed(_field_types()[name])
    if value is None:
        if nullable:
            return None
        raise SettingError(f"{source}: setting {name} must be {_describe(kinds, nullable)}, got null; "
                           f"remove it to use the default {field_default(name)!r}")
    for kind in kinds:
        try:
            value = _matches(value, kind)
            break
        except TypeError:
            continue
    else:
        raise SettingError(f"{source}: setting {name} must be {_describe(kinds, nullable)}, got {value!r}")
    minimum, maximum, choices = (field.metadata[key] for key in ("minimum", "maximum", "choices"))
    if choices is not None and value not in choices:
        raise SettingError(f"{source}: setting {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    if minimum is not None and value < minimum:
        raise SettingError(f"{source}: setting {name} must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{source}: setting {name} must be at most {maximum}, got {value!r}")
    return value


def field_default(name: str) -> Any:
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def type_name(name: str) -> str:
    kinds, nullable = _allowed(_field_types()[name])
    words = {bool: "bool", int: "int", float: "float", str: "str"}
    return " or ".join([words.get(kind, "list[str]") for kind in kinds] + (["null"] if nullable else []))


def markdown_table(describe_default: Callable[[Any], str] = json.dumps) -> str:
    """The README's settings table: one row per setting, generated so it cannot drift."""
    lines = ["| setting | type | default | what it does |", "|---|---|---|---|"]
    for field in dataclasses.fields(Settings):
        default = describe_default(field_default(field.name))
        lines.append(f"| `{field.name}` | {type_name(field.name)} | `{default}` | {field.metadata['doc']} |")
    return "\n".join(lines)

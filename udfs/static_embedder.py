"""Static (lookup-table) code embeddings: a token table, pooled, no model run at query or ingest time.

A static model is a directory (``codeintel/static_training.py`` writes one; the packaged default
is ``udfs/models/static-code``) holding:

* ``tokenizer.json``: a WordPiece tokenizer (the ``tokenizers`` library) whose normaliser splits
  identifiers before lower-casing them: ``parseHTTPResponse`` -> ``parse http response``,
  ``snake_case`` and ``os.path`` at ``_`` and ``.``, letters from digits;
* ``table.npy``: float16 ``[vocabulary, d]``, one vector per token;
* ``weights.npy``: float32 ``[vocabulary]``, each token's pooling weight (an IDF over the
  training corpus; 0 for tokens that carry nothing, such as ``[UNK]``);
* ``model.json``: the model card (name, dimension, corpus and its hash, seed, figures) and the
  SHA-256 of the three files above, checked on load so a damaged model is refused, not used.

A text's vector is the weighted mean of its tokens' rows, L2-normalised; a chunk's (what ingest
stores, :meth:`StaticEmbedder.embed_chunks`) also counts the names it defines, ``symbol_weight``
times (``model.json``, measured in training).  A text with no
weighted token (empty, white space, punctuation only) gets the ``[EMPTY]`` row, normalised: the
projection of what the teacher model made of the empty string, so every output is a unit vector.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from udfs.registry import UdfError

logger = logging.getLogger("codeintel.embed")

MODEL_FORMAT = "codeintel-static/1"
MODEL_CARD = "model.json"
#: The files whose bytes make a static model, in the order they are hashed.
MODEL_FILES = ("tokenizer.json", "table.npy", "weights.npy")
EMPTY_TOKEN = "[EMPTY]"
UNKNOWN_TOKEN = "[UNK]"
#: Texts pooled per BLAS product: the weight matrix is at most this many rows x the vocabulary.
POOL_BLOCK_TEXTS = 256


def model_hash(model_dir: Path) -> str:
    """SHA-256 over the model files' bytes: the identity a store records for its vectors."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()


def is_static_model(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_CARD).is_file()


class StaticEmbedder:
    """A loaded static model; :meth:`embed` is numpy over the whole batch, no per-text Python math."""

    def __init__(self, model_dir: Path | str, *, setting: str = "embed_model") -> None:
        self.model_dir = Path(model_dir)
        card = self.model_dir / MODEL_CARD
        if not self.model_dir.is_dir() or not card.is_file():
            raise UdfError(
                f"embed: {self.model_dir} (setting {setting}) is not a static model directory: it needs "
                f"{MODEL_CARD}, {', '.join(MODEL_FILES)}; train one with `python bootstrap.py train-embedder "
                "--out DIR`, or set embed_model to static-code or minilm"
            )
        try:
            self.card: dict[str, Any] = json.loads(card.read_text())
            missing = [name for name in MODEL_FILES if not (self.model_dir / name).is_file()]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            if self.card.get("format") != MODEL_FORMAT:
                raise ValueError(f"format {self.card.get('format')!r}, expected {MODEL_FORMAT!r}")
            self.hash = model_hash(self.model_dir)
            if self.hash != self.card.get("model_sha256"):
                raise ValueError(f"its files hash to {self.hash[:16]}..., the card says "
                                 f"{str(self.card.get('model_sha256'))[:16]}... (changed or truncated)")
            self.table = np.load(self.model_dir / "table.npy", allow_pickle=False)
            self.weights = np.load(self.model_dir / "weights.npy", allow_pickle=False).astype(np.float32)
            self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as error:  # OSError, ValueError, JSONDecodeError, and the bare Exception of tokenizers
            raise UdfError(
                f"embed: the static model {self.model_dir} (setting {setting}) is corrupt: {error}; "
                "retrain it with `python bootstrap.py train-embedder --out DIR` or point embed_model elsewhere"
            ) from error
        vocabulary = self.tokenizer.get_vocab_size()
        if self.table.ndim != 2 or self.table.shape[0] != vocabulary or self.weights.shape != (vocabulary,):
            raise UdfError(
                f"embed: the static model {self.model_dir} (setting {setting}) is corrupt: table "
                f"{self.table.shape} and weights {self.weights.shape} do not fit a vocabulary of {vocabulary}"
            )
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.dim = int(self.table.shape[1])
        self.name = str(self.card.get("name", self.model_dir.name))
        self.symbol_weight = float(self.card.get("symbol_weight", 1.0))
        empty_id = self.tokenizer.token_to_id(EMPTY_TOKEN)
        self.empty_vector = _normalise(self.table[empty_id].astype(np.float32)[None, :])[0]

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's token ids, concatenated, and each text's token count."""
        encodings = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        counts = np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64, count=len(encodings))
        ids = np.fromiter((i for encoding in encodings for i in encoding.ids), dtype=np.int64,
                          count=int(counts.sum()))
        return ids, counts

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised vectors, float32 ``[len(texts), dim]``, in input order."""
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        ids, counts = self.token_ids(texts)
        return pool(self.table, self.weights, ids, counts, self.empty_vector)

    def embed_chunks(self, contents: Sequence[str], names: Sequence[str]) -> np.ndarray:
        """Chunk vectors: each chunk's text, plus the names it defines weighted ``symbol_weight`` times.

        ``names`` holds each chunk's defined names separated by spaces (:func:`names_text`).
        Names are what a question about code most often asks for, and a chunk's text holds each
        only once among hundreds of tokens; the weight is measured when the model is trained.
        """
        if not len(contents):
            return np.empty((0, self.dim), dtype=np.float32)
        content_ids, content_counts = self.token_ids(contents)
        symbol_ids, symbol_counts = self.token_ids(names)
        ids, counts, multipliers = merge_token_streams(content_ids, content_counts, symbol_ids, symbol_counts,
                                                       self.symbol_weight)
        return pool(self.table, self.weights, ids, counts, self.empty_vector, multipliers)


def names_text(symbols: Sequence[Sequence[str] | None]) -> list[str]:
    """Each chunk's symbol list as one space-separated string (none: empty), as ``embed_chunks`` takes them."""
    return ["" if names is None else " ".join(names) for names in symbols]


def merge_token_streams(first_ids: np.ndarray, first_counts: np.ndarray, second_ids: np.ndarray,
                        second_counts: np.ndarray, second_multiplier: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two token streams over the same texts as one (text i's tokens contiguous): ids, counts and
    each occurrence's multiplier (1 in the first stream, ``second_multiplier`` in the second)."""
    owners = np.concatenate([np.repeat(np.arange(len(first_counts)), first_counts),
                             np.repeat(np.arange(len(second_counts)), second_counts)])
    order = np.argsort(owners, kind="stable")
    ids = np.concatenate([first_ids, second_ids])[order]
    multipliers = np.concatenate([np.ones(len(first_ids), dtype=np.float32),
                                  np.full(len(second_ids), second_multiplier, dtype=np.float32)])[order]
    return ids, first_counts + second_counts, multipliers


def pool(table: np.ndarray, weights: np.ndarray, ids: np.ndarray, counts: np.ndarray,
         empty_vector: np.ndarray, multipliers: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of ``table[ids]`` per text (``counts`` tokens each), normalised.

    A token occurrence weighs ``weights[id]``, times ``multipliers`` (one per occurrence) if given.
    Texts go ``POOL_BLOCK_TEXTS`` at a time through one BLAS product: a [texts x distinct tokens]
    weight matrix times those tokens' rows, so each row is read once per block however often it
    occurs, and memory is bounded by the block, not by a text's length.
    """
    texts = len(counts)
    starts = np.concatenate(([0], np.cumsum(counts)))
    owner = np.repeat(np.arange(texts), counts)
    token_weights = weights[ids] if multipliers is None else weights[ids] * multipliers
    vectors = np.zeros((texts, table.shape[1]), dtype=np.float32)
    mass = np.zeros(texts, dtype=np.float32)
    for first in range(0, texts, POOL_BLOCK_TEXTS):
        last = min(first + POOL_BLOCK_TEXTS, texts)
        block = slice(starts[first], starts[last])
        if block.start == block.stop:
            continue
        distinct, local = np.unique(ids[block], return_inverse=True)
        rows = owner[block] - first
        matrix = np.bincount(rows * len(distinct) + local, weights=token_weights[block],
                             minlength=(last - first) * len(distinct)).reshape(last - first, len(distinct))
        matrix = matrix.astype(np.float32)
        vectors[first:last] = matrix @ table[distinct].astype(np.float32)
        mass[first:last] = matrix.sum(axis=1)
    vectors /= np.maximum(mass, 1e-12)[:, None]
    # No weighted token at all, or tokens whose rows cancel: the model's empty-text vector.
    norms = np.linalg.norm(vectors, axis=1)
    empty = (mass <= 0) | (norms < 1e-6)
    vectors[empty] = empty_vector
    return _normalise(vectors)


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

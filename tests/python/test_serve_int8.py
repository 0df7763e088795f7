"""The int8 first pass of the in-memory search (ragmart.retrieval.products): the candidates it
keeps always hold the exact top k, so answers stay the exact search's, bit for bit.

The service keeps the vectors as int8 from products.QUANTIZE_FROM_ROWS rows; these tests lower
that threshold so the tiny serving database and small synthetic matrices take the int8 path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from test_retrieval_contracts import NOW, TABLES, conn, queries, tiny  # noqa: F401
from test_serve_fast import CALLERS, CONTRACTS

from ragmart.retrieval import products
from ragmart.retrieval.execution import search_contract
from ragmart.retrieval.memory import ServingVectors, duckdb_cosine_distances
from ragmart.retrieval.results import COLUMNS, RetrievedChunk


@pytest.fixture
def quantized(monkeypatch) -> None:
    monkeypatch.setattr(products, "QUANTIZE_FROM_ROWS", 1)


def test_the_integer_product_is_exact(quantized) -> None:
    """The hand-written ONNX MatMulInteger model: int32 sums equal to numpy's in int64."""
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(3_000, 48)).astype(np.float32)
    shared = products.SharedProducts(matrix)
    assert shared.quantized is not None
    codes = rng.integers(0, 256, size=(5, 48), dtype=np.uint8)
    rows, _, _ = products.quantize_rows(matrix, block=700)  # blocks: the same codes
    assert np.array_equal(rows, products.quantize_rows(matrix)[0])
    expected = (codes.astype(np.int64) - 128) @ rows.astype(np.int64)
    assert np.array_equal(shared.quantized.run(codes), expected)
    assert np.array_equal(shared.quantized.run_one(codes[2]), expected[2])


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name if c else "none")
def test_int8_answers_are_the_exact_searchs(conn, contract, quantized) -> None:  # noqa: F811
    """Every caller and contract, k from 1 to past the eligible count, through the int8 pass:
    the same chunks (ids, order, distances, every field) or abstention as the exact search."""
    vectors = ServingVectors.load(conn, TABLES.serving, TABLES.documents)
    assert vectors.products is not None and vectors.products.quantized is not None
    for groups in CALLERS:
        for k in (1, 5, 40):
            for q in queries(4, seed=k):
                exact = search_contract(conn, q, k=k, contract=contract, groups=groups,
                                        now=NOW, exact=True)
                fast = search_contract(conn, q, k=k, contract=contract, groups=groups, now=NOW,
                                       vectors=vectors)
                assert fast.chunks == exact.chunks, (groups, k)
                assert fast.abstained == exact.abstained and fast.reason == exact.reason
    assert sum(vectors.products.batches.values())  # the int8 product ran


def _records(n: int) -> pa.Table:
    """Rows a result prints, for `n` synthetic chunks chunk-00000..."""
    ids = [f"chunk-{i:05d}" for i in range(n)]
    values = {name: [None] * n for name in COLUMNS}
    values.update(chunk_id=ids, document_id=ids, document_version=[1] * n,
                  document_checksum=["x"] * n, section="s", section_type="body",
                  chunk_index=[0] * n, chunk_text=ids, chunker_version="c",
                  embedding_model="m", dbt_invocation_id="i", embedding_invocation_id="i")
    values = {name: (v if isinstance(v, list) else [v] * n) for name, v in values.items()}
    return pa.table({**{name: values[name] for name in COLUMNS}, "source": [None] * n})


def _vectors(matrix: np.ndarray) -> ServingVectors:
    n = len(matrix)
    return ServingVectors(serving_table="t", chunk_ids=np.asarray(
        [f"chunk-{i:05d}" for i in range(n)], dtype=object), matrix=matrix,
        records=_records(n))


def _brute_force(vectors: ServingVectors, q: np.ndarray, rows: np.ndarray, k: int
                 ) -> list[tuple[float, str]]:
    d = duckdb_cosine_distances(vectors.matrix[rows], q).tolist()
    return sorted(zip(d, vectors.chunk_ids[rows].tolist(), strict=True))[:k]


@pytest.mark.parametrize("shape", ["clustered", "near_ties", "scales", "duplicates"])
def test_int8_top_k_is_exact_on_hard_sets(quantized, shape) -> None:
    """Sets where quantization error exceeds the gaps between neighbours (near ties a few
    1e-4 apart, rows of wildly different norms, exact duplicates, a zero vector): top() through
    the int8 pass returns exactly the brute-force (DuckDB distance, chunk_id) ranking, and every
    row the first pass leaves out is bounded below by what it reports."""
    rng = np.random.default_rng(len(shape))
    dims, n = 64, 4_000
    centre = rng.normal(size=dims)
    if shape == "clustered":
        matrix = centre + 0.7 * rng.normal(size=(n, dims))
    elif shape == "near_ties":
        matrix = centre + 1e-3 * rng.normal(size=(n, dims))
    elif shape == "scales":
        matrix = rng.normal(size=(n, dims)) * rng.choice([1e-3, 1.0, 50.0], size=(n, 1))
    else:
        matrix = np.repeat(rng.normal(size=(n // 8, dims)), 8, axis=0)
    matrix = matrix.astype(np.float32)
    matrix[7] = 0.0
    vectors = _vectors(matrix)
    assert vectors.products is not None and vectors.products.quantized is not None
    every = np.arange(n)
    subset = np.sort(rng.choice(n, size=n // 3, replace=False))
    for q in [centre, *rng.normal(size=(4, dims)), matrix[11] + 1e-4]:
        q = np.asarray(q, dtype=np.float32)
        for rows in (every, subset):
            exact = duckdb_cosine_distances(matrix[rows], q)
            near, outside = vectors._within_reach(q, rows, 10)
            left = np.setdiff1d(rows, near)
            if len(left):
                assert outside is not None
                assert outside <= duckdb_cosine_distances(matrix[left], q).min()
            for k in (1, 10, 50):
                got = vectors.top(q, rows, k, None)
                expected = _brute_force(vectors, q, rows, k)
                assert [(c.distance, c.chunk_id) for c in got] == expected
                assert all(isinstance(c, RetrievedChunk) for c in got)
            farthest = float(np.sort(exact)[5])  # min_similarity keeps ~6 rows
            got = vectors.top(q, rows, 10, farthest)
            expected = [t for t in _brute_force(vectors, q, rows, 10) if t[0] <= farthest]
            assert [(c.distance, c.chunk_id) for c in got] == expected

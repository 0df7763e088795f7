"""The in-memory search's shortcuts give the answers of the paths they replace, bit for bit:
DuckDB's cosine distance summed a dimension at a time (ragmart.retrieval.cosine), the k-th
smallest without a full partition, DuckDB's distances of every row the int8 pass keeps (no
float32 pool between), rows gathered from a row-major matrix, and the printed rows' values
converted column by column (ragmart.retrieval.memory)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from test_serve_int8 import _brute_force, _records, quantized  # noqa: F401

from ragmart.retrieval import memory, products
from ragmart.retrieval.cosine import duckdb_cosine_distances, kth_smallest
from ragmart.retrieval.memory import ServingVectors
from ragmart.retrieval.printed import Printed, python_values
from ragmart.retrieval.results import RetrievedChunk


def _duckdb_distances(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    dims = matrix.shape[1]
    con = duckdb.connect()
    con.register("vectors", pa.table({"i": np.arange(len(matrix)), "v": (
        pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dims))}))
    return con.execute(
        f"select array_cosine_distance(v, cast($q as float[{dims}])) as d from vectors "
        "order by i", {"q": "[" + ",".join(map(repr, q.tolist())) + "]"}
    ).fetchnumpy()["d"].astype(np.float32)


@pytest.mark.parametrize("rows", [1, 2, 3, 9, 64])
def test_distances_of_few_rows_in_either_layout_are_duckdbs(rows) -> None:
    """One row (summed by accumulate: numpy would reduce a lone column pairwise), two and more
    (summed a dimension at a time), row- or column-major: DuckDB's bits every time."""
    rng = np.random.default_rng(rows)
    for dims in (3, 384, 1536):
        matrix = (rng.normal(size=(rows, dims))
                  * rng.choice([1e-3, 1.0, 1e3], size=(rows, 1))).astype(np.float32)
        q = (rng.normal(size=dims) * 30).astype(np.float32)
        theirs = _duckdb_distances(matrix, q).view(np.int32)
        for layout in (np.ascontiguousarray(matrix), np.asfortranarray(matrix)):
            assert np.array_equal(duckdb_cosine_distances(layout, q).view(np.int32), theirs)


def test_kth_smallest_is_the_partitions() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 50, 3_199, 3_200, 6_400, 100_000):
        for k in (1, 10, 50):
            if k > size:
                continue
            values = rng.normal(size=size).astype(np.float32)
            values[rng.choice(size, size // 3)] = values[0]  # ties
            assert kth_smallest(values, k) == float(np.partition(values, k - 1)[k - 1])


def _matrix(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    centre = rng.normal(size=dims)
    matrix = (centre + 0.05 * rng.normal(size=(n, dims))).astype(np.float32)
    matrix[n // 2: n // 2 + 40] = matrix[3]  # exact ties: ranked by chunk_id
    return matrix


def test_top_over_the_int8_reach_is_the_pools(quantized, monkeypatch) -> None:  # noqa: F811
    """The rows within reach scored by DuckDB's distance at once (row-major matrix) give the
    same ranking as the float32 pools they replaced (EXACT_REACH = 0: the pools) and as brute
    force, ties and min_similarity included; chunk ids not in row order rank by chunk_id."""
    rng = np.random.default_rng(11)
    matrix = _matrix(rng, 3_000, 32)
    vectors = _vectors(matrix, [f"chunk-{i:05d}" for i in range(len(matrix))])
    assert vectors.matrix.flags.c_contiguous and vectors.products.quantized is not None
    every = np.arange(len(matrix))
    subset = np.sort(rng.choice(len(matrix), size=1_000, replace=False))
    for q in [matrix[3], *rng.normal(size=(3, 32)).astype(np.float32)]:
        for rows in (every, subset):
            distances = np.sort(duckdb_cosine_distances(matrix[rows], q))
            for k, farthest in ((1, None), (10, None), (50, None), (10, float(distances[4]))):
                fast = vectors.top_positions(q, rows, k, farthest)
                with monkeypatch.context() as patch:
                    patch.setattr(memory, "EXACT_REACH", 0)
                    assert vectors.top_positions(q, rows, k, farthest) == fast
                expected = [t for t in _brute_force(vectors, q, rows, k)
                            if farthest is None or t[0] <= farthest]
                assert [(d, vectors.chunk_ids[i]) for d, i in fast] == expected
    # ids whose order is not the rows': ties still ranked by chunk_id
    shuffled = _vectors(matrix, [f"chunk-{(i * 7919) % 3_000:05d}" for i in range(3_000)])
    got = shuffled.top_positions(matrix[3], every, 50, None)
    assert [(d, shuffled.chunk_ids[i]) for d, i in got] == _brute_force(
        shuffled, matrix[3], every, 50)


def _vectors(matrix: np.ndarray, ids: list[str]) -> ServingVectors:
    return ServingVectors(serving_table="t", chunk_ids=np.asarray(ids, dtype=object),
                          matrix=matrix, records=_records(len(matrix)))


def test_without_int8_the_matrix_stays_column_major() -> None:
    matrix = np.random.default_rng(2).normal(size=(300, 16)).astype(np.float32)
    vectors = _vectors(matrix, [f"c{i:04d}" for i in range(300)])
    assert vectors.products.quantized is None and vectors.matrix.flags.f_contiguous
    rows = np.array([0, 7, 299])
    assert np.array_equal(vectors.gather(rows), matrix[rows])
    assert products.SharedProducts(matrix).matrix.flags.f_contiguous


def test_printed_values_are_pyarrows() -> None:
    """Timestamps converted by numpy equal pyarrow's datetimes (None, before 1970, year 1 and
    9999); other columns as pyarrow gives them."""
    stamps = [dt.datetime(2026, 11, 30, 12, 1, 2, 345678), None,
              dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1, 1, 1),
              dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]
    for column in (pa.chunked_array([pa.array(stamps, pa.timestamp("us"))]),
                   pa.chunked_array([pa.array(stamps[:2], pa.timestamp("us")),
                                     pa.array(stamps[2:], pa.timestamp("us"))]),
                   pa.chunked_array([], pa.timestamp("us")),
                   pa.chunked_array([pa.array(stamps, pa.timestamp("ms"))]),
                   pa.chunked_array([pa.array([["a", "b"], None])]),
                   pa.chunked_array([pa.array([1, None, 3])])):
        assert python_values(column) == column.to_pylist()
        assert [type(v) for v in python_values(column)] == [type(v) for v in column.to_pylist()]


def test_printed_rows_are_the_records_rows() -> None:
    """Printed.rows gives what records.take(positions).to_pylist() gives, for columns coded
    (few distinct values, nulls, timestamps) or taken (unique values, lists), in any order
    and with repeats; a list value is never shared between two rows."""
    n = 400
    rng = np.random.default_rng(8)
    base = dt.datetime(2026, 1, 1)
    records = pa.table({
        "chunk_id": [f"c{i:04d}" for i in range(n)],
        "document_id": [f"d{i // 10:03d}" for i in range(n)],
        "title": [None if i % 7 == 0 else f"t{i % 5}" for i in range(n)],
        "version": pa.array([i // 10 for i in range(n)], pa.int64()),
        "created_at": pa.array([base] * n, pa.timestamp("us")),
        "valid_from": pa.array([None if i % 3 else base + dt.timedelta(days=i // 10)
                                for i in range(n)], pa.timestamp("us")),
        "groups": [["a", "b"] if i % 2 else None for i in range(n)],
    })
    printed = Printed(records)
    assert {"document_id", "title", "version", "created_at", "valid_from"} <= set(printed.coded)
    assert "chunk_id" not in printed.coded and "groups" not in printed.coded
    for positions in ([], [0], [399, 3, 3, 17], rng.integers(0, n, size=50).tolist()):
        rows = printed.rows(positions)
        assert rows == records.take(pa.array(positions, pa.int64())).to_pylist()
    rows = printed.rows([1, 1])
    assert rows[0]["groups"] is not rows[1]["groups"]


def test_replaced_is_dataclasses_replace() -> None:
    records = _records(3)
    chunk = RetrievedChunk(rank=1, distance=0.25, **records.to_pylist()[1])
    changes = {"rank": 7, "index_version": "v9", "lexical_score": 1.5, "fused_score": None}
    new = chunk.replaced(**changes)
    assert new == dataclasses.replace(chunk, **changes) and new is not chunk
    assert chunk.rank == 1 and chunk.index_version is None  # the original unchanged
    assert hash(new) == hash(dataclasses.replace(chunk, **changes))
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.rank = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field ranking"):
        chunk.replaced(ranking=2)

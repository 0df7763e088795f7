"""DuckDB's cosine distance in numpy, to the bit, and the selection the int8 pass needs
(ragmart.retrieval.memory)."""

from __future__ import annotations

import numpy as np


def duckdb_cosine_distances(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """DuckDB's array_cosine_distance of each row of `vectors` to `query` (float32), bit for
    bit: its loop sums x*y, x*x and y*y in float32, in order, then 1 - clamp(dot /
    sqrt(|x|^2 |y|^2), -1, 1) (duckdb 1.5's CosineDistanceOp; np.add.accumulate adds in order,
    unlike np.sum's pairwise sum); tests/python/test_serve_fast.py compares it with DuckDB."""
    x = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(query, dtype=np.float32).reshape(-1)
    if len(x) >= 2 and x.shape[1]:
        # the same sums, each dimension added to every row at once: numpy reduces the outer
        # axis of a C-ordered (dims, n) block in order (about 6x faster than accumulate); not
        # for one row, whose block it would sum pairwise, as it sums a contiguous axis
        columns = np.ascontiguousarray(x.T)  # no copy of a column-major block (`gather`)
        dot = np.add.reduce(np.multiply(columns, y[:, None], order="C"), axis=0)
        norm_x = np.add.reduce(np.multiply(columns, columns, order="C"), axis=0)
    else:
        dot = np.add.accumulate(x * y, axis=1, dtype=np.float32)[:, -1]
        norm_x = np.add.accumulate(x * x, axis=1, dtype=np.float32)[:, -1]
    norm_y = np.add.accumulate(y * y, dtype=np.float32)[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = dot / np.sqrt(norm_x * norm_y)
    # DuckDB clamps with std::max(-1, std::min(s, 1)): a NaN (a zero vector) becomes -1
    similarity = np.where(np.isnan(similarity), np.float32(-1),
                          np.clip(similarity, np.float32(-1), np.float32(1)))
    return np.float32(1) - similarity.astype(np.float32)


def kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest of `values` (no NaN), without partitioning them all: the k-th smallest
    of every stride-th value is never below it, so it is among those at or below that."""
    stride = len(values) // (64 * k)
    if stride >= 2:
        edge = np.partition(values[::stride], k - 1)[k - 1]
        values = values[values <= edge]
    return float(np.partition(values, k - 1)[k - 1])

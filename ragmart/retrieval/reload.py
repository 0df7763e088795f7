"""A Retriever following a publish: load the new snapshot's vectors, reusing the unchanged ones.

A publish after a small change serves a snapshot whose serving set is the previous one but for
a few chunks. Loading all its vectors again (ragmart.retrieval.memory.ServingVectors.load) reads
and normalizes every row: at 100,000 chunks most of the time a long-lived reader needs before
it answers from the new snapshot. `load_vectors` reads the vectors of the chunks the previous
load did not hold, and takes the others' rows from it.

When is a row unchanged? A chunk_id names one version of one document and a position in it
(ragmart.chunking.versions.make_chunk_id), but a purge followed by a new landing could serve the
same id again with other text, and a serving table of another version holds another model's
vectors. So a row is reused only when the serving table is the same, and its chunk_id, its
chunk_hash (the text) and its embedding_model are all the previous row's (compared as the
chunk_id itself and a 64-bit DuckDB `hash` of the three: two rows of one chunk_id with other
text pass only on a hash collision, ~5e-20 per changed row), and the vector's size is the
same; any other row is read from the new snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from ragmart.retrieval.memory import ServingVectors, load_records, require_read_only
from ragmart.retrieval.sql import literal_list

KEY_COLUMNS = ("chunk_id", "chunk_hash", "embedding_model")
LITERAL_IDS_MAX = 5_000  # more new rows than this: a full load


@dataclass
class FollowedVectors(ServingVectors):
    """ServingVectors that remember each row's key, for the next load to reuse them."""

    row_keys: np.ndarray | None = field(default=None, repr=False, compare=False)  # uint64
    reused_rows: int = 0  # rows taken from the previous load rather than read


def load_vectors(conn: duckdb.DuckDBPyConnection, serving_table: str,
                 previous: ServingVectors | None,
                 documents_table: str | None = None) -> FollowedVectors:
    """The vectors of `serving_table` on the read-only `conn`, as ServingVectors.load returns
    them, reading only the rows `previous` (the vectors the reader held) lacks or holds under
    another key (see the module doc). Without a usable `previous`, a full load. With
    `documents_table`, the rows a result prints are read whole from the new snapshot (never
    reused: a document's access or metadata can change under an unchanged chunk)."""
    if (not isinstance(previous, FollowedVectors) or previous.row_keys is None
            or previous.serving_table != serving_table or not previous.rows):
        return _full(conn, serving_table, documents_table)
    require_read_only(conn, "serving vectors are reused only from a read-only connection")
    chunk_ids, row_keys = _keys(conn, serving_table)
    # rows are sorted by chunk_id, and so were the previous load's: match on the key's hash,
    # then on the chunk_id itself
    order = np.argsort(previous.row_keys, kind="stable")
    at = np.searchsorted(previous.row_keys, row_keys, sorter=order).clip(0, previous.rows - 1)
    at = order[at]
    reused = (previous.row_keys[at] == row_keys) & (previous.chunk_ids[at] == chunk_ids)
    new_rows = np.flatnonzero(~reused)
    if not len(new_rows) and np.array_equal(at, np.arange(previous.rows)):
        matrix = previous.matrix  # the same rows in the same order (read-only in both)
    else:
        # one gather of the column-major matrix (memory.SharedProducts), new rows overwritten
        matrix = previous.matrix.T.take(at, axis=1).T
    if len(new_rows):
        listed = (literal_list(chunk_ids[new_rows].tolist())
                  if len(new_rows) <= LITERAL_IDS_MAX else None)
        if listed is None:  # a large change: read it all
            return _full(conn, serving_table, documents_table)
        # the same load (and normalization) as a full one, of the new rows only; a constant
        # list, which a snapshot answers from its chunk_id index (only those rows' vectors)
        fresh = ServingVectors.load(conn, f"(select chunk_id, embedding from {serving_table} "
                                          f"where chunk_id in ({listed}))")
        if fresh.matrix.shape != (len(new_rows), matrix.shape[1]) \
                or not np.array_equal(fresh.chunk_ids, chunk_ids[new_rows]):
            return _full(conn, serving_table, documents_table)  # another size
        matrix[new_rows] = fresh.matrix
    records = None if documents_table is None else load_records(
        conn, serving_table, documents_table, pa.chunked_array([pa.array(chunk_ids.tolist(),
                                                                         pa.string())]))
    return FollowedVectors(serving_table=serving_table, chunk_ids=chunk_ids, matrix=matrix,
                           records=records, row_keys=row_keys, reused_rows=int(reused.sum()))


def _full(conn: duckdb.DuckDBPyConnection, serving_table: str,
          documents_table: str | None = None) -> FollowedVectors:
    vectors = FollowedVectors.load(conn, serving_table, documents_table)
    chunk_ids, vectors.row_keys = _keys(conn, serving_table)
    if not np.array_equal(chunk_ids, vectors.chunk_ids):  # cannot happen on a read-only file
        vectors.row_keys = None
    return vectors


def _keys(conn: duckdb.DuckDBPyConnection, serving_table: str) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, a 64-bit hash of each row's chunk_id, chunk_hash and embedding_model), in
    chunk_id order, as ServingVectors.load orders its rows."""
    table = conn.execute(
        f"select chunk_id, hash({', '.join(KEY_COLUMNS)}) as row_key from {serving_table} "
        "order by chunk_id").to_arrow_table()
    return (np.asarray(table["chunk_id"].to_pylist(), dtype=object),
            table["row_key"].to_numpy())

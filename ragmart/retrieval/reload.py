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
chunk_hash (the text) and its embedding_model are all the previous row's, and the vector's
size is the same; any other row is read from the new snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ragmart.retrieval.memory import ReadOnlyRequiredError, ServingVectors

KEY_COLUMNS = ("chunk_id", "chunk_hash", "embedding_model")


@dataclass
class FollowedVectors(ServingVectors):
    """ServingVectors that remember each row's key, for the next load to reuse them."""

    row_keys: pa.Array | None = field(default=None, repr=False, compare=False)
    reused_rows: int = 0  # rows taken from the previous load rather than read


def load_vectors(conn: duckdb.DuckDBPyConnection, serving_table: str,
                 previous: ServingVectors | None) -> FollowedVectors:
    """The vectors of `serving_table` on the read-only `conn`, as ServingVectors.load returns
    them, reading only the rows `previous` (the vectors the reader held) lacks or holds under
    another key (see the module doc). Without a usable `previous`, a full load."""
    if (not isinstance(previous, FollowedVectors) or previous.row_keys is None
            or previous.serving_table != serving_table or not previous.rows):
        return _full(conn, serving_table)
    _check_read_only(conn)
    keys = _keys(conn, serving_table)
    row_keys = _fingerprint(keys)
    found = pc.index_in(row_keys, value_set=previous.row_keys)
    reused = pc.is_valid(found).to_numpy(zero_copy_only=False)
    at = pc.fill_null(found, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    matrix = np.empty((len(keys), previous.matrix.shape[1]), dtype=np.float32)
    matrix[reused] = previous.matrix[at[reused]]
    new_rows = np.flatnonzero(~reused)
    if len(new_rows):
        fresh = _read_rows(conn, serving_table, keys["chunk_id"].take(pa.array(new_rows)))
        if fresh.shape != (len(new_rows), matrix.shape[1]):  # another size: load it all
            return _full(conn, serving_table)
        matrix[new_rows] = fresh
    return FollowedVectors(serving_table=serving_table,
                           chunk_ids=np.asarray(keys["chunk_id"].to_pylist(), dtype=object),
                           matrix=matrix, row_keys=row_keys, reused_rows=int(reused.sum()))


def _full(conn: duckdb.DuckDBPyConnection, serving_table: str) -> FollowedVectors:
    vectors = FollowedVectors.load(conn, serving_table)
    vectors.row_keys = _fingerprint(_keys(conn, serving_table))
    return vectors


def _check_read_only(conn: duckdb.DuckDBPyConnection) -> None:
    (readonly,) = conn.execute(
        "select readonly from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    if not readonly:
        raise ReadOnlyRequiredError("serving vectors are reused only from a read-only connection")


def _keys(conn: duckdb.DuckDBPyConnection, serving_table: str) -> pa.Table:
    return conn.execute(
        f"select {', '.join(KEY_COLUMNS)} from {serving_table} order by chunk_id"
    ).to_arrow_table()


def _fingerprint(keys: pa.Table) -> pa.Array:
    """One string per row: its key columns joined (none of them holds a NUL)."""
    columns = [pc.fill_null(keys[c].combine_chunks().cast(pa.string()), "")
               for c in KEY_COLUMNS]
    return pc.binary_join_element_wise(*columns, "\x00")


def _read_rows(conn: duckdb.DuckDBPyConnection, serving_table: str,
               chunk_ids: pa.Array) -> np.ndarray:
    """Unit-normalized float32 vectors of `chunk_ids` (in chunk_id order, as the table's rows
    are loaded), as ServingVectors.load normalizes them."""
    wanted = pa.table({"chunk_id": chunk_ids})  # noqa: F841 - read by the SQL below
    table = conn.execute(
        f"select served.chunk_id, served.embedding from {serving_table} as served "
        "semi join wanted on served.chunk_id = wanted.chunk_id order by served.chunk_id"
    ).to_arrow_table()
    embeddings = table["embedding"].combine_chunks()
    dims = embeddings.type.list_size if len(table) else 0
    flat = embeddings.flatten().to_numpy(zero_copy_only=False) if len(table) else np.zeros(0)
    matrix = np.asarray(flat, dtype=np.float32).reshape(len(table), dims)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)

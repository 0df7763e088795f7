"""The serving set's vectors in memory, for a long-lived reader: exact candidates at numpy speed.

DuckDB answers a filtered exact search by reading the vectors of the eligible rows, and at
100,000 chunks that read dominates a query whatever the selectivity (bench/retrieval.py: a
1,000-chunk id list costs ~60 ms, a scan ~200 ms). A process that answers many queries
(``ragmart.retrieval.Retriever``) can instead keep the vectors of the serving set in memory:

- they are copied once from a **read-only** connection. DuckDB holds a shared lock on the file
  for as long as that connection is open, so no writer can change it: the copy stays exact for
  the connection's lifetime (published snapshots are read-only by construction);
- a search evaluates the document clauses in DuckDB as always (no vectors), scores every row of
  an eligible document with one matrix product, and hands the best ``pool`` chunk ids to the
  exact SQL search (``retrieval._exact``), which re-applies *every* clause and recomputes the
  distances in DuckDB. The result is the exact search's, not an approximation of it: the pool
  widens until the k-th eligible distance lies clearly inside it (see ``candidate_rounds``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# numpy (float32 dot products) and DuckDB (array_cosine_distance) round differently; a chunk
# outside the pool can only beat the k-th result by more than this if the two disagree by more
NUMERIC_SLACK = 1e-4
MIN_POOL = 32


class ReadOnlyRequiredError(RuntimeError):
    pass


def _key(document_id: pa.Array, document_version: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(document_id, pc.cast(document_version, pa.string()),
                                         pa.scalar("\x1f"))


@dataclass
class ServingVectors:
    """Unit-normalized vectors of one serving table, with each row's chunk id and document."""

    serving_table: str
    chunk_ids: np.ndarray  # object array of str, one per row
    row_document: np.ndarray  # int32 index into document_keys, one per row
    document_keys: pa.Array  # "document_id\x1fdocument_version", one per served document
    matrix: np.ndarray  # float32 (rows, dims), unit rows

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection, serving_table: str) -> ServingVectors:
        """Copy the vectors of `serving_table` from `conn`, which must be read-only."""
        readonly = conn.execute(
            "select readonly from duckdb_databases() where database_name = current_database()"
        ).fetchone()
        if not readonly or not readonly[0]:
            raise ReadOnlyRequiredError(
                "serving vectors are kept in memory only from a read-only connection (the file "
                "cannot change under it); open the database with read_only=True"
            )
        table = conn.execute(
            f"select chunk_id, document_id, document_version, embedding from {serving_table} "
            "order by chunk_id"
        ).to_arrow_table()
        keys = _key(table["document_id"], table["document_version"])
        document_keys = pc.unique(keys) if len(keys) else pa.array([], pa.string())
        row_document = pc.index_in(keys, value_set=document_keys).to_numpy(zero_copy_only=False)
        embeddings = table["embedding"].combine_chunks()
        dims = embeddings.type.list_size if len(table) else 0
        flat = embeddings.flatten().to_numpy(zero_copy_only=False) if len(table) else np.zeros(0)
        matrix = np.asarray(flat, dtype=np.float32).reshape(len(table), dims)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        return cls(
            serving_table=serving_table,
            chunk_ids=np.asarray(table["chunk_id"].to_pylist(), dtype=object),
            row_document=np.asarray(row_document, dtype=np.int32),
            document_keys=document_keys,
            matrix=np.ascontiguousarray(matrix, dtype=np.float32),
        )

    @property
    def rows(self) -> int:
        return len(self.chunk_ids)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.row_document.nbytes)

    def eligible_rows(self, documents: pa.Table | None) -> np.ndarray:
        """Row positions of the chunks of `documents` (document_id, document_version); every
        row when `documents` is None."""
        if documents is None:
            return np.arange(self.rows)
        keys = _key(documents["document_id"], documents["document_version"])
        found = pc.index_in(keys, value_set=self.document_keys).drop_null()
        admitted = np.zeros(len(self.document_keys), dtype=bool)
        admitted[found.to_numpy()] = True
        return np.flatnonzero(admitted[self.row_document])

    def candidate_rounds(
        self, query: np.ndarray, rows: np.ndarray, k: int
    ) -> Iterator[tuple[list[str], float | None]]:
        """Growing pools of candidate chunk ids among `rows`, nearest first, each with the
        distance a result must stay under for the pool to be exact (None: the pool holds every
        row). The caller stops at the first pool whose k-th eligible result (exact distance)
        is under that bound: no row outside the pool can be nearer."""
        if not len(rows):
            return
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        q = q / norm if norm > 0 else q
        # one pass over the whole matrix, then the eligible rows' distances (gathering the
        # eligible rows' vectors first copies up to the whole matrix)
        distances = 1.0 - self.matrix @ q
        if len(rows) != self.rows:
            distances = distances[rows]
        size = max(MIN_POOL, 4 * k + 32)
        while True:
            if size >= len(rows):
                order = np.lexsort((self.chunk_ids[rows], distances))
                yield list(self.chunk_ids[rows[order]]), None
                return
            part = np.argpartition(distances, size)[: size + 1]
            part = part[np.argsort(distances[part], kind="stable")]
            # the pool is the `size` nearest; the next one bounds every row left outside it
            bound = float(distances[part[-1]]) - NUMERIC_SLACK
            yield list(self.chunk_ids[rows[part[:-1]]]), bound
            size *= 4

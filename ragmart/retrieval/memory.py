"""The serving set's vectors in memory, for a long-lived reader: exact candidates at numpy speed.

DuckDB answers a filtered exact search by reading the vectors of the eligible rows, and at
100,000 chunks that read dominates a query whatever the selectivity (bench/retrieval.py: a
1,000-chunk id list costs ~60 ms, a scan ~200 ms). A process that answers many queries
(``ragmart.retrieval.api.Retriever``) can instead keep the vectors of the serving set in memory:

- they are copied once from a **read-only** connection. DuckDB holds a shared lock on the file
  for as long as that connection is open, so no writer can change it: the copy stays exact for
  the connection's lifetime (published snapshots are read-only by construction);
- which chunks a contract admits (every clause but similarity) is computed by the exact SQL
  eligibility query and kept per contract parameters (``remember`` / ``eligibility``): the
  data cannot change under the connection, so only the clock can move the answer, and only
  for ``max_document_age`` (the retrieval layer re-asks after a short while);
- a search scores the eligible rows with one matrix product and hands the nearest chunk ids to
  the exact SQL search (``ragmart.retrieval.execution``), which re-applies *every* clause and
  recomputes the distances in DuckDB. The result is the exact search's, not an approximation of
  it: the pool widens until the k-th eligible distance lies clearly inside it
  (``candidate_rounds``).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# numpy (float32 dot products) and DuckDB (array_cosine_distance) round differently; a chunk
# outside the pool can only beat the k-th result by more than this if the two disagree by more
NUMERIC_SLACK = 1e-4
MIN_POOL = 32
# eligible sets kept per Retriever (one per distinct contract parameters; ~4 bytes a chunk)
ELIGIBILITY_ENTRIES = 64
# below this share of eligible rows, gather them before the product instead of scoring all
GATHER_BELOW = 0.25


class ReadOnlyRequiredError(RuntimeError):
    pass


@dataclass
class ServingVectors:
    """Unit-normalized vectors of one serving table, with each row's chunk id."""

    serving_table: str
    chunk_ids: np.ndarray  # object array of str, one per row, sorted
    matrix: np.ndarray  # float32 (rows, dims), unit rows
    _eligible: OrderedDict[Hashable, tuple[np.ndarray, dt.datetime | None]] = field(
        default_factory=OrderedDict, repr=False, compare=False)
    _chunk_index: pa.Array | None = field(default=None, repr=False, compare=False)

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
            f"select chunk_id, embedding from {serving_table} order by chunk_id"
        ).to_arrow_table()
        embeddings = table["embedding"].combine_chunks()
        dims = embeddings.type.list_size if len(table) else 0
        flat = embeddings.flatten().to_numpy(zero_copy_only=False) if len(table) else np.zeros(0)
        matrix = np.asarray(flat, dtype=np.float32).reshape(len(table), dims)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        return cls(
            serving_table=serving_table,
            chunk_ids=np.asarray(table["chunk_id"].to_pylist(), dtype=object),
            matrix=np.ascontiguousarray(matrix, dtype=np.float32),
        )

    @property
    def rows(self) -> int:
        return len(self.chunk_ids)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def positions(self, chunk_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Sorted row positions of `chunk_ids`; every id must be a row of the serving set."""
        if self._chunk_index is None:
            self._chunk_index = pa.array(self.chunk_ids.tolist(), pa.string())
        found = pc.index_in(chunk_ids, value_set=self._chunk_index)
        if found.null_count:
            missing = pc.filter(chunk_ids, pc.is_null(found))[0].as_py()
            raise LookupError(f"chunk {missing!r} is not among the vectors in memory of "
                              f"{self.serving_table}; the file changed under the reader")
        return np.sort(found.to_numpy(zero_copy_only=False).astype(np.int64))

    def eligibility(self, key: Hashable) -> tuple[np.ndarray, dt.datetime | None] | None:
        """The eligible rows remembered under `key`, with the clock they were computed at."""
        hit = self._eligible.get(key)
        if hit is not None:
            self._eligible.move_to_end(key)
        return hit

    def remember(self, key: Hashable, rows: np.ndarray, at: dt.datetime | None) -> None:
        self._eligible[key] = (rows, at)
        self._eligible.move_to_end(key)
        while len(self._eligible) > ELIGIBILITY_ENTRIES:
            self._eligible.popitem(last=False)

    def distances(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine distances (numpy's rounding) from `query` to the vectors at `rows`."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        q = q / norm if norm > 0 else q
        if len(rows) == self.rows:
            return 1.0 - self.matrix @ q
        if len(rows) < GATHER_BELOW * self.rows:  # copying the rows costs less than all
            return 1.0 - self.matrix[rows] @ q
        return (1.0 - self.matrix @ q)[rows]

    def candidate_rounds(
        self, query: np.ndarray, rows: np.ndarray, k: int
    ) -> Iterator[tuple[list[str], float | None]]:
        """Growing pools of candidate chunk ids among `rows`, nearest first, each with the
        distance a result must stay under for the pool to be exact (None: the pool holds every
        row). The caller stops at the first pool whose k-th eligible result (exact distance)
        is under that bound: no row outside the pool can be nearer.

        The first pool is every row within 2 x NUMERIC_SLACK of the k-th nearest: when all of
        `rows` pass the exact search's clauses (the eligibility was computed by it), that pool
        already holds the exact top k, usually k rows and no more."""
        if not len(rows):
            return
        distances = self.distances(query, rows)
        if len(rows) > k:
            kth = float(np.partition(distances, k - 1)[k - 1])
            size = int(np.count_nonzero(distances <= kth + 2 * NUMERIC_SLACK))
        else:
            size = len(rows)
        grow = max(MIN_POOL, 4 * k + 32)
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
            size = max(grow, 4 * size)

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

With ``documents_table`` (what a Retriever loads), the answer needs no search SQL at all
(``top``): the rows a result prints (every column of the exact search, completeness, the
document's source) are copied once beside the vectors, in the same order, and a pool's exact
distances are computed as DuckDB's ``array_cosine_distance`` computes them, bit for bit
(``duckdb_cosine_distances``: the same floats added in the same order), so ids, order and
distances are those of the exact search. It applies when the eligible set is exact (not a
clock-bound superset): the distance clauses (min_similarity) are then the only ones left,
applied to that distance as the SQL does. At 100k chunks this replaced ~25 ms of SQL per
search (two statements and the sources' query) by well under 1 ms.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ragmart.retrieval.citations import source_of
from ragmart.retrieval.cosine import duckdb_cosine_distances, kth_smallest
from ragmart.retrieval.printed import Printed
from ragmart.retrieval.products import SharedProducts
from ragmart.retrieval.results import COLUMNS, RetrievedChunk
from ragmart.retrieval.values import completeness_sql

# numpy (float32 dot products) and DuckDB (array_cosine_distance) round differently; a chunk
# outside the pool can only beat the k-th result by more than this if the two disagree by more
NUMERIC_SLACK = 1e-4
# the float32 arithmetic of an approximate distance (int8 first pass) errs by less than this
FLOAT_SLACK = 1e-5
MIN_POOL = 32
# eligible sets kept per Retriever (one per distinct contract parameters; ~4 bytes a chunk)
ELIGIBILITY_ENTRIES = 64
# below this share of eligible rows, gather them before the product instead of scoring all:
# gathering rows of the column-major matrix costs as much as the whole product (shared by
# concurrent searches) from about 1% of them (100k x 384: 1,000 rows ~5 ms, all ~9 ms)
GATHER_BELOW = 0.005
# up to this many rows within reach of the int8 pass, `top` computes DuckDB's distances of them
# all (a pool of float32 distances first costs more; past it the full float32 product runs)
EXACT_REACH = 2_048
SORTED_IDS = "sorted_chunk_ids"  # facts: chunk_ids are in Python's string order
PRINTED = "printed_rows"  # facts: the records' values (ragmart.retrieval.printed)


class ReadOnlyRequiredError(RuntimeError):
    pass


def require_read_only(conn: duckdb.DuckDBPyConnection, message: str) -> None:
    """ReadOnlyRequiredError(`message`) unless `conn`'s database is open read-only."""
    readonly = conn.execute(
        "select readonly from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    if not readonly or not readonly[0]:
        raise ReadOnlyRequiredError(message)


@dataclass
class ServingVectors:
    """The vectors of one serving table as stored (float32), each row's inverse norm and chunk
    id and, when loaded with `rows`, the columns a result prints (same order)."""

    serving_table: str
    chunk_ids: np.ndarray  # object array of str, one per row, sorted
    # float32 (rows, dims), the stored vectors (DuckDB's floats), in SharedProducts' layout
    matrix: np.ndarray
    inverse_norms: np.ndarray | None = None  # float32 (rows,), 1 / norm (0: zero vector)
    records: pa.Table | None = field(default=None, repr=False, compare=False)
    _eligible: OrderedDict[Hashable, tuple[np.ndarray, dt.datetime | None]] = field(
        default_factory=OrderedDict, repr=False, compare=False)
    _chunk_index: pa.Array | None = field(default=None, repr=False, compare=False)
    # the product with the whole matrix, shared by the copies that share the matrix (one per
    # worker thread: dataclasses.replace keeps it)
    products: SharedProducts | None = field(default=None, repr=False, compare=False)
    # what other searches learn once of this read-only snapshot (lexical: whether its full-text
    # index lacks rows), shared by the copies like `products`
    facts: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.products is None:
            self.products = SharedProducts(self.matrix)
            self.matrix = self.products.matrix  # (in the layout its products read)
        self.matrix = np.asarray(self.matrix, dtype=np.float32)
        if self.inverse_norms is None:
            norms = np.linalg.norm(self.matrix, axis=1)
            self.inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms),
                                           where=norms > 0).astype(np.float32)

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection, serving_table: str,
             documents_table: str | None = None) -> ServingVectors:
        """Copy the vectors of `serving_table` from `conn`, which must be read-only; with
        `documents_table` (the live documents), also every row a result prints (`top`)."""
        require_read_only(conn, "serving vectors are kept in memory only from a read-only "
                          "connection (the file cannot change under it); open the database "
                          "with read_only=True")
        table = conn.execute(
            f"select chunk_id, embedding from {serving_table} order by chunk_id"
        ).to_arrow_table()
        embeddings = table["embedding"].combine_chunks()
        dims = embeddings.type.list_size if len(table) else 0
        flat = embeddings.flatten().to_numpy(zero_copy_only=False) if len(table) else np.zeros(0)
        matrix = np.asarray(flat, dtype=np.float32).reshape(len(table), dims)
        chunk_ids = np.asarray(table["chunk_id"].to_pylist(), dtype=object)
        records = None if documents_table is None else load_records(
            conn, serving_table, documents_table, table["chunk_id"])
        return cls(serving_table=serving_table, chunk_ids=chunk_ids, matrix=matrix,
                   records=records,
                   facts={} if records is None else {PRINTED: Printed(records)})

    @property
    def rows(self) -> int:
        return len(self.chunk_ids)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + (self.records.nbytes if self.records is not None
                                          else 0)

    def fact(self, key: str, compute: Callable[[], object]) -> object:
        """`compute()` once for this snapshot (read-only: it cannot change under the reader),
        kept in `facts` under `key` for every copy sharing them."""
        if key not in self.facts:
            self.facts[key] = compute()
        return self.facts[key]

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
        q = _unit(query)
        if len(rows) < GATHER_BELOW * self.rows:  # copying the rows costs less than all
            return 1.0 - (self.matrix[rows] @ q) * self.inverse_norms[rows]
        assert self.products is not None
        every = 1.0 - self.products.product(q) * self.inverse_norms
        return every if len(rows) == self.rows else every[rows]

    def candidate_rounds(
        self, query: np.ndarray, rows: np.ndarray, k: int
    ) -> Iterator[tuple[list[str], float | None]]:
        """`candidate_positions` as chunk ids."""
        for pool, bound in self.candidate_positions(query, rows, k):
            yield list(self.chunk_ids[pool]), bound

    def candidate_positions(
        self, query: np.ndarray, rows: np.ndarray, k: int
    ) -> Iterator[tuple[np.ndarray, float | None]]:
        """Growing pools of candidate row positions among `rows`, nearest first, each with the
        distance a result must stay under for the pool to be exact (None: the pool holds every
        row). The caller stops at the first pool whose k-th eligible result (exact distance)
        is under that bound: no row outside the pool can be nearer.

        The first pool is every row within 2 x NUMERIC_SLACK of the k-th nearest: when all of
        `rows` pass the exact search's clauses (the eligibility was computed by it), that pool
        already holds the exact top k, usually k rows and no more. With the int8 vectors
        (ragmart.retrieval.products), the rows scored in float32 are first narrowed to those
        whose lower bound is within reach of the k-th nearest (`_within_reach`)."""
        if len(rows):
            yield from self._candidates(query, rows, k, self._reach(query, rows, k))

    def _reach(self, query: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, float | None] | None:
        """`_within_reach` when the int8 first pass applies to `rows` (not a few of them)."""
        if len(rows) >= GATHER_BELOW * self.rows:
            return self._within_reach(query, rows, k)
        return None

    def _candidates(self, query: np.ndarray, rows: np.ndarray, k: int,
                    reach: tuple[np.ndarray, float | None] | None
                    ) -> Iterator[tuple[np.ndarray, float | None]]:
        """candidate_positions, the first pass's `reach` already known."""
        if reach is not None:
            near, outside = reach
            yield from _pools(self.chunk_ids, near, self.distances(query, near), k, outside)
            if outside is None:
                return
            # the consumer wants rows past every one within reach: score them all
        yield from _pools(self.chunk_ids, rows, self.distances(query, rows), k, None)

    def _within_reach(self, query: np.ndarray, rows: np.ndarray, k: int
                      ) -> tuple[np.ndarray, float | None] | None:
        """(the positions among `rows` that can be among the k nearest by the int8 product,
        a lower bound of the distance of every other row of `rows`, None when there is none),
        or None without the int8 vectors. Each row's approximate distance is within
        `err_q + norm_q * rho` of its exact one (ragmart.retrieval.products), plus
        NUMERIC_SLACK for DuckDB's rounding and FLOAT_SLACK for the float32 arithmetic here."""
        assert self.products is not None
        approx = self.products.approximate(_unit(query))
        if approx is None or self.products.quantized is None:
            return None
        similarity, err_q, norm_q = approx  # a fresh array: changed in place below
        if len(rows) <= k:
            return rows, None
        rho = self.products.quantized.rho
        if len(rows) != self.rows:
            similarity, rho = similarity[rows], rho[rows]
        width = rho * np.float32(norm_q)
        width += np.float32(err_q + NUMERIC_SLACK + FLOAT_SLACK)
        upper = np.subtract(np.float32(1), similarity, out=similarity)  # approximate distances
        lower = upper - width
        upper += width
        near = np.flatnonzero(lower <= kth_smallest(upper, k))  # within reach of the k-th
        lower[near] = np.inf
        outside = float(lower.min())
        return rows[near], (outside if outside != np.inf else None)

    def top(self, query: np.ndarray, rows: np.ndarray, k: int, farthest: float | None
            ) -> tuple[RetrievedChunk, ...]:
        """The exact search's top k among `rows` (every one eligible but for the distance
        clauses, whose bound is `farthest`) for `query` (float32, the floats the search SQL
        binds), without its SQL (see the module doc): each pool's distances are DuckDB's
        (`duckdb_cosine_distances`), ranked by (distance, chunk_id)."""
        return self._printed(self.top_positions(query, rows, k, farthest))

    def top_positions(self, query: np.ndarray, rows: np.ndarray, k: int, farthest: float | None
                      ) -> list[tuple[float, int]]:
        """`top`'s (distance, row position) pairs, best first, without building the rows
        (hybrid search fuses the ids of a deeper vector ranking and prints only k rows)."""
        if self.records is None:
            raise ValueError("the rows were not loaded (ServingVectors.load documents_table)")
        if not len(rows):
            return []

        def settled(kept: list[tuple[float, int]], bound: float | None) -> bool:
            # no row outside the pool can be nearer than the k-th kept (or pass farthest)
            return (bound is None or (len(kept) >= k and kept[k - 1][0] < bound)
                    or (farthest is not None and bound > farthest))

        reach = self._reach(query, rows, k)
        if reach is not None and len(reach[0]) <= EXACT_REACH:
            # DuckDB's distances of every row within reach at once: no float32 pass between
            kept = self._ranked(query, reach[0], farthest)
            if settled(kept, reach[1]):
                return kept[:k]
        kept = []
        for pool, bound in self._candidates(query, rows, k, reach):
            kept = self._ranked(query, pool, farthest)
            if settled(kept, bound):
                break
        return kept[:k]

    def _ranked(self, query: np.ndarray, pool: np.ndarray, farthest: float | None
                ) -> list[tuple[float, int]]:
        """(DuckDB's distance, position) of the rows at `pool` not past `farthest`, ranked by
        (distance, chunk_id), a NaN last (chunk ids sorted: by position)."""
        distances = duckdb_cosine_distances(self.gather(pool), query).astype(np.float64)
        if farthest is not None:
            pool, distances = pool[distances <= farthest], distances[distances <= farthest]
        if self.fact(SORTED_IDS, lambda: bool(np.all(self.chunk_ids[:-1] < self.chunk_ids[1:]))):
            order = np.lexsort((pool, distances))
            return list(zip(distances[order].tolist(), pool[order].tolist(), strict=True))
        ranked = sorted(zip(distances.tolist(), self.chunk_ids[pool], pool.tolist(),
                            strict=True),
                        key=lambda t: (t[0] != t[0], t[0] if t[0] == t[0] else 0.0, t[1]))
        return [(distance, i) for distance, _, i in ranked]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at `positions`, (n, dims), a copy: of rows from a row-major matrix, of
        each dimension's values from a column-major one (its rows are 4 bytes in each of
        `dims` places), column-major then (what duckdb_cosine_distances reads)."""
        if self.matrix.flags.c_contiguous:
            return self.matrix[positions]
        return np.take(self.matrix.T, positions, axis=1).T

    def rows_at(self, query: np.ndarray, positions: np.ndarray, farthest: float | None
                ) -> tuple[RetrievedChunk, ...]:
        """The exact search's rows at `positions` (eligible but for the distance clauses, whose
        bound is `farthest`: a row past it is left out), with DuckDB's distances to `query`, in
        the order given (ranks 1..n): what `top` prints, for rows another ranking chose."""
        if self.records is None:
            raise ValueError("the rows were not loaded (ServingVectors.load documents_table)")
        distances = duckdb_cosine_distances(self.gather(positions), query).tolist()
        return self._printed([(d, int(i)) for d, i in zip(distances, positions, strict=True)
                              if farthest is None or d <= farthest])

    def _printed(self, kept: list[tuple[float, int]]) -> tuple[RetrievedChunk, ...]:
        """The kept rows' records, in order, as results (ranks 1..n) with their distances."""
        records = self.records
        assert records is not None
        printed = self.fact(PRINTED, lambda: Printed(records))
        assert isinstance(printed, Printed)
        return tuple(RetrievedChunk(rank=rank, distance=d, **row) for rank, ((d, _), row)
                     in enumerate(zip(kept, printed.rows([i for _, i in kept]), strict=True),
                                  start=1))


def _unit(query: np.ndarray) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(q))
    return q / norm if norm > 0 else q


def _pools(chunk_ids: np.ndarray, rows: np.ndarray, distances: np.ndarray, k: int,
           outside: float | None) -> Iterator[tuple[np.ndarray, float | None]]:
    """ServingVectors.candidate_positions over `rows` with their float32 `distances`, every
    other row of the search being at `outside` or farther (None: there is none)."""
    grow = max(MIN_POOL, 4 * k + 32)
    size = len(rows)

    def bounded(bound: float | None) -> float | None:
        return outside if bound is None else bound if outside is None else min(bound, outside)

    if len(rows) > grow:  # one selection pass: the first pool is among the `grow` nearest
        part = np.argpartition(distances, grow)[: grow + 1]
        part = part[np.argsort(distances[part], kind="stable")]
        kth = float(distances[part[k - 1]])
        size = int(np.count_nonzero(distances[part] <= kth + 2 * NUMERIC_SLACK))
        if size <= grow:  # the (size + 1)-th nearest bounds every row left outside
            yield rows[part[:size]], bounded(float(distances[part[size]]) - NUMERIC_SLACK)
            size = max(grow, 4 * size)
        else:  # more than `grow` rows within the slack of the k-th: count them all
            size = int(np.count_nonzero(distances <= kth + 2 * NUMERIC_SLACK))
    elif len(rows) > k:
        kth = float(np.partition(distances, k - 1)[k - 1])
        size = int(np.count_nonzero(distances <= kth + 2 * NUMERIC_SLACK))
    while True:
        if size >= len(rows):
            order = np.lexsort((chunk_ids[rows], distances))
            yield rows[order], outside
            return
        part = np.argpartition(distances, size)[: size + 1]
        part = part[np.argsort(distances[part], kind="stable")]
        # the pool is the `size` nearest; the next one bounds every row left outside it
        yield rows[part[:-1]], bounded(float(distances[part[-1]]) - NUMERIC_SLACK)
        size = max(grow, 4 * size)


def load_records(conn: duckdb.DuckDBPyConnection, serving_table: str, documents_table: str,
             chunk_ids: pa.ChunkedArray) -> pa.Table:
    """Every row of `serving_table` as a live search's result prints it (the exact search's
    columns, completeness, the document's source: ragmart.retrieval.execution._exact and
    citations.with_sources), ordered by chunk_id like the vectors."""
    names = [c for c in COLUMNS if c not in ("completeness", "document_valid_to")]
    table = conn.execute(f"""
        select {", ".join(f"chunks.{c}" for c in names)},
            cast(null as timestamp) as document_valid_to,
            {completeness_sql()} as completeness
        from {serving_table} as chunks
        order by chunks.chunk_id
    """).to_arrow_table()
    if not table["chunk_id"].equals(chunk_ids):
        raise RuntimeError(f"the rows of {serving_table} changed while they were read")
    sources = {(document_id, version): source_of(metadata) for document_id, version, metadata
               in conn.execute(f"select distinct document_id, document_version, metadata "
                               f"from {documents_table}").fetchall()}
    column = [sources.get(key) for key in zip(table["document_id"].to_pylist(),
                                               table["document_version"].to_pylist(),
                                               strict=True)]
    # one chunk per column: a search takes ~10 rows of it (~2x faster than from DuckDB's batches)
    return table.append_column("source", pa.array(column, pa.string())).combine_chunks()

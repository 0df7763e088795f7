"""A publish's DuckDB side on a thread of its own, one table ahead of the PostgreSQL side.

An incremental publish spends most of its time in two places that do not wait for each other:
DuckDB (fingerprinting every source row, diffing with the live fingerprints, rendering the
changed rows as text) and the server (inserting the new serving rows into the HNSW graph, a
graph search per row). Done in turn, they add up; here one thread (`TableProducer`) does all
the DuckDB work of every table in order and hands the COPY payloads over a small bounded queue,
while the publishing thread writes them to the server: DuckDB renders the history while the
server inserts the serving rows into its graph. Profiled at 20,000 chunks and a 1% edit
(bench/serving_profile.py), the serving table's COPY was 0.25-0.65 s and the DuckDB work of the
other tables 0.1-0.25 s of it.

Only the producer touches the DuckDB connection while it runs (DuckDB releases the GIL while it
executes, psycopg while it waits for the server), and only the publishing thread the server
connection. The first table's source fingerprints are computed as soon as the producer starts,
while the publishing thread takes the lock and reads the live fingerprints; the rest waits for
the `Plan`. At most QUEUE_BATCHES batches of rows (transfer.BATCH_ROWS each) wait in the queue:
a first publish streams, as before, instead of holding the corpus in memory.

A table in the plan's `parallel` set (the serving table of an incremental publish) has its
new rows cut into at least PARALLEL batches (when there are MIN_SPLIT_ROWS of them), which
`shares` deals out in turn to PARALLEL COPYs on as many connections
(ragmart.serving.postgres.parallel): each server backend inserts its share into the HNSW graph.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import duckdb

from ragmart.serving.postgres.transfer import (
    BATCH_ROWS,
    csv_batches,
    fingerprint_sql,
    gone_sql,
    rows_sql,
    split_fingerprints,
)

QUEUE_BATCHES = 2
PARALLEL = 2  # COPYs of a `parallel` table's new rows, each on its own connection
MIN_SPLIT_ROWS = 32  # fewer new rows go in one COPY (a second backend would not pay)
# DuckDB's threads while it diffs and renders an incremental publish. Its queries there are
# small (the diff, a few hundred rows rendered) and run while the server's backends insert
# into the HNSW graph: with DuckDB's default of one thread per core, the publishing process
# used 0.24-0.39 s of CPU per publish at 20,000 chunks after a 1% edit, 0.18-0.28 s with one
# (bench/serving_profile.py's data, 2 cores shared with the server; 14 publishes each), and
# an unchanged publish took 0.10-0.11 s instead of 0.14-0.17 s. A full publish keeps them all.
INCREMENTAL_THREADS = 1
_DONE = object()


@dataclass
class Plan:
    """What the publishing thread decided for each table once it held the lock: the
    publication id, the tables published in full, the live fingerprints of the others (one
    comma-joined string each, '' when none)."""

    publication_id: int
    full: set[str]
    live: dict[str, str]
    parallel: set[str] = field(default_factory=set)
    # called (on the producer's thread) when a `parallel` table's new rows are cut for
    # PARALLEL COPYs, before they are rendered: the second connection opens only then
    on_split: Callable[[str], None] = lambda table: None
    # DuckDB threads for the diffs and rendering (SET on the producer's connection, RESET
    # when it is done; None: left as they are): INCREMENTAL_THREADS for an incremental publish
    # of a database the publish opened itself
    threads: int | None = None


class Cancelled(Exception):
    """The publishing thread gave up (it failed): the producer stops at its next hand-over."""


class TableProducer:
    """Runs the DuckDB side of publishing `tables` (name -> published DuckDB columns, in
    publish order) on a thread; `rows(table)`, `new_fingerprints(table)` and `gone(table)`
    return its payloads in the order the thread produces them (the publishing thread asks for
    them in that order). Use as a context manager: leaving it stops and joins the thread, so
    the DuckDB connection is free again afterwards."""

    def __init__(self, duck: duckdb.DuckDBPyConnection, tables: dict[str, dict[str, str]]):
        self.duck, self.tables = duck, tables
        self._plan: queue.Queue[Plan | None] = queue.Queue(maxsize=1)
        # unbounded: the row batches are bounded by _room (at most QUEUE_BATCHES waiting), the
        # rest (end marks, fingerprints) is small and must never hold the producer up
        self._out: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(QUEUE_BATCHES)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragmart-publish-duckdb",
                                        daemon=True)

    def __enter__(self) -> TableProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._cancel.set()
        with contextlib.suppress(queue.Full):
            self._plan.put_nowait(None)  # a producer still waiting for its plan
        self._thread.join()  # a producer waiting for room sees the cancel within 0.1 s

    def start(self, plan: Plan) -> None:
        """Hand the plan over: the producer diffs and renders from here on."""
        self._plan.put(plan)

    def join(self) -> None:
        """Wait for the producer to finish (every payload taken); raises what it raised."""
        self._thread.join()
        try:
            item = self._out.get_nowait()
        except queue.Empty:
            return
        raise item if isinstance(item, BaseException) else RuntimeError(
            f"publish pipeline: payload {item[0]} {item[1]} left over")

    # -- the publishing thread's side -------------------------------------------------------
    def _take(self, kind: str, table: str):
        while True:  # a second COPY's thread may wait here when the publish gives up
            try:
                item = self._out.get(timeout=0.1)
                break
            except queue.Empty:
                if self._cancel.is_set():
                    raise Cancelled from None
        if isinstance(item, BaseException):
            raise item
        got_kind, got_table, payload = item
        if (got_kind, got_table) != (kind, table):  # a bug, never a data condition
            raise RuntimeError(f"publish pipeline out of order: {got_kind} {got_table}, "
                               f"expected {kind} {table}")
        return payload

    def rows(self, table: str) -> Iterator[tuple[bytes, int]]:
        """(CSV bytes, rows) of `table`'s rows to COPY in (every row when published in full,
        else those whose fingerprint no live row has)."""
        while (batch := self._take("rows", table)) is not _DONE:
            self._room.release()
            yield batch

    def shares(self, table: str, n: int = PARALLEL) -> Shares:
        """`rows(table)` dealt out in turn to `n` consumers (threads): `share(k)` yields
        batches k, k + n, k + 2n, ..."""
        return Shares(self.rows(table), n, self._cancel)

    def new_fingerprints(self, table: str) -> bytes:
        """CSV (table_name, row_fingerprint) of the rows `rows` wrote (incremental only)."""
        return self._take("new", table)

    def gone(self, table: str) -> tuple[bytes, int]:
        """(CSV (publication_id, table_name, row_fingerprint), rows) of the live rows the
        source no longer has (incremental only)."""
        return self._take("gone", table)

    # -- the producer thread --------------------------------------------------------------
    def _put(self, kind: str, table: str, payload) -> None:
        if kind == "rows" and payload is not _DONE:
            while not self._room.acquire(timeout=0.1):
                if self._cancel.is_set():
                    raise Cancelled
        if self._cancel.is_set():
            raise Cancelled
        self._out.put((kind, table, payload))

    def _run(self) -> None:
        try:
            self._produce()
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the publishing thread, raised there
            self._out.put(exc)

    def _csv(self, select_sql: str, params: dict) -> tuple[bytes, int]:
        reader = self.duck.execute(select_sql, params).to_arrow_reader(BATCH_ROWS)
        chunks = list(csv_batches(reader))
        return b"".join(c for c, _ in chunks), sum(n for _, n in chunks)

    def _fingerprints(self, table: str):
        return self.duck.execute(f"select rowid as source_row, "
                                 f"{fingerprint_sql(self.tables[table])} as fp "
                                 f'from main."{table}"').to_arrow_table()

    def _produce(self) -> None:
        duck = self.duck

        # the first table's fingerprints while the publishing thread takes the lock (the
        # others' when their turn comes: by then the server is busy with the first's rows)
        first = next(iter(self.tables))
        sources = {first: self._fingerprints(first)}
        plan = self._plan.get()
        if plan is None:
            raise Cancelled
        if plan.threads is not None:
            duck.execute(f"set threads = {int(plan.threads)}")
        try:
            self._render(plan, sources)
        finally:
            if plan.threads is not None:
                duck.execute("reset threads")

    def _render(self, plan: Plan, sources: dict) -> None:
        duck = self.duck
        pid = plan.publication_id
        for table, columns in self.tables.items():
            if table in plan.full:
                reader = duck.execute(rows_sql(table, columns), {"id": pid}) \
                    .to_arrow_reader(BATCH_ROWS)
                for batch in csv_batches(reader):
                    self._put("rows", table, batch)
                self._put("rows", table, _DONE)
                continue
            live, source, new = (f"ragmart_pg_{kind}_{table}" for kind in
                                 ("live", "source", "new"))
            duck.register(source, sources.pop(table) if table in sources
                          else self._fingerprints(table))
            duck.register(live, split_fingerprints(plan.live[table]))
            try:
                added = duck.execute(f"select source_row, fp from {source} "
                                     f"anti join {live} using (fp)").to_arrow_table()
                duck.register(new, added)
                if added.num_rows:
                    pieces = PARALLEL if table in plan.parallel and \
                        added.num_rows >= MIN_SPLIT_ROWS else 1
                    if pieces > 1:
                        plan.on_split(table)
                    reader = duck.execute(rows_sql(table, columns, new=new),
                                          {"id": pid}).to_arrow_reader(BATCH_ROWS)
                    size = min(BATCH_ROWS, -(-added.num_rows // pieces))
                    for batch in csv_batches(_sliced(reader, size)):
                        self._put("rows", table, batch)
                self._put("rows", table, _DONE)
                self._put("new", table, self._csv(f"select $t as table_name, fp from {new}",
                                                  {"t": table})[0] if added.num_rows else b"")
                self._put("gone", table, self._csv(gone_sql(live, source),
                                                   {"id": pid, "t": table}))
            finally:
                for name in (live, source, new):
                    duck.unregister(name)


def _sliced(reader, size: int):
    """The Arrow batches of `reader`, each cut into batches of at most `size` rows."""
    for batch in reader:
        for offset in range(0, batch.num_rows, size):
            yield batch.slice(offset, size)


class Shares:
    """One table's row batches dealt out in turn to `n` consumer threads, each COPYing its
    share on its own connection. Deterministic (batch i to consumer i mod n), so that a
    consumer that starts late still gets its share, and at most one batch is out of the
    producer at a time. `abort` (a consumer failed) makes every share raise Cancelled."""

    def __init__(self, batches: Iterator, n: int, cancel: threading.Event):
        self._batches, self._n, self._cancel = batches, n, cancel
        self._turn = 0
        self._done = self._aborted = False
        self._cond = threading.Condition()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def share(self, k: int) -> Iterator[tuple[bytes, int]]:
        while True:
            with self._cond:
                while not (self._done or self._aborted) and self._turn % self._n != k:
                    self._cond.wait(0.1)
                    if self._cancel.is_set():
                        self._aborted = True
                if self._aborted:
                    raise Cancelled
                if self._done:
                    return
                try:
                    batch = next(self._batches)
                except StopIteration:
                    self._done = True
                    return
                except BaseException:
                    self._aborted = True
                    raise
                finally:
                    self._turn += 1
                    self._cond.notify_all()
            yield batch

"""A publish's second connection: half of the serving table's new rows, inserted beside the
publish's own COPY.

What an incremental publish waits for is mostly pgvector inserting the new serving rows into
the HNSW graph, a graph search per row, in the one server backend of the publish's connection
(bench/serving_profile.py: 0.26 of 0.45 s at 20,000 chunks and a 1% edit on a quiet machine,
1.5 of 1.8 s at 100,000). pgvector takes concurrent inserts, but a PostgreSQL transaction
belongs to one connection: a second backend can only insert in a transaction of its own. So
`SecondWriter` COPYs its share of the rows (pipeline.Shares) on its own connection and COMMITS
it before the publish's transaction switches, and the guarantees hold by the row model:

- readers never see those rows early: they carry published_in = the new publication's id, and
  every read (searches, ``ragmart.retrieve``, the row-level security policies, rollback) keeps
  rows with published_in <= the serving publication's id, which is lower until the switch;
- the switch still commits every other row, the removals and the pointer in one transaction,
  after the second connection committed (the publish waits for it), so a reader after the
  switch sees all of the new rows;
- a publish that fails after that commit must not leave rows a later publication would show
  (its id is higher). The second connection records (publication id, table) in
  ``ragmart.staged_rows`` in the same commit as its rows; the publish's transaction deletes
  that entry with the switch. On a failure `__exit__` deletes the rows of an entry still there
  (under the publishers' lock, once the publish's own transaction is gone), and should the
  process die before, the next publish does (`discard_staged`) before it writes anything;
  a purge deletes a document's rows whatever their publication.
"""

from __future__ import annotations

import contextlib
import threading

from ragmart.serving.postgres.pipeline import Cancelled, Shares
from ragmart.serving.postgres.schema import SCHEMA, STAGED, lock
from ragmart.serving.postgres.settings import connect
from ragmart.serving.postgres.transfer import copy_csv


def discard_staged(conn, publication_id: int | None = None) -> dict[str, int]:
    """Delete the rows second connections committed for publications whose own transaction
    never did (every entry of ragmart.staged_rows, or `publication_id`'s), in the caller's
    transaction, which must hold the publishers' lock. Returns table -> rows deleted."""
    only, params = ("where publication_id = %s", (publication_id,)) \
        if publication_id is not None else ("", ())
    deleted: dict[str, int] = {}
    for pid, table in conn.execute(f"delete from {STAGED} {only} "
                                   "returning publication_id, table_name", params).fetchall():
        if conn.execute("select to_regclass(%s) is not null",
                        (f'{SCHEMA}."{table}"',)).fetchone()[0]:
            deleted[table] = deleted.get(table, 0) + conn.execute(
                f'delete from {SCHEMA}."{table}" where published_in = %s', (pid,)).rowcount
    return deleted


class SecondWriter:
    """A second connection to `url`, opened on a thread only once a table's new rows are cut
    in two (`open`, the producer's Plan.on_split: a full publish, or one with fewer than
    pipeline.MIN_SPLIT_ROWS new serving rows, opens none), that COPYs one share of them when
    `start`ed. Should it fail to open (max_connections, a pooler's limit), its share is kept
    in memory (`leftover`) and the publish's own connection COPYs it after its own. Use as a
    context manager, entered before the publish's own connection and left after it."""

    def __init__(self, url: str):
        self._url = url
        self._conn = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._shares: Shares | None = None
        self._committed: int | None = None  # the publication whose rows it committed
        self.rows = 0
        self.leftover: list[tuple[bytes, int]] = []  # its share, when it could not connect
        self._lock = threading.Lock()
        self._connecting: threading.Thread | None = None

    def __enter__(self) -> SecondWriter:
        return self

    def open(self, table: str | None = None) -> None:
        """Start opening the connection on a thread (once; off the publish's path)."""
        with self._lock:
            if self._connecting is None:
                self._connecting = threading.Thread(target=self._connect, daemon=True,
                                                    name="ragmart-publish-connect")
                self._connecting.start()

    def _connect(self) -> None:
        with contextlib.suppress(Exception):  # no second connection: the first COPYs it all
            self._conn = connect(self._url)

    def _opened(self) -> bool:
        """Whether the connection is open (waits for the attempt, if one was started)."""
        with self._lock:
            connecting = self._connecting
        if connecting is not None:
            connecting.join()
        return self._conn is not None

    def start(self, shares: Shares, k: int, table: str, columns: list[str],
              publication_id: int) -> None:
        """COPY share `k` of `shares` into ragmart.<table> (`columns`) and commit it, on a
        thread; `wait` returns the rows."""
        self._shares = shares
        self._thread = threading.Thread(
            target=self._copy, args=(shares.share(k), table, columns, publication_id),
            daemon=True, name="ragmart-publish-second-copy")
        self._thread.start()

    def _copy(self, batches, table: str, columns: list[str], publication_id: int) -> None:
        conn = None
        try:
            first = next(batches, None)
            if first is None:
                return
            self.open()  # the producer did when it cut the rows: a no-op then
            if not self._opened():
                self.leftover = [first, *batches]  # the publish's connection COPYs them
                return
            conn = self._conn
            with conn.cursor() as cur:
                cur.execute(f"insert into {STAGED} (publication_id, table_name) "
                            "values (%s, %s)", (publication_id, table))
                self.rows = copy_csv(cur, f'{SCHEMA}."{table}"', columns,
                                     _chain(first, batches))
            conn.commit()
            self._committed = publication_id
        except BaseException as exc:
            self._error = exc
            self._shares.abort()  # the publish's own COPY stops at its next batch
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.rollback()

    def wait(self) -> int:
        """The rows the second COPY committed; raises what it raised."""
        self._thread.join()
        if self._error is not None and not isinstance(self._error, Cancelled):
            raise self._error
        return self.rows

    def __exit__(self, exc_type, *exc) -> None:
        if self._shares is not None and exc_type is not None:
            self._shares.abort()
        if self._thread is not None:
            self._thread.join()
        if not self._opened():
            return
        try:  # best effort: what a failure here leaves, the next publish deletes
            if exc_type is not None and self._committed is not None:
                with contextlib.suppress(Exception), self._conn.transaction():
                    lock(self._conn)  # the publish's own transaction is gone by now
                    discard_staged(self._conn, self._committed)
        finally:
            self._conn.close()


def _chain(first, rest):
    yield first
    yield from rest

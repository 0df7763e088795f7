"""What `ragmart serve` searches: readers of the serving snapshot, one per worker thread, that
follow the serving pointer without a restart and without failing a request.

A `Generation` is one snapshot's readers: `workers` ragmart.Retrievers pinned to its file. The
first copies the serving vectors into memory; the others share that matrix (read-only) and keep
their own eligibility cache and DuckDB connection, since a Retriever serves one thread at a
time. Memory is one copy of the vectors per snapshot, not one per thread.

Without a file named (--db), only a published snapshot serves: reading the build database
would hold a read lock on it that keeps `dbt build` and `ragmart publish` (which records the
gate's baseline there) out, so the service answers 503 until the first publish.

With RAGMART_SERVING_URL set (and no --db), PostgreSQL serves: `workers` Retrievers on it, each
search reading the serving publication itself (`PostgresGeneration`).

Following publishes (`ServingPool.refresh`, run by a watcher thread every
RAGMART_SERVING_RECHECK_SECONDS): it stats serving.json; when it changed it opens the snapshot it
names as a new generation (vectors loaded, provider ready) *beside* the one serving, then swaps
the pointer to it under a lock. A search takes the generation that serves when it starts and
keeps it to its end; the old generation's connections close when its last search returns. So a
publish or a rollback never fails a request and never makes one wait for a load, and a snapshot
that cannot be opened leaves the old one answering (tried again at the next check).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ragmart.relations import DEFAULT_VERSION
from ragmart.retrieval.api import Retriever, _recheck_seconds
from ragmart.serving.build_db import mtime_ns
from ragmart.serving.lag import serving_state
from ragmart.serving.pointer import file_stamp, pointer_path, resolve_target
from ragmart.serving.postgres.settings import serving_url

if TYPE_CHECKING:
    from ragmart.serving.lag import ServingState

log = logging.getLogger("ragmart.serve")
SEARCH_THREADS = 1
T = TypeVar("T")


class NothingServes(RuntimeError):
    """No snapshot or database could be opened yet (503)."""


class Generation:
    """The readers of one serving file, and how many searches hold them."""

    def __init__(self, path: Path, version: str, workers: int, published: bool,
                 state: ServingState | None) -> None:
        first = Retriever(db_path=path, index_version=version)
        readers = [first]
        try:
            for _ in range(workers - 1):
                reader = Retriever(db_path=path, index_version=version, vectors_in_memory=False,
                                   provider=first.provider)
                if first.vectors is not None:  # one matrix, a cache and a connection each
                    reader.vectors = dataclasses.replace(
                        first.vectors, _eligible=OrderedDict(), _chunk_index=None)
                readers.append(reader)
            # searches run side by side, one per worker thread: DuckDB parallelism inside each
            # would only make them contend. The setting is per DuckDB instance, and each
            # reader's connection is an instance of its own (ragmart.duck.connect attaches the
            # file to an in-memory database): set on the first alone, the others kept a
            # worker thread each, woken per statement (~1.3 ms of CPU per hybrid search)
            for reader in readers:
                reader.conn.execute(f"set threads = {SEARCH_THREADS}")
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        self.path, self.version, self.published = path, version, published
        self.opened_state = state
        self.chunks = first.vectors.rows if first.vectors is not None else None
        # the matrix products the readers share (their batch sizes: /metrics)
        self.products = first.vectors.products if first.vectors is not None else None
        self._free: queue.SimpleQueue[Retriever] = queue.SimpleQueue()
        for reader in readers:
            self._free.put(reader)
        self._readers = readers
        self.in_use = 0
        self.retired = False

    def take(self) -> Retriever:
        return self._free.get()

    def give_back(self, reader: Retriever) -> None:
        self._free.put(reader)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class PostgresGeneration(Generation):
    """Readers of the PostgreSQL serving database (RAGMART_SERVING_URL, ragmart.retrieval.
    postgres): each search reads the serving publication itself, in its own transaction, so a
    publish or rollback there switches every next search with nothing to swap here."""

    def __init__(self, workers: int) -> None:
        readers: list[Retriever] = []
        try:
            for _ in range(workers):
                readers.append(Retriever())  # no file named: RAGMART_SERVING_URL serves
            at = readers[0]._postgres.serving()  # followed by ServingPool._follow_postgres
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        self.path, self.version, self.published = Path("postgresql"), at.version, False
        self.publication = at.publication
        self.opened_state, self.chunks, self.products = None, None, None
        self._free = queue.SimpleQueue()
        for reader in readers:
            self._free.put(reader)
        self._readers = readers
        self.in_use = 0
        self.retired = False


def serves_postgres(db_path: Path | None) -> bool:
    """Whether a service that names the file `db_path` (or none) reads PostgreSQL: only with
    no file named and RAGMART_SERVING_URL set."""
    return db_path is None and serving_url() is not None


class ServingPool:
    """The generation that serves, the watcher that follows the pointer, the worker threads'
    entry point (`run`)."""

    def __init__(self, *, db_path: Path | None, follow_db: Path, workers: int,
                 index_version: str | None = None, recheck_seconds: float | None = None,
                 on_switch: Callable[[Generation], None] | None = None) -> None:
        self.pinned = Path(db_path) if db_path is not None else None
        self.follow_db = Path(follow_db)
        self.workers = workers
        self.index_version = index_version
        self.recheck = _recheck_seconds(recheck_seconds)
        self.on_switch = on_switch
        self.current: Generation | None = None
        self.error: str | None = "starting"
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._state_cache: tuple[Any, ServingState | None] | None = None

    # ------------------------------------------------------------------ following the pointer
    def _pointer_stat(self) -> tuple[int, int, int] | None:
        return file_stamp(pointer_path(self.follow_db))

    def refresh(self) -> None:
        """Open what serves now, if it changed (or nothing serves yet), and swap it in."""
        with self._refreshing:
            if serves_postgres(self.pinned):
                self._open_postgres()
                return
            if self.current is not None and (self.pinned is not None
                                             or self._pointer_stat() == self._seen):
                return
            seen = self._pointer_stat()
            try:
                if self.pinned is not None:
                    path, version, published = (self.pinned, self.index_version or DEFAULT_VERSION,
                                               False)
                else:
                    target = resolve_target(self.follow_db, self.index_version)
                    if not target.published:
                        raise NothingServes(
                            f"nothing is published beside {self.follow_db}: run `ragmart "
                            "publish vN` (the service reads published snapshots only, never "
                            "the build database a build writes), or serve a file with --db")
                    path, version, published = target.database, target.version, True
                current = self.current
                if current is not None and (current.path, current.version) == (path, version):
                    self._seen = seen
                    return
                state = self._fresh_state() if published else None
                opened = Generation(path, version, self.workers, published, state)
            except Exception as exc:  # keep answering from what is open; retry at the next check
                if self.current is None:
                    self.error = _one_line(exc)
                log.warning("ragmart serve: cannot open what serves now (%s); %s", _one_line(exc),
                            "still serving the previous snapshot" if self.current else
                            "answering 503 until it can")
                return
            with self._lock:
                old, self.current = self.current, opened
                self._seen, self.error = seen, None
                close_old = old is not None and _retire(old)
            if close_old:
                old.close()
            log.info("ragmart serve: serving %s (%s)", opened.version, opened.path.name)
            if self.on_switch is not None:
                self.on_switch(opened)

    def _open_postgres(self) -> None:
        if self.current is not None:
            self._follow_postgres()
            return
        try:
            opened = PostgresGeneration(self.workers)
        except Exception as exc:  # answering 503 until the serving database can be read
            self.error = _one_line(exc)
            log.warning("ragmart serve: cannot read the PostgreSQL serving database (%s); "
                        "answering 503 until it can", self.error)
            return
        with self._lock:
            self.current, self.error = opened, None
        log.info("ragmart serve: serving from PostgreSQL (%s at start)", opened.version)
        if self.on_switch is not None:
            self.on_switch(opened)

    def _follow_postgres(self) -> None:
        """Read which publication PostgreSQL serves now (on a free reader, like a search) and,
        when its version changed, say so (/healthz, the metrics' serving version): every search
        already reads the publication serving when it starts."""
        current = self.current
        if not isinstance(current, PostgresGeneration):
            return
        try:
            at, _ = self.run(lambda reader: reader._postgres.serving())
        except Exception as exc:  # the searches say what is wrong; try again at the next check
            log.warning("ragmart serve: cannot read what PostgreSQL serves (%s)", _one_line(exc))
            return
        if (at.version, at.publication) == (current.version, current.publication):
            return
        current.version, current.publication = at.version, at.publication
        log.info("ragmart serve: PostgreSQL serves %s now (publication %s)", at.version,
                 at.publication)
        if self.on_switch is not None:
            self.on_switch(current)

    def start(self) -> None:
        self.refresh()
        if self.pinned is not None and self.current is not None:
            return
        self._watcher = threading.Thread(target=self._watch, name="ragmart-serve-watcher",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.recheck if self.recheck > 0 else 0.05):
            self.refresh()
            if self.pinned is not None and self.current is not None:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        with self._lock:
            current, self.current = self.current, None
            close = current is not None and _retire(current)
        if close:
            current.close()

    # ------------------------------------------------------------------ searching
    def run(self, work: Callable[[Retriever], T]) -> tuple[T, Generation]:
        """`work(reader)` on a reader of the generation serving now (in a worker thread)."""
        with self._lock:
            generation = self.current
            if generation is None:
                raise NothingServes(self.error or "nothing serves yet")
            generation.in_use += 1
        reader = generation.take()
        try:
            return work(reader), generation
        finally:
            generation.give_back(reader)
            with self._lock:
                generation.in_use -= 1
                close = generation.retired and generation.in_use == 0
            if close:
                generation.close()

    def state(self, generation: Generation) -> ServingState | None:
        """What `ragmart retrieve --json` says serves, for an answer of `generation`: the
        publication against the newest build, re-read only when serving.json or the build
        database changed; the state the generation opened with while the pointer has already
        moved on and the new snapshot is still loading."""
        if not generation.published:
            return None
        state = self._fresh_state()
        if state is None or state.snapshot != generation.path.name:
            return generation.opened_state
        return state

    def _fresh_state(self) -> ServingState | None:
        key = (self._pointer_stat(), mtime_ns(self.follow_db))
        cached = self._state_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        state = serving_state(self.follow_db)
        self._state_cache = (key, state)
        return state


def _retire(generation: Generation) -> bool:
    """Mark `generation` replaced; True when no search holds it (the caller closes it)."""
    generation.retired = True
    return generation.in_use == 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

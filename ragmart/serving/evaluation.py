"""The publish gate's evaluation, at the cost of the change: each document's best chunk is kept
between publishes and recomputed only for the documents that changed.

The gate evaluates every candidate snapshot exactly (ragmart.quality.evaluation): every judged
question against every served chunk, each document ranked by its best chunk, the least
(cosine distance, chunk_id). At 100,000 chunks and 77 questions that is 7.7 million distances,
most of a publish (bench/freshness.py). Between two publishes of a watch loop a few documents
change; the others' chunks, and so their best chunks, are the same.

`evaluate_snapshot` computes the same report as ragmart.serving.baseline.evaluate_snapshot:
- per question and document it keeps the best chunk's distance (as DuckDB computed it:
  `array_cosine_distance`, float32) and chunk_id, with a signature of the document's served
  rows (its row count and the xor of every row's re-hashed hash of chunk_id, chunk_hash and
  vector created_at: chunk ids are unique, so the rows are a set and need no ordered list);
- at the next publish it reads the signatures of the new snapshot (one grouped scan of those
  columns, no vectors) and recomputes, with the same SQL function, only the documents whose
  signature differs or that are new; documents no longer served are dropped;
- each question's ranking is then sorted by (distance, chunk_id), as the SQL orders it.
A document whose rows are unchanged has the same distances to the same questions, so the
rankings, and the report, are those of a full evaluation (tests/python/test_serving_freshness
compares them). What is kept lives in this process (the watch loop's) and in a file beside the
snapshots (ragmart.serving.gate_state), so that a cold `ragmart publish` reuses it too; any
other embedding model, judged set or vector of a question starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ragmart.duck import connect
from ragmart.relations import Relations
from ragmart.serving import gate_state

_LOCK = threading.Lock()
_KEPT: dict[tuple[str, str], _State] = {}  # (publish dir, version) -> what the last one kept
_WRITER: threading.Thread | None = None  # writing the last state computed to its file
_K = 5  # the gate's recall@k, as ragmart.serving.baseline evaluates


@dataclass
class _State:
    key: str  # the version, the model, the judged set and the questions' vectors
    documents: np.ndarray  # object: document ids, sorted
    signatures: np.ndarray  # int64 per document
    distances: np.ndarray  # float64 (questions, documents): each document's best chunk...
    chunks: np.ndarray  # object (questions, documents): ...and its chunk_id
    recomputed: int = 0  # documents computed by the last evaluation (all, the first time)
    source: str = "none"  # where the reused distances came from: process, file or none


def evaluate_snapshot(database: Path, version: str) -> dict:
    """The judged-query evaluation report of `version` in the snapshot `database`, equal to
    ragmart.serving.baseline.evaluate_snapshot's, recomputing only the documents changed since
    the last evaluation of `version` in this publish directory by this process."""
    from ragmart.embedding.providers import provider_for_model
    from ragmart.quality.evaluation import _version_model
    from ragmart.quality.judged import load_judged_queries
    from ragmart.quality.metrics import evaluate

    queries = load_judged_queries()
    conn = connect(Path(database), read_only=True)
    try:
        model = _version_model(conn, version)
        provider = provider_for_model(model, version=version, purpose="evaluate")
        questions = list(dict.fromkeys(q.question for q in queries))
        vectors = np.asarray(provider.embed(questions) if questions
                             else np.zeros((0, provider.dimensions)), dtype=np.float32)
        table = Relations(version).serving
        folder = Path(database).resolve().parent
        slot = (str(folder), version)
        key = _key(version, model, queries, vectors)
        with _LOCK:
            state, types = _refresh(conn, table, vectors, key, _KEPT.get(slot),
                                    gate_state.state_path(folder, version))
            _KEPT[slot] = state
    finally:
        conn.close()
    relevant: dict[str, set[str]] = {question: set() for question in questions}
    for query in queries:
        relevant[query.question].update(query.relevant_document_ids)
    rankings = dict(zip(questions, _rankings(state, [relevant[q] for q in questions]),
                        strict=True))
    return evaluate(queries, rankings.__getitem__, k=_K, document_types=types, version=version,
                    embedding_model=model).to_dict()


def last_recomputed(database: Path, version: str) -> int | None:
    """How many documents the last evaluation of `version` next to `database` computed."""
    state = _KEPT.get((str(Path(database).resolve().parent), version))
    return None if state is None else state.recomputed


def last_evaluation(db_path: Path, version: str) -> str | None:
    """One line on this process's last evaluation of a snapshot of `version` published from the
    build database `db_path`: how many documents it computed, where the others came from."""
    from ragmart.serving.pointer import publish_dir

    state = _KEPT.get((str(publish_dir(Path(db_path)).resolve()), version))
    if state is None:
        return None
    reused = len(state.documents) - state.recomputed
    origin = {"file": " (from the saved gate state)", "process": ""}.get(state.source, "")
    return (f"gate: evaluated {state.recomputed} of {len(state.documents)} documents, "
            f"reused {reused}{origin}")


def _key(version: str, model: str, queries: list, vectors: np.ndarray) -> str:
    """What the kept distances depend on besides the served rows: the version, the model, the
    judged set (ids, questions, relevant documents) and the questions' vectors."""
    digest = hashlib.sha256(f"{version}\x00{model}\x00".encode())
    for query in queries:
        digest.update("\x00".join([query.query_id, query.question,
                                    *sorted(query.relevant_document_ids)]).encode() + b"\x01")
    digest.update(np.ascontiguousarray(vectors).tobytes())
    return digest.hexdigest()


def _refresh(conn: duckdb.DuckDBPyConnection, table: str, vectors: np.ndarray, key: str,
             kept: _State | None, saved: Path) -> tuple[_State, dict[str, str]]:
    """The state of the snapshot `conn` (and each document's type): what `kept` (this
    process's) or the file `saved` hold for its unchanged documents, the rest computed;
    written back to `saved` (in the background) when it computed anything."""
    global _WRITER
    rows = document_signatures(conn, table)
    documents = np.asarray([r[0] for r in rows], dtype=object)
    signatures = np.asarray([r[1] for r in rows], dtype=np.uint64).view(np.int64)
    if _WRITER is not None:  # the previous evaluation's file is written before it is read
        _WRITER.join()
    source = "process"
    if kept is None or kept.key != key:
        source, kept = "none", None
        loaded = gate_state.load(saved, key, documents)
        if loaded is not None:
            source, kept = "file", _State(key, *loaded)
    state = _compute(conn, table, vectors, key, kept, documents, signatures)
    state.source = source
    if state.recomputed:
        # written while the publish goes on (not a daemon: a process ending waits for it);
        # a publish dir that refuses the file costs the next process a full evaluation
        _WRITER = threading.Thread(target=_save, args=(saved, state), name="gate-state")
        _WRITER.start()
    return state, {r[0]: r[2] for r in rows}


def document_signatures(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, int, str]]:
    """(document_id, signature of its served rows, document_type) per document, sorted: one
    scan of narrow columns, no vector read and no list built."""
    # hash(hash(...)): a row's hash(a, b, c) xors in hash(c), so that c, the same on all the
    # rows of a document (its vector time), would cancel out of an even number of rows
    return sorted(conn.execute(
        f"select document_id, hash(count(*), bit_xor(hash(hash(chunk_id, chunk_hash, "
        f"created_at)))), min(document_type) from {table} group by document_id").fetchall())


def _save(path: Path, state: _State) -> None:
    with contextlib.suppress(OSError):
        gate_state.save(path, state.key, state.documents, state.signatures, state.distances,
                        state.chunks)


def _compute(conn: duckdb.DuckDBPyConnection, table: str, vectors: np.ndarray, key: str,
             kept: _State | None, documents: np.ndarray, signatures: np.ndarray) -> _State:
    n_questions = len(vectors)
    distances = np.full((n_questions, len(documents)), np.nan)
    chunks = np.empty((n_questions, len(documents)), dtype=object)
    todo = np.ones(len(documents), dtype=bool)
    if kept is not None and kept.key == key and len(kept.documents):
        at = np.searchsorted(kept.documents, documents).clip(0, len(kept.documents) - 1)
        same = (kept.documents[at] == documents) & (kept.signatures[at] == signatures)
        distances[:, same] = kept.distances[:, at[same]]
        chunks[:, same] = kept.chunks[:, at[same]]
        todo = ~same
    if todo.any() and n_questions:
        position = {doc: i for i, doc in enumerate(documents)}
        for question, doc, distance, chunk in _best_chunks(
                conn, table, vectors, None if todo.all() else documents[todo]):
            distances[question, position[doc]] = distance
            chunks[question, position[doc]] = chunk
    return _State(key, documents, signatures, distances, chunks, int(todo.sum()))


def _best_chunks(conn: duckdb.DuckDBPyConnection, table: str, vectors: np.ndarray,
                 documents: np.ndarray | None) -> list[tuple[int, str, float, str]]:
    """(question index, document_id, distance, chunk_id) of each document's best chunk (the
    least (distance, chunk_id), as ragmart.quality.evaluation.exact_document_rankings), for
    the `documents` given (None: every document)."""
    flat = pa.array(vectors.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    questions = pa.table({  # noqa: F841 - read by the SQL below
        "question_index": pa.array(np.arange(len(vectors), dtype=np.int32)),
        "embedding": pa.ListArray.from_arrays(offsets, flat),
    })
    wanted = pa.table({"document_id": pa.array(  # noqa: F841 - read by the SQL below
        [] if documents is None else documents.tolist(), pa.string())})
    only = "" if documents is None else \
        "semi join wanted on served.document_id = wanted.document_id"
    return conn.execute(f"""
        with vectors as (
            select question_index, cast(embedding as float[{vectors.shape[1]}]) as embedding
            from questions
        ),
        served as (select served.* from {table} as served {only}),
        best_chunks as (
            select vectors.question_index, served.document_id,
                min({{'d': array_cosine_distance(served.embedding, vectors.embedding),
                      'c': served.chunk_id}}) as best
            from vectors cross join served
            group by vectors.question_index, served.document_id
        )
        select question_index, document_id, best.d, best.c from best_chunks
        """).fetchall()


def _rankings(state: _State, relevant: list[set[str]]) -> list[list[str]]:
    """Per question, the documents by their best chunk, (distance, chunk_id) ascending as the
    SQL orders it (a NaN distance last), down to the question's best relevant document and at
    least the metrics' depth: the metrics read the top ranks and the first relevant one only,
    so this prefix gives the report of the full ranking without sorting every document."""
    from ragmart.quality.metrics import NDCG_DEPTH

    out = []
    depth = max(NDCG_DEPTH, _K)
    for question in range(len(state.distances)):
        distance = state.distances[question]
        wanted = np.asarray(sorted(relevant[question]), dtype=object)
        at = np.searchsorted(state.documents, wanted).clip(0, max(len(state.documents) - 1, 0))
        served = at[state.documents[at] == wanted] if len(state.documents) else at[:0]
        candidates = _prefix(distance, served, depth)
        out.append(state.documents[_ordered(candidates, distance, state.chunks[question])]
                   .tolist())
    return out


def _prefix(distance: np.ndarray, relevant: np.ndarray, depth: int) -> np.ndarray:
    """Indices of every document ranked no later than the `depth`-th and the best `relevant`
    one, ties included: a prefix of the full ranking (every document, when a NaN is needed)."""
    if len(distance) <= depth:
        return np.arange(len(distance))
    threshold = np.partition(distance, depth - 1)[depth - 1]
    if len(relevant):
        threshold = max(threshold, np.min(distance[relevant]))
    if np.isnan(threshold):
        return np.arange(len(distance))
    return np.flatnonzero(distance <= threshold)


def _ordered(candidates: np.ndarray, distance: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """`candidates` sorted by (distance, chunk_id), NaN last: by distance, then each run of
    equal distances (rare) by chunk_id."""
    ranked = distance[candidates]
    order = candidates[np.argsort(ranked, kind="stable")]
    ranked = distance[order]
    tied = np.flatnonzero((ranked[1:] == ranked[:-1])
                          | (np.isnan(ranked[1:]) & np.isnan(ranked[:-1])))
    start = 0
    while start < len(tied):  # each run of equal distances, by chunk_id
        end = start
        while end + 1 < len(tied) and tied[end + 1] == tied[end] + 1:
            end += 1
        lo, hi = tied[start], tied[end] + 2
        order[lo:hi] = sorted(order[lo:hi], key=lambda i, c=chunks: c[i])
        start = end + 1
    return order

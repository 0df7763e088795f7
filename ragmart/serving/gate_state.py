"""The publish gate's incremental state on disk, so that a cold `ragmart publish` (a new
process) evaluates only the documents changed since the last publish, as the watch loop does.

ragmart.serving.evaluation keeps, per judged question and served document, the document's best
chunk (distance, chunk_id) and a signature of the document's served rows. This module writes
that state beside the snapshots (`<publish dir>/gate-state-<version>.parquet`, one row per
document) and reads it back. Why it can never be reused wrongly:
- the file carries a key (`evaluation._key`): the version, the embedding model, the judged set
  (every query id, question and relevant document), the questions' vectors and FORMAT. A file
  with another key is ignored, and the next evaluation computes every document and overwrites
  it: another model, judged set or question vector starts over;
- the serving set is checked document by document: a document's kept distances are used only
  when its signature (a hash of its served chunk ids, chunk hashes and vector times) equals the
  snapshot's; any other document, a new one or one whose rows changed, is computed again, and
  a document no longer served is dropped. Two snapshots with the same rows give the same
  distances, so the report is a full evaluation's (tests/python/test_gate_state.py);
- the gate's verdict is never kept: each publish compares the report with the baseline serving
  then, so a changed baseline (another publish, a rollback, a purge's refresh) needs no
  invalidation and cannot be compared against a stale one.
What it holds about a document: a 64-bit hash of its id, its signature, its distances to the
judged questions and the tails of its best chunks' ids (`@<document version>#<index>`, the
chunk id without the document id): no document id, text or vector, so a purge has nothing to
remove from it (the purged document's rows leave every snapshot, so its signature no longer
matches and it is dropped at the next evaluation). An unreadable file counts as none.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMAT = "2"  # bump when what is kept, or how, changes: older files are then ignored
_META_KEY = b"ragmart_gate_key"


def state_path(publish_dir: Path, version: str) -> Path:
    return Path(publish_dir) / f"gate-state-{version}.parquet"


def document_keys(documents: np.ndarray) -> np.ndarray:
    """int64 per document id: the first 8 bytes of its blake2b hash."""
    return np.asarray([int.from_bytes(hashlib.blake2b(str(d).encode(), digest_size=8).digest(),
                                      "little", signed=True) for d in documents], dtype=np.int64)


def save(path: Path, key: str, documents: np.ndarray, signatures: np.ndarray,
         distances: np.ndarray, chunks: np.ndarray) -> bool:
    """Write the state (documents sorted; distances and chunks (questions, documents)) with one
    atomic rename; False (nothing written) when a chunk id does not start with its document's
    id, which the file could not restore."""
    n_questions = distances.shape[0]
    owners = pa.array(np.repeat(documents, n_questions).tolist(), pa.string())
    flat = pa.array(chunks.T.reshape(-1).tolist(), pa.string())  # documents-major, as the file
    tails = pc.replace_substring_regex(flat, "^.*@", "@")  # `<document id>@3#0004` -> `@3#0004`
    restored = pc.equal(pc.binary_join_element_wise(owners, tails, ""), flat)  # null: no chunk
    if pc.all(restored).as_py() is False:
        return False
    table = pa.table({
        "document_key": pa.array(document_keys(documents), pa.int64()),
        "signature": pa.array(signatures, pa.int64()),
        "distances": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(distances.T).reshape(-1), pa.float64()), n_questions),
        "chunk_tails": pa.FixedSizeListArray.from_arrays(tails, n_questions),
    }).replace_schema_metadata({_META_KEY: f"{FORMAT}:{key}".encode()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def load(path: Path, key: str, documents: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(documents, signatures, distances, chunks) kept in `path` for those of `documents` (the
    snapshot's, sorted) it holds, documents sorted, chunk ids restored; None when the file is
    missing, unreadable or written under another key."""
    try:
        if pq.read_schema(path).metadata.get(_META_KEY) != f"{FORMAT}:{key}".encode():
            return None
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, AttributeError):
        return None
    keys = table.column("document_key").to_numpy()
    order = np.argsort(keys, kind="stable")
    wanted = document_keys(documents)
    at = np.searchsorted(keys[order], wanted).clip(0, max(len(keys) - 1, 0))
    found = (keys[order][at] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
    rows = pa.array(order[at[found]])
    kept = table.take(rows)
    n_questions = kept.schema.field("distances").type.list_size
    n = kept.num_rows
    distances = kept.column("distances").combine_chunks().flatten().to_numpy(
        zero_copy_only=False).reshape(n, n_questions).T
    owners = pa.array(np.repeat(documents[found], n_questions).tolist(), pa.string())
    chunks = pc.binary_join_element_wise(
        owners, kept.column("chunk_tails").combine_chunks().flatten(), "")
    chunks = chunks.to_numpy(zero_copy_only=False).reshape(n, n_questions).T
    signatures = kept.column("signature").to_numpy()
    return documents[found], signatures, np.ascontiguousarray(distances), chunks

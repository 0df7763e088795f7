"""The serving bench's build database: the retrieval bench's synthetic data, made whole, and edited.

bench/retrieval.py builds (and caches under bench/out/) the synthetic serving set: N clustered
384-d chunks in documents of 10, document types at the five selectivities, and the HNSW index
table dbt's vector index model would hold. A publish reads more of a build database than the
retrieval bench needs, so `build_database` copies that file and adds, from the same rows, what
a `dbt build` would have written beside them: the chunk history (every chunk version with its
validity window, what `--as-of` reads), the documents' latest access, and the empty vector
delta (nothing served and not indexed yet).

`edit` then does to that build database what an incremental `dbt build` does after one
paragraph changed in `fraction` of the documents... simplified to the shape that matters for
publishing: each edited document gets a new version whose chunks all get new ids and vectors
(its old chunks leave the serving set and close in the history), the document and access rows
move to the new version, and the new vectors wait in the delta, the HNSW index table untouched
(an ordinary build never writes it: models/marts/fct_chunk_vector_index.sql). So 1% of the
documents edited replaces 1% of the chunks: 2% of the serving rows change (the removed and the
added), which is what a publish must carry to a server.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from retrieval import SEED, unit

from ragmart.duck import connect
from ragmart.relations import ACCESS_TABLE, DOCUMENTS_TABLE, Relations

VERSION = "v1"
EDIT_AT = dt.datetime(2026, 6, 1)


def build_database(cached: Path, target: Path) -> Path:
    """A build database at `target` holding the cached retrieval-bench set plus the history,
    access and delta tables a build writes beside it (see the module doc)."""
    r = Relations(VERSION)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copyfile(cached, target)
    conn = connect(target)
    try:
        columns = [c for (c,) in conn.execute(
            "select column_name from information_schema.columns where table_name = $t "
            "order by ordinal_position", {"t": r.serving}).fetchall()]
        before, after = columns[:columns.index("document_updated_at")], \
            columns[columns.index("document_updated_at"):]
        conn.execute(f"""
            create table {r.history} as
            select {', '.join(before)}, '{{}}' as metadata,
                document_updated_at, document_valid_from,
                cast(null as timestamp) as document_valid_to,
                cast(null as bigint) as superseded_by_version,
                {', '.join(after[2:])}
            from {r.serving}
        """)
        conn.execute(f"""
            create table {ACCESS_TABLE} as
            select document_id, document_version as latest_document_version, allowed_groups,
                false as is_deleted, valid_from as latest_event_at
            from {DOCUMENTS_TABLE}
        """)
        conn.execute(f"create table {r.delta} as select chunk_id, embedding "
                     f"from {r.serving} limit 0")
        conn.execute("checkpoint")
    finally:
        conn.close()
    return target


def edit(path: Path, fraction: float = 0.01, *, round_: int = 1) -> dict:
    """Give `fraction` of the documents a new version (new chunk ids and vectors), as an
    incremental build writes it (see the module doc); returns what changed."""
    r = Relations(VERSION)
    rng = np.random.default_rng(SEED + 100 + round_)
    conn = connect(path)
    try:
        n_docs = conn.execute(f"select count(*) from {DOCUMENTS_TABLE}").fetchone()[0]
        step = max(1, round(1 / fraction))
        picked = conn.execute(
            f"select document_id, document_version from {DOCUMENTS_TABLE} "
            f"order by document_id").fetchall()[round_ % step::step]
        ids = [d for d, _ in picked]
        old = conn.execute(
            f"select chunk_id, document_id, embedding from {r.serving} "
            "where list_contains($ids, document_id) order by chunk_id", {"ids": ids}).fetchall()
        vectors = np.array([row[2] for row in old], np.float32)
        moved = unit(vectors + 0.3 * unit(rng.normal(size=vectors.shape)))
        new_version = {d: v + n_docs * round_ for d, v in picked}
        # registered as Arrow (executemany converted each 384-float list in Python: ~20 min
        # for the 10,000 rows of a 1M-chunk corpus on a loaded machine)
        edit_new = pa.table({
            "old_chunk_id": [chunk_id for chunk_id, _, _ in old],
            "chunk_id": [chunk_id.replace("@", f"@e{round_}-", 1) for chunk_id, _, _ in old],
            "document_version": pa.array([new_version[doc] for _, doc, _ in old], pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(moved.astype(np.float32).reshape(-1)), vectors.shape[1])})
        conn.register("edit_new_arrow", edit_new)
        conn.execute("create temp table edit_new as select old_chunk_id, chunk_id, "
                     f"document_version, embedding::float[{vectors.shape[1]}] as embedding "
                     "from edit_new_arrow")
        conn.unregister("edit_new_arrow")
        at = EDIT_AT + dt.timedelta(days=round_)
        conn.execute("begin")
        conn.execute(f"""
            update {r.history} set document_valid_to = $at,
                superseded_by_version = e.document_version
            from edit_new as e where {r.history}.chunk_id = e.old_chunk_id
        """, {"at": at})
        conn.execute(f"""
            create temp table edit_rows as
            select s.* replace (e.chunk_id as chunk_id, e.document_version as document_version,
                e.embedding as embedding, sha256(e.chunk_id) as chunk_hash,
                $at as document_valid_from, $at as document_updated_at,
                $at as created_at, $at as chunk_created_at)
            from {r.serving} as s inner join edit_new as e on s.chunk_id = e.old_chunk_id
        """, {"at": at})
        conn.execute(f"delete from {r.serving} where chunk_id in "
                     "(select old_chunk_id from edit_new)")
        conn.execute(f"insert into {r.serving} by name select * from edit_rows")
        conn.execute(f"""
            insert into {r.history} by name
            select *, '{{}}' as metadata, cast(null as timestamp) as document_valid_to,
                cast(null as bigint) as superseded_by_version
            from edit_rows
        """)
        conn.execute(f"insert into {r.delta} select chunk_id, embedding from edit_rows")
        conn.execute(f"""
            update {DOCUMENTS_TABLE} set document_version = e.document_version,
                valid_from = $at, updated_at = $at
            from (select distinct document_id, document_version from edit_rows) as e
            where {DOCUMENTS_TABLE}.document_id = e.document_id
        """, {"at": at})
        conn.execute(f"""
            update {ACCESS_TABLE} set latest_document_version = e.document_version,
                latest_event_at = $at
            from (select distinct document_id, document_version from edit_rows) as e
            where {ACCESS_TABLE}.document_id = e.document_id
        """, {"at": at})
        conn.execute("commit")
        conn.execute("checkpoint")
    finally:
        conn.close()
    return {"documents": len(ids), "chunks_replaced": len(old),
            "serving_rows_changed": 2 * len(old)}


def compact_vector_index(path: Path) -> float:
    """Seconds to bring the HNSW index up to date after an edit, as a compacting build does
    (macros/compact_vector_index.sql + create_vector_index): drop the index, delete the rows no
    longer served, insert the served vectors it lacks, create the index again (vss cannot keep
    an index through a delete: the whole index is rebuilt, whatever the change)."""
    from ragmart.serving.vector_index import create_index_sql

    r = Relations(VERSION)
    conn = connect(path)
    try:
        started = time.monotonic()
        (name,) = conn.execute("select index_name from duckdb_indexes() where table_name = $t "
                               "and sql ilike '%hnsw%'", {"t": r.index}).fetchone()
        conn.execute(f'drop index "{name}"')
        conn.execute(f"delete from {r.index} where chunk_id not in "
                     f"(select chunk_id from {r.serving})")
        conn.execute(f"insert into {r.index} by name select chunk_id, embedding, "
                     "current_localtimestamp() as indexed_at, 'bench' as dbt_invocation_id, "
                     f"document_type from {r.serving} where chunk_id not in "
                     f"(select chunk_id from {r.index})")
        conn.execute(create_index_sql(name, f'"{r.index}"'))
        conn.execute(f"delete from {r.delta}")
        conn.execute("checkpoint")
        return time.monotonic() - started
    finally:
        conn.close()

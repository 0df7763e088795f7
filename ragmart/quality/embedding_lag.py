"""The embedding-lag SLA rule, written once, for dbt and for Python.

A live document version with chunks to embed is judged by its embedding lag: from its change's
commit (committed_at) to its last vector being ready, once it is fully served (lag_seconds of
int_document_versions_served_<v>); while it is not, the time since the commit until the moment
of the check, so a version that never gets served grows late instead of escaping the SLA. A
version with nothing to embed, or no longer live, is not judged. It is over the SLA when that
lag exceeds the SLA.

Two readers apply the rule: the dbt test assert_embedding_lag_within_sla during a build, and
`ragmart freshness` (ragmart.quality.freshness) at any time. Both call the DuckDB function
`ragmart_embedding_sla_lag_seconds(is_live, expected_chunks, lag_seconds, committed_at, at)`,
which is `sla_lag_seconds`: the dbt-duckdb plugin registers it on dbt's connection, freshness on
its own (`register`).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
from duckdb.sqltypes import BIGINT, BOOLEAN, TIMESTAMP

FUNCTION = "ragmart_embedding_sla_lag_seconds"
_EPOCH = dt.datetime(1970, 1, 1)
_SECOND = dt.timedelta(seconds=1)


def sla_lag_seconds(is_live: bool | None, expected_chunks: int | None, lag_seconds: int | None,
                    committed_at: dt.datetime | None, at: dt.datetime | None) -> int | None:
    """The lag the SLA judges a document version by at the moment `at` (naive UTC), in whole
    seconds as DuckDB's date_diff('second', ...) counts them; None when the SLA does not judge
    it (not live, or nothing to embed)."""
    if not is_live or not expected_chunks:
        return None
    if lag_seconds is not None:
        return lag_seconds
    if committed_at is None or at is None:
        return None
    return (at - _EPOCH) // _SECOND - (committed_at - _EPOCH) // _SECOND


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Make the function callable on `conn` and its cursors (once: a second call is a no-op)."""
    registered = conn.execute(
        "select count(*) from duckdb_functions() where function_name = $f", {"f": FUNCTION},
    ).fetchone()[0]
    if not registered:
        # vectorized (arrow): a native Python UDF costs ~0.27 ms a row, 2.7 s for the 10,000
        # versions of a 100k-chunk corpus, paid twice by every build's SLA test; this is the
        # same function applied to each row of a batch
        conn.create_function(FUNCTION, _per_row,
                             [BOOLEAN, BIGINT, BIGINT, TIMESTAMP, TIMESTAMP], BIGINT,
                             type="arrow", null_handling="special")


def _per_row(is_live: pa.Array, expected_chunks: pa.Array, lag_seconds: pa.Array,
             committed_at: pa.Array, at: pa.Array) -> pa.Array:
    columns = (is_live, expected_chunks, lag_seconds, committed_at, at)
    return pa.array([sla_lag_seconds(*row) for row in zip(*(c.to_pylist() for c in columns),
                                                          strict=True)], pa.int64())

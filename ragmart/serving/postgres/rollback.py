"""Roll the PostgreSQL pointer back: serve the content publication before the serving one.

No data is written: every kept publication's rows are still in the data tables (a row belongs
to publication P when `published_in <= P and (removed_in is null or removed_in > P)`), so a
rollback is one UPDATE of ``ragmart.serving`` plus a ``rollback`` row in the publications
history (``restores`` = the content publication served again), in one transaction. A
publication pruning made incomplete (`pruned_at`) is never a target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ragmart.serving.postgres.publish import lock, switch
from ragmart.serving.postgres.schema import PUBLICATIONS, SERVING
from ragmart.serving.postgres.settings import PostgresServingError, connect, masked


@dataclass
class PostgresRollback:
    publication_id: int  # the rollback row in ragmart.publications
    restores: int  # the content publication that serves again
    replaced: int  # the one that served before
    version: str
    snapshot: str | None
    report: dict

    def to_dict(self) -> dict:
        return asdict(self)


def rollback_version(url: str) -> PostgresRollback:
    """Switch ragmart.serving to the content publication before the serving one."""
    with connect(url) as conn:
        lock(conn)
        exists = conn.execute("select to_regclass(%s) is not null", (SERVING,)).fetchone()[0]
        row = conn.execute(f"select publication_id, version from {SERVING}").fetchone() \
            if exists else None
        if row is None:
            raise PostgresServingError(f"nothing is published on {masked(url)}; there is "
                                       "nothing to roll back")
        serving_id, serving_version = row
        previous = conn.execute(
            f"select publication_id, version, snapshot, report from {PUBLICATIONS} "
            "where action = 'publish' and publication_id < %s and pruned_at is null "
            "order by publication_id desc limit 1", (serving_id,)).fetchone()
        if previous is None:
            raise PostgresServingError(
                f"no publication before #{serving_id} ({serving_version}) on {masked(url)} to "
                "roll back to (publications older than the last 3 are pruned)")
        target, version, snapshot, report = previous
        (rollback_id,) = conn.execute(
            f"insert into {PUBLICATIONS} (version, action, embedding_model, chunker_version, "
            "dimensions, chunks, report, snapshot, restores) select version, 'rollback', "
            "embedding_model, chunker_version, dimensions, chunks, report, snapshot, "
            f"publication_id from {PUBLICATIONS} where publication_id = %s "
            "returning publication_id", (target,)).fetchone()
        switch(conn, target, version)
    return PostgresRollback(rollback_id, target, serving_id, version, snapshot, report or {})
